"""Issue 16: bwrap failing to fork (EAGAIN from the pids limit) is an infrastructure failure.

`ssh NODE CMD` (and an srun task) runs in a bwrap that joins the node's namespaces. When that bwrap
cannot create its process (the episode's pids cgroup full, the host out of memory), its own error
(`bwrap: Creating new namespace failed: Resource temporarily unavailable`) used to come back as the
remote command's stderr with exit 1: an observation the agent could learn from, on an episode that
went on half broken. bwrap writes its child's pid to --info-fd once the child exists, so no pid there
is bwrap's own failure, which no command in a node can forge; the episode then fails with one line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcgym.episode import Episode
from hpcgym.errors import HpcgymError
from tests.runtime.test_init_faults import assert_nothing_left, node_pids


def pids_dir(episode: Episode) -> Path:
    cgroup = episode.cluster.cgroup
    found = [d for d in (cgroup.dirs if cgroup else ()) if (d / "pids.max").is_file()]
    if not found:
        pytest.skip("no pids cgroup for the episode on this host")
    return found[0]


def test_bwrap_that_cannot_fork_fails_the_episode_not_the_command(runtime) -> None:  # type: ignore[no-untyped-def]
    with Episode(runtime) as victim, Episode(runtime) as bystander:
        assert victim.step("ssh compute-02 true").exit_code == 0
        pids = node_pids(victim)
        limit = pids_dir(victim)
        # Room for the ssh client the login shell forks, and none for the bwrap it asks for.
        (limit / "pids.max").write_text(str(int((limit / "pids.current").read_text()) + 1))
        with pytest.raises(HpcgymError, match="bwrap could not start") as failed:
            victim.step("ssh compute-02 true")
        assert "\n" not in str(failed.value).split("\n  hint:")[0]
        assert bystander.step("ssh compute-02 echo alive").output == "alive\n"
        assert_nothing_left(victim, pids)


def test_a_command_that_prints_like_bwrap_is_only_output(runtime) -> None:  # type: ignore[no-untyped-def]
    with Episode(runtime) as episode:
        result = episode.step("ssh compute-02 'echo \"bwrap: Creating new namespace failed\" >&2; exit 1'")
        assert (result.exit_code, result.output) == (1, "bwrap: Creating new namespace failed\n")
        assert episode.step("ssh compute-02 'exit 3'").exit_code == 3
