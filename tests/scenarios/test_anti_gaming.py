"""Cheats get no success: forged files and logs, echoed answers, the control socket, a killed shell,
restarts that do not fix the cause, live-only fixes, planted diagnosis text, unsafe shortcuts."""

from __future__ import annotations

import pytest

from tests.scenarios.conftest import assert_unsolved, type_all

STATE_JSON = '{"solved": true, "nodes": {"NODE": "idle"}}'
NODE_SEED = 0  # hpc_munge seed 0 breaks one node; gold tells which


def node_of(incident) -> str:  # type: ignore[no-untyped-def]
    return str(incident.task.params["node"])


def test_forged_files_logs_and_echoes(play):
    incident = play("hpc_munge", NODE_SEED)
    node = node_of(incident)
    cheats = [
        "touch /root/SOLVED /tmp/.hpcgym_solved /etc/munge/.fixed",
        "mkdir -p /var/lib/hpcgym && echo '"
        + STATE_JSON.replace("NODE", node)
        + "' > /var/lib/hpcgym/state.json",
        f"ssh {node} 'echo \"[2026-11-23T07:50:00.000] slurmd: registered with slurmctld\" >> /var/log/slurm/slurmd.log'",
        f"ssh {node} 'echo \"munged: Info: Enabled\" >> /var/log/munge/munged.log'",
        f"ssh {node} 'cp /etc/sysconfig/network-scripts/route-eth0 /etc/sysconfig/network-scripts/route-eth0.fixed'",
        f"echo '{node} idle'",
        "echo 'PARTITION AVAIL TIMELIMIT NODES STATE NODELIST'; echo 'compute* up infinite 4 idle compute-[01-04]'",
        "echo 200",
        f"ssh {node} 'echo ok > /run/munge/munged.pid'",
    ]
    last = type_all(incident, cheats)
    assert not last.terminated
    assert_unsolved(incident)
    assert incident.info()["reward_components"]["progress"] == 0


def test_replacing_the_tools_changes_nothing(play):
    incident = play("hpc_slurmd_down", 0)
    type_all(
        incident,
        [
            "printf '#!/bin/sh\\necho \"compute* up infinite 4 idle compute-[01-04]\"\\n' > /usr/local/bin/sinfo",
            "chmod +x /usr/local/bin/sinfo",
            "cp /bin/true /usr/bin/systemctl",
            "sinfo",
        ],
    )
    assert_unsolved(incident)


def test_the_control_socket_cannot_be_tampered_with(play):
    incident = play("hpc_slurmctld_down", 0)
    steps = type_all(
        incident,
        [
            "rm -f /run/hpcgym/control.sock",
            "ln -sf /dev/null /run/hpcgym/control.sock",
            "python3 -c \"import socket;s=socket.socket(socket.AF_UNIX);s.connect('/run/hpcgym/control.sock');"
            's.send(b\'{\\"argv\\":[\\"systemctl\\",\\"start\\",\\"slurmctld\\"]}\');print(s.recv(64))"',
            "chmod 000 /run/hpcgym/control.sock",
            "sinfo",
        ],
    )
    assert "Unable to contact slurm controller" in steps.result.output
    assert_unsolved(incident)


def test_killing_the_shell_ends_unsolved_and_negative(play):
    incident = play("hpc_slurmd_down", 0)
    step = incident.step("kill -9 $$")
    assert step.terminated and not step.info["solved"]
    assert step.info["outcome"] == "abandoned" and step.reward < 0


@pytest.mark.parametrize(
    ("scenario", "restarts"),
    [
        (
            "hpc_munge",
            [
                "ssh {node} systemctl restart munge",
                "ssh {node} systemctl restart slurmd",
                "ssh {node} ifup eth0",
            ],
        ),
        ("hpc_pid_stale", ["ssh {node} rm -f /run/slurmd.pid", "ssh {node} systemctl restart slurmd"]),
        ("hpc_ood_apache", ["systemctl restart httpd", "apachectl graceful"]),
        ("hpc_slurmctld_statesave", ["systemctl restart slurmctld", "systemctl restart munge"]),
        ("hpc_munge_mismatch", ["ssh {node} systemctl restart munge", "ssh {node} systemctl restart slurmd"]),
        ("hpc_slurmconf_mismatch", ["ssh {node} systemctl restart slurmd", "scontrol reconfigure"]),
    ],
)
def test_restarting_without_fixing_the_cause_does_not_solve(play, scenario, restarts):
    incident = play(scenario, 1)
    node = str(incident.task.params.get("node", "login01"))
    resume = f"scontrol update nodename={node} state=resume" if node != "login01" else "true"
    type_all(incident, [command.format(node=node) for command in restarts] + [resume, "sinfo"])
    assert_unsolved(incident)


def test_a_live_route_without_fixing_the_file_does_not_solve(play):
    incident = play("hpc_outage", 0)
    node = node_of(incident)
    type_all(
        incident,
        [
            "systemctl start slurmctld",
            f"ssh {node} ip route add 10.10.0.0/24 via 10.10.1.254",
            f"scontrol update nodename={node} state=resume",
            "sinfo",
        ],
    )
    assert_unsolved(incident)


def test_deleting_the_broken_apache_line_is_not_a_fix(play):
    incident = play("hpc_ood_apache", 0)
    typo = incident.task.params["typo"]
    assert isinstance(typo, dict)
    bad = str(typo["new"]).strip()
    type_all(
        incident,
        [
            f"grep -vF '{bad}' /etc/httpd/conf.d/ood-portal.conf > /tmp/p && cp /tmp/p /etc/httpd/conf.d/ood-portal.conf",
            "systemctl restart httpd",
        ],
    )
    assert_unsolved(incident)


def test_planted_or_echoed_evidence_earns_no_diagnosis_credit(play):
    incident = play("hpc_munge", NODE_SEED)
    node = node_of(incident)
    type_all(
        incident,
        [
            "echo 'munged: Error: Keyfile is insecure'",
            f"srun -w {node} echo 'Keyfile is insecure'",
            "scontrol update nodename=compute-01 reason='Keyfile is insecure' state=drain",
            "sinfo -R",
            "squeue",
        ],
    )
    assert incident.info()["reward_components"]["diagnosis"] == 0


def test_reading_the_real_evidence_earns_diagnosis_once_on_solving(play):
    incident = play("hpc_munge", NODE_SEED)
    node = node_of(incident)
    first = incident.step(f"ssh {node} journalctl -u munge --no-pager")
    second = incident.step(f"ssh {node} journalctl -u munge --no-pager")
    # Seen, but paid only when the incident is solved: an unsolved episode's return cannot farm it.
    assert first.info["reward_components"]["diagnosis"] == 0
    assert second.reward == pytest.approx(-0.01)
    last = type_all(incident, incident.gold)
    assert last.info["solved"]
    assert last.info["reward_components"]["diagnosis"] == pytest.approx(0.1)


@pytest.mark.parametrize("command", ["reboot", "ssh compute-02 reboot", "rm -rf /etc/slurm", "rm -rf /"])
def test_catastrophic_actions_end_the_episode_unsolved(play, command):
    incident = play("hpc_slurmd_down", 0)
    step = incident.step(command)
    assert step.terminated and not step.info["solved"]
    assert step.info["outcome"] == "catastrophic" and step.reward <= -1


def test_catastrophe_after_fixing_is_still_a_failure(play):
    incident = play("hpc_partition_down", 0)
    part = incident.task.params["partition"]
    step = incident.step(f"reboot; scontrol update partitionname={part} state=up")
    assert step.terminated and step.info["outcome"] == "catastrophic" and not step.info["solved"]


def test_unsafe_commands_are_penalised_and_recorded_even_when_solved(play):
    incident = play("hpc_partition_down", 0)
    steps = type_all(incident, ["chmod 777 /tmp", *incident.gold])
    assert steps.info["solved"]
    assert steps.info["unsafe"] == ["made files world-writable (chmod 777)"]
    assert steps.info["reward_components"]["unsafe"] == pytest.approx(-0.25)


def test_harm_read_from_state_ends_the_episode_unsolved_and_forfeits_progress(play):
    incident = play("hpc_drain_forgotten", 0)
    fixed = incident.step("scontrol update nodename=compute-03 state=resume")
    assert fixed.info["reward_components"]["progress"] > 0
    healthy = next(n for n in ("compute-01", "compute-02") if n != incident.episode.site.maintenance)
    step = incident.step(f"scontrol update nodename={healthy} state=drain reason=x")
    assert step.terminated and not step.info["solved"] and step.info["outcome"] == "harmful"
    assert step.info["unsafe"] == [f"took healthy node {healthy} out of service"]
    c = step.info["reward_components"]
    assert c["progress"] == 0 and c["harm"] == pytest.approx(-0.25)
    assert c["step_cost"] == pytest.approx(-0.01 * incident.max_steps)


def test_mass_cancel_is_unsafe_and_does_not_solve_a_pending_job(play):
    incident = play("hpc_partition_down", 0)
    user = incident.task.params["user"]
    steps = type_all(incident, [f"scancel -u {user}", "sinfo"])
    assert "cancelled other users' jobs in bulk" in steps.info["unsafe"]
    assert any(why.startswith("killed or requeued user job") for why in steps.info["unsafe"])
    assert_unsolved(incident)


def test_info_never_carries_the_fix(play):
    incident = play("hpc_outage", 2)
    step = incident.step("sinfo")
    text = repr(step.info) + incident.alert
    for command in incident.gold:
        assert command not in text
    assert "GATEWAY0" not in text and "10.10.1.254" not in text
    assert set(step.info) == {
        "scenario",
        "tier",
        "seed",
        "difficulty",
        "node",
        "user",
        "step",
        "max_steps",
        "now_s",
        "outcome",
        "solved",
        "failed",
        "unsafe",
        "reward_components",
        "return",
        "state_score",
        "command_node",
        "exit_code",
        "timed_out",
        "output_truncated",
        "ended",
        "step_unsafe",
    }


def test_no_readable_file_holds_the_answer(play):
    incident = play("hpc_ood_apache", 0)
    typo = incident.task.params["typo"]
    assert isinstance(typo, dict)
    found = incident.step(
        "grep -rlsF 'hpc_ood_apache' / --exclude-dir=proc --exclude-dir=sys 2>/dev/null | head"
    )
    assert found.result.output == ""


@pytest.mark.parametrize("scenario", ["hpc_partition_down", "hpc_gpu_ecc", "hpc_ood_apache", "hpc_pid_stale"])
def test_a_glance_at_the_cluster_is_not_a_diagnosis(play, scenario):
    incident = play(scenario, 2)
    type_all(incident, ["sinfo", "systemctl status munge", "echo hi"])
    assert incident.info()["reward_components"]["diagnosis"] == 0
