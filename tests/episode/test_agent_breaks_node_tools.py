"""An agent that breaks the node's own programs breaks its daemons, never its episode.

The node's init (`stubs/hpcgym-init.c`) starts every daemon itself, as systemd does: no bash, no
setpriv, no mktemp is involved, so removing or replacing them changes nothing for the daemons, as on
a real node. A daemon's own program that cannot run fails its unit as systemd reports it (203/EXEC),
the step returns, and the episode (and another one beside it) goes on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from hpcgym.episode import Episode
from hpcgym.episode.nodes import REQUEST_WORK_S


@pytest.fixture
def bystander(runtime) -> Iterator[Episode]:
    with Episode(runtime) as ep:
        yield ep


def test_removed_temp_tools_do_not_stop_daemons(episode, bystander):
    # mktemp, mkfifo and rm are no part of starting a daemon on a real node.
    episode.step("mkdir /root/away; mv /usr/bin/mktemp /usr/bin/mkfifo /usr/bin/rm /root/away/")
    result = episode.step("systemctl restart munge slurmctld; systemctl is-active munge slurmctld")
    assert (result.exit_code, result.output) == (0, "active\nactive\n")
    assert episode.step("ps -o user= -C munged").output == "munge\n"
    assert bystander.step("echo alive").output == "alive\n"


def test_daemon_whose_start_cannot_run_fails_like_systemd_says(episode, bystander):
    # slurmctld's unit is Type=simple: systemctl says the start worked (systemd.service(5) warns of
    # just this), and the unit fails right after. Its stand-in process is what cannot be executed.
    stand_in = "/usr/libexec/hpcgym/daemons/slurmctld"
    result = episode.step(f"mv {stand_in} /root/away; systemctl restart slurmctld; echo rc=$?")
    assert result.output == "rc=0\n"
    status = episode.step("systemctl status slurmctld").output
    assert "status=203/EXEC" in status
    assert "Active: failed (Result: exit-code)" in status
    assert "Failed to execute /usr/sbin/slurmctld: No such file or directory" in status
    # Put back, the same unit starts again: nothing was lost.
    episode.step(f"mv /root/away {stand_in}")
    result = episode.step("systemctl restart slurmctld; systemctl is-active slurmctld")
    assert (result.exit_code, result.output) == (0, "active\n")
    assert bystander.step("sinfo -h -o %P").exit_code == 0


def test_removed_or_replaced_bash_stops_no_daemon(episode, bystander):
    # systemd never runs a shell to start a service; neither does the node's init.
    episode.step("mv /usr/bin/bash /root/bash; printf '#!/root/bash\\nexit 0\\n' > /usr/bin/bash")
    episode.step("/root/bash -c 'chmod 755 /usr/bin/bash'")
    result = episode.step("/root/bash -c 'systemctl restart munge; systemctl is-active munge'")
    assert result.output == "active\n"
    episode.step("/root/bash -c 'rm /usr/bin/bash'")
    result = episode.step("/root/bash -c 'systemctl restart slurmctld; systemctl is-active slurmctld'")
    assert result.output == "active\n"
    assert bystander.step("systemctl is-active munge").output == "active\n"


def test_slow_daemon_programs_cost_one_request_a_bounded_time(episode, bystander):
    # Every stand-in now runs the agent's own slow program: each start is one fork and exec in the
    # node, so four of them hold the episode's lock for no time at all.
    episode.step(
        "cd /usr/libexec/hpcgym/daemons; for d in munged slurmctld httpd chronyd; do rm $d; "
        "printf '#!/bin/sh\\nsleep 100\\n' > $d; chmod 755 $d; done; cd"
    )
    start = time.monotonic()
    result = episode.step("systemctl restart munge slurmctld httpd chronyd")
    assert time.monotonic() - start < REQUEST_WORK_S
    assert result.exit_code == 0 and not result.timed_out, result.output
    # Each start returned once its program was exec'd: the four scripts run (their sleeps may not yet).
    assert episode.step("pgrep -fc /usr/libexec/hpcgym/daemons/").output == "4\n"
    assert bystander.step("echo alive").output == "alive\n"
