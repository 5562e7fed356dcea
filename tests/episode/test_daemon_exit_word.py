"""A daemon's end is what its init saw, even when the host notices the death first.

The host finds a killed daemon gone (a zombie) a moment before the node's init has reaped it and
said how it ended. On a crowded host that moment was long enough that `kill -TERM` of munged read
`status=9/KILL` about one time in ten (4 of 40 here), failing the unit where systemd only
deactivates it. Here init is held stopped from the host while the daemon dies, so the host always
sees the death first; it must wait for init's word, and init goes on shortly after.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from hpcgym.episode import Episode
from hpcgym.runtime import Runtime


def test_sigterm_reads_as_sigterm_while_init_is_slow_to_reap(episode: Episode) -> None:
    pid = episode.step("systemctl show -p MainPID --value munge").output.strip()
    assert int(pid) > 1
    shell = episode.cluster.nodes["login01"].shell
    assert shell is not None
    init = shell.pid1
    os.kill(init, signal.SIGSTOP)
    resume = threading.Timer(0.5, os.kill, (init, signal.SIGCONT))
    resume.start()
    try:
        # The kill is the agent's, from inside: init, stopped, cannot reap munged until resumed,
        # and the controller hears of the death (systemctl's sync) before that.
        result = episode.step(f"kill -TERM {pid}; sleep 0.05; systemctl is-active munge")
    finally:
        resume.cancel()
        os.kill(init, signal.SIGCONT)
    status = episode.step("systemctl status munge").output
    assert result.output == "inactive\n"
    assert "status=9/KILL" not in status
    assert "Active: inactive (dead)" in status


def test_units_of_a_restarted_node_end_without_waiting_on_the_new_init(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """`exit` on login01 starts its shell again: the old daemons died with the old init.

    The new init never started them, so its word is not waited for (it cost a second per unit and
    logged that init had said nothing, which was not the case). The new node's own daemons may get
    the same pid numbers, once it has booted them.
    """
    with Episode(runtime) as episode:
        old = episode.cluster.nodes["login01"].shell
        assert old is not None and old.init is not None
        pids = [
            int(episode.step(f"systemctl show -p MainPID --value {u}").output) for u in ("munge", "slurmctld")
        ]
        assert all(old.init.started(pid) for pid in pids)
        with caplog.at_level("WARNING", logger="hpcgym.episode.nodes"):
            episode.step("exit")
        new = episode.cluster.nodes["login01"].shell
        assert new is not None and new.init is not None and new.init is not old.init
        assert "no exit status from init" not in caplog.text
