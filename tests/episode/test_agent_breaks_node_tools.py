"""An agent that breaks the node's own programs breaks its daemons, never its episode.

The controller starts every daemon inside the node with the node's bash (and setpriv for a daemon
that is not root). Removing or replacing them used to raise out of `step()` and discard the episode;
now the daemon fails to start as systemd reports it (203/EXEC), the step returns, and the episode
(and another one beside it) goes on.
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
    # just this), and the unit fails right after.
    result = episode.step("mv /usr/bin/bash /root/bash; systemctl restart slurmctld; echo rc=$?")
    assert result.output == "rc=0\n"
    status = episode.step("/root/bash -c 'systemctl status slurmctld'").output
    assert "status=203/EXEC" in status
    assert "Active: failed (Result: exit-code)" in status
    assert episode.step("/root/bash -c 'munged; echo $?'").output.endswith("1\n")
    # Put back, the same unit starts again: nothing was lost.
    episode.step("/root/bash -c 'mv /root/bash /usr/bin/bash'")
    result = episode.step("systemctl restart slurmctld; systemctl is-active slurmctld")
    assert (result.exit_code, result.output) == (0, "active\n")
    assert bystander.step("sinfo -h -o %P").exit_code == 0


def test_replaced_bash_runs_as_the_node_and_stops_nothing_else(episode, bystander):
    # A bash that prints no pid (the agent's own program in its place) is the daemon's failure.
    episode.step("mv /usr/bin/bash /root/bash; printf '#!/root/bash\\nexit 0\\n' > /usr/bin/bash")
    episode.step("/root/bash -c 'chmod 755 /usr/bin/bash'")
    result = episode.step("/root/bash -c 'systemctl restart munge; systemctl is-active munge'")
    assert result.output.startswith("Job for munge.service failed because the control process exited")
    assert result.output.endswith("\nfailed\n")
    assert episode.step("/root/bash -c 'echo alive'").output == "alive\n"
    assert bystander.step("systemctl is-active munge").output == "active\n"


def test_slow_starts_cost_one_request_a_bounded_time(episode, bystander):
    # Every daemon start now hangs in the agent's bash; four of them in one request used to hold the
    # episode's lock for 80 s, far past the step's limit.
    episode.step("mv /usr/bin/bash /root/bash; printf '#!/root/bash\\nsleep 100\\n' > /usr/bin/bash")
    episode.step("/root/bash -c 'chmod 755 /usr/bin/bash'")
    start = time.monotonic()
    result = episode.step("/root/bash -c 'systemctl restart munge slurmctld httpd chronyd'")
    assert time.monotonic() - start < REQUEST_WORK_S + 2
    assert result.exit_code != 0 and not result.timed_out
    assert episode.step("/root/bash -c 'pgrep -c sleep'").output == "0\n"
    assert bystander.step("echo alive").output == "alive\n"
