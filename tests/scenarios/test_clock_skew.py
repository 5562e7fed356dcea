"""hpc_clock_skew through the real shell: what the agent sees, and shortcuts that do not fix the clock."""

from __future__ import annotations

from tests.scenarios.conftest import type_all
from tests.scenarios.test_anti_gaming import assert_unsolved, node_of

SEED = 1


def test_the_skew_is_visible_from_the_shell(play):
    incident = play("hpc_clock_skew", SEED)
    node = node_of(incident)
    skew = int(incident.task.params["skew"])
    login = int(incident.step("date +%s").result.output.strip())
    there = int(incident.step(f"ssh {node} date +%s").result.output.strip())
    # One agent step passes between the two readings.
    assert there - login - skew in range(0, 30)
    assert incident.step(f"ssh {node} chronyc tracking").result.output == "506 Cannot talk to daemon\n"
    ctl = incident.step("journalctl -u slurmctld --no-pager").result.output
    status = "Rewound credential" if skew > 0 else "Expired credential"
    assert f"slurmctld: error: Munge decode failed: {status}" in ctl


def test_restarts_resume_date_set_and_forged_files_do_not_solve(play):
    incident = play("hpc_clock_skew", SEED)
    node = node_of(incident)
    type_all(
        incident,
        [
            f"ssh {node} systemctl restart munge slurmd",
            f"scontrol update nodename={node} state=resume",
            f'ssh {node} date -s "$(date)"',
            f"ssh {node} timedatectl set-time \"$(date '+%F %T')\"",
            f"ssh {node} 'echo makestep 1 -1 >> /etc/chrony.conf; touch /var/lib/chrony/drift'",
            "sinfo",
        ],
    )
    assert_unsolved(incident)
    assert incident.episode.services.clocks.offset(node) == int(incident.task.params["skew"])


def test_starting_chronyd_without_enabling_it_is_not_enough(play):
    incident = play("hpc_clock_skew", SEED)
    node = node_of(incident)
    type_all(incident, [f"ssh {node} systemctl start chronyd", f"sinfo -n {node}"])
    assert incident.episode.services.clocks.offset(node) == 0
    assert_unsolved(incident)
    type_all(incident, [f"ssh {node} systemctl enable chronyd", f"sinfo -n {node}"])
    assert_unsolved(incident)  # NHC drained the node: it waits for an admin to resume it
    type_all(incident, [f"scontrol update nodename={node} state=resume"])
    assert incident.info()["solved"]
