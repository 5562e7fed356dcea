"""Issue 16's node faults: a node's init killed from the host, bwrap unable to fork, the starter.

A node whose init dies without its shell ending first was killed from outside (nothing in a node
can end its PID 1), so the episode is an infrastructure failure (NodeCrashedError, one line), the
episode beside it goes on, and closing it leaves no process, mount, cgroup or scratch dir behind.
A bwrap that cannot fork (the cluster's pids cgroup full) is a one-line controller failure.
The daemon starter of old (a host-side bwrap running a bash script per daemon start, which a busy
host was seen to SIGKILL) no longer exists: a daemon is a fork of the node's own init.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from hpcgym.episode import Episode
from hpcgym.errors import HpcgymError, NodeCrashedError, SandboxError
from tests.runtime.test_cleanup import alive, mounts_under


def node_pids(episode: Episode) -> list[int]:
    return [
        pid
        for node in episode.cluster.nodes.values()
        if node.shell is not None
        for pid in (node.shell.pid1, node.shell.shell_pid)
    ]


def assert_nothing_left(episode: Episode, pids: list[int]) -> None:
    cluster = episode.cluster
    cgroups = list(cluster.cgroup.dirs) if cluster.cgroup else []
    episode.close()
    time.sleep(0.2)
    holders = [cluster.mounts.pid] if cluster.mounts is not None else []
    assert not [p for p in pids + holders if alive(p)]
    assert not cluster.host_dir.exists()
    assert not mounts_under(cluster.host_dir)
    assert not [c for c in cgroups if c.exists()]


@pytest.mark.parametrize("node", ["login01", "compute-01"])
def test_init_killed_from_the_host_is_an_infrastructure_failure(runtime, node) -> None:  # type: ignore[no-untyped-def]
    with Episode(runtime) as victim, Episode(runtime) as bystander:
        assert victim.step("ssh compute-01 true").exit_code == 0
        pids = node_pids(victim)
        shell = victim.cluster.nodes[node].shell
        assert shell is not None
        os.kill(shell.pid1, signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(NodeCrashedError, match=f"the init of {node} died.*crashed") as crashed:
            victim.step("sinfo")
        assert "\n" not in crashed.value.message
        assert isinstance(crashed.value, SandboxError)
        assert bystander.step("sinfo -h -o %P").exit_code == 0
        assert_nothing_left(victim, pids)
        assert bystander.step("echo alive").output == "alive\n"


def test_agent_ending_its_own_shell_is_no_crash(runtime) -> None:  # type: ignore[no-untyped-def]
    # init saw its main child end (the agent's own `kill -9 $$`): the login shell is gone, as `exit`.
    with Episode(runtime) as episode:
        result = episode.step("kill -9 $$")
        assert result.ended


def test_bwrap_that_cannot_fork_is_an_infrastructure_failure(runtime) -> None:  # type: ignore[no-untyped-def]
    # The cluster's pids cgroup squeezed to what already runs: the next node's bwrap cannot fork
    # (its clone fails with EAGAIN), which the step reports, in one line, as the controller's failure.
    with runtime.new_cluster(compute_nodes=["compute-01"]) as victim, Episode(runtime) as bystander:
        if victim.cgroup is None:
            pytest.skip("no cgroups on this host")
        pids_max = next(d / "pids.max" for d in victim.cgroup.dirs if (d / "pids.max").exists())
        current = int((pids_max.parent / "pids.current").read_text())
        pids_max.write_text(str(current + 1))  # room for ssh's own client, none for bwrap's pid 1
        pids = node_pids_of(victim)
        with pytest.raises(HpcgymError) as failed:
            victim.execute("ssh compute-01 true")
        assert "\n" not in failed.value.message, failed.value
        assert "Resource temporarily unavailable" in failed.value.message
        assert bystander.step("echo alive").output == "alive\n"
        cgroups, scratch = list(victim.cgroup.dirs), victim.dir
    time.sleep(0.2)
    assert not [p for p in pids if alive(p)]
    assert not scratch.exists() and not mounts_under(scratch)
    assert not [c for c in cgroups if c.exists()]


def node_pids_of(cluster) -> list[int]:  # type: ignore[no-untyped-def]
    return [
        p for n in cluster.nodes.values() if n.shell is not None for p in (n.shell.pid1, n.shell.shell_pid)
    ]
