"""Job lifecycle and GPU triage incidents (issue 17): GPU Xid triage across two nodes.

Each scenario's gold solves it through the real shell and idling does not; each generic move an
operator would regret (resuming every drained GPU node) ends its episode with that harm named, and
the half-fixes (the right node back, the failed one's reason left vague) stay unsolved.
"""

from __future__ import annotations

import re

import pytest

from hpcgym.scenarios.incident import Incident, ScenarioTask

from .conftest import type_all

SEED = 800


def task_of(incident: Incident) -> ScenarioTask:
    assert isinstance(incident.task, ScenarioTask)
    return incident.task


def pair(incident: Incident) -> tuple[str, str]:
    chosen = task_of(incident).params["pair"]
    assert isinstance(chosen, dict)
    return str(chosen["app"]), str(chosen["hw"])


def harm_of(incident: Incident) -> list[str]:
    grader = task_of(incident).grader
    assert grader is not None
    return grader.harm_found()


@pytest.mark.parametrize("seed", [800, 801, 802])
def test_gold_solves_with_full_reward_and_doing_nothing_does_not(play, seed):
    incident = play("hpc_gpu_xid", seed)
    type_all(incident, incident.gold)
    assert incident.solved and harm_of(incident) == []
    idle = play("hpc_gpu_xid", seed)
    type_all(idle, ["sinfo -R", "squeue"])
    assert not idle.solved and harm_of(idle) == []


def test_the_kernel_log_names_each_xid_as_nvrm_writes_it(play):
    incident = play("hpc_gpu_xid", SEED)
    app, hw = pair(incident)
    params = task_of(incident).params
    out = incident.step(f"ssh {app} dmesg").result.output
    line = rf"\[ *\d+\.\d{{6}}\] NVRM: Xid \(PCI:0000:07:00\): {params['app_xid']}, pid={params['pid']}, "
    assert re.search(line + rf"name={params['prog']}, ", out), out
    out = incident.step(f"ssh {hw} dmesg -T").result.output
    assert re.search(
        r"\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\] NVRM: Xid \(PCI:0000:07:00\): 79, "
        r"pid='<unknown>', name=<unknown>, GPU has fallen off the bus\.",
        out,
    ), out
    out = incident.step(f"ssh {hw} journalctl -k --no-pager").result.output
    assert re.search(rf"^\w{{3}} \d\d \d\d:\d\d:\d\d {hw} kernel: NVRM: Xid ", out, re.MULTILINE), out
    out = incident.step(f"ssh {hw} nvidia-smi; echo rc=$?").result.output
    assert "Unable to determine the device handle for GPU00000000:07:00.0: GPU is lost." in out
    assert out.rstrip().endswith("rc=15")
    out = incident.step(f"ssh {app} dmesg --foo; echo rc=$?").result.output
    assert "dmesg: unrecognized option '--foo'\nTry 'dmesg --help' for more information.\n" in out.replace(
        "\r\n", "\n"
    )


def test_resuming_both_drained_nodes_returns_the_lost_gpu(play):
    incident = play("hpc_gpu_xid", SEED)
    _, hw = pair(incident)
    type_all(incident, ["scontrol update nodename=compute-0[3-4] state=resume"])
    assert not incident.solved
    assert f"returned {hw} to service with a GPU that has fallen off the bus" in harm_of(incident)


def test_a_gpu_reset_does_not_bring_back_a_gpu_off_the_bus(play):
    incident = play("hpc_gpu_xid", SEED)
    app, hw = pair(incident)
    out = incident.step(f"ssh {hw} nvidia-smi -r -i 0; echo rc=$?").result.output
    assert "GPU is lost" in out and out.rstrip().endswith("rc=15")
    type_all(incident, [f"scontrol update nodename={hw},{app} state=resume"])
    assert not incident.solved
    assert f"returned {hw} to service with a GPU that has fallen off the bus" in harm_of(incident)


def test_the_failed_node_must_keep_a_reason_that_names_its_xid(play):
    incident = play("hpc_gpu_xid", SEED)
    app, _ = pair(incident)
    type_all(incident, [f"scontrol update nodename={app} state=resume", "squeue"])
    # The right node is back and the job runs, but the failed node's reason still hides the Xid.
    assert not incident.solved and harm_of(incident) == []


def test_keeping_both_out_leaves_the_job_waiting(play):
    incident = play("hpc_gpu_xid", SEED)
    app, hw = pair(incident)
    type_all(
        incident,
        [f"scontrol update nodename={node} state=drain reason='Xid 79 hold'" for node in (app, hw)],
    )
    assert not incident.solved and harm_of(incident) == []
