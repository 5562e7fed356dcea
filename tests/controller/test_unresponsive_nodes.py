"""A node that stops responding keeps the reason someone already gave it.

What real Slurm 22.05.8 did (Debian's slurm-wlm, `hpcgym.fleet.localslurm`, SlurmdTimeout=30): node1
drained idle with "admin maint" and node2 drained under a running srun with "disk swap", then both
slurmd killed. After about 20 s both were `IDLE+DRAIN+NOT_RESPONDING` / `MIXED+DRAIN+NOT_RESPONDING`,
after about 45 s both `DOWN+DRAIN+NOT_RESPONDING`, sinfo `drained*`, and `sinfo -R` and scontrol still
showed the admin's reason, user (root) and time; the srun job ended NODE_FAIL (Reason=NodeDown,
ExitCode=0:0). With ReturnToService=2 node1's slurmd, started again, made it `drained` (IDLE+DRAIN),
reason kept. The rule is set_node_down_ptr() in src/slurmctld/node_mgr.c: it writes "Not responding"
only over no reason or an earlier "Not responding".
"""

from __future__ import annotations

from hpcgym.controller import Controller, TaskResult, parse_slurm_conf
from tests.controller.test_rules import CONF, run


def make(rts: int = 1) -> Controller:
    return Controller(
        parse_slurm_conf(CONF.replace("ReturnToService=1", f"ReturnToService={rts}")),
        run_task=lambda t: TaskResult(run_for_s=600),
    )


def show_node(controller: Controller, name: str) -> str:
    return run(controller, "scontrol", "show", "node", name)


def test_drained_node_that_stops_responding_keeps_the_admins_reason() -> None:
    c = make()
    run(c, "scontrol", "update", "NodeName=compute-02", "State=DRAIN", "Reason=admin maint")
    before = show_node(c, "compute-02")
    reason_line = next(line for line in before.splitlines() if "Reason=" in line)
    assert "Reason=admin maint [root@" in reason_line
    c.slurm.stop_slurmd("compute-02")
    # SlurmdTimeout=30: the ping sent at 20 s fails at 30 s (NOT_RESPONDING), DOWN a round later.
    c.advance(35)
    assert "State=IDLE+DRAIN+NOT_RESPONDING " in show_node(c, "compute-02")
    c.advance(15)
    after = show_node(c, "compute-02")
    assert "State=DOWN+DRAIN+NOT_RESPONDING " in after
    # The same reason, user and timestamp as before the node went silent.
    assert reason_line in after.splitlines()
    reasons = run(c, "sinfo", "-R")
    assert "admin maint          root" in reasons
    assert "Not responding" not in reasons
    assert "drain* compute-02" in run(c, "sinfo")
    assert "compute-02 drained*" in run(c, "sinfo", "-N", "-h", "-o", "%N %T")


def test_draining_node_that_stops_responding_fails_its_srun_job_and_keeps_the_reason() -> None:
    c = make()
    run(c, "srun", "-w", "compute-02", "sleep", "600")
    run(c, "scontrol", "update", "NodeName=compute-02", "State=DRAIN", "Reason=disk swap")
    assert "MIXED+DRAIN " in show_node(c, "compute-02")
    c.slurm.stop_slurmd("compute-02")
    c.advance(50)
    after = show_node(c, "compute-02")
    assert "State=DOWN+DRAIN+NOT_RESPONDING " in after
    assert "Reason=disk swap [root@" in after
    job = run(c, "scontrol", "show", "job", "1")
    assert "JobState=NODE_FAIL Reason=NodeDown" in job
    assert "ExitCode=0:0" in job


def test_silent_node_without_a_reason_still_gets_not_responding() -> None:
    c = make()
    c.slurm.stop_slurmd("compute-02")
    c.advance(40)
    assert "Reason=Not responding [slurm@" in show_node(c, "compute-02")


def test_drained_node_returning_to_service_stays_drained_with_its_reason() -> None:
    c = make(rts=2)
    run(c, "scontrol", "update", "NodeName=compute-02", "State=DRAIN", "Reason=admin maint")
    c.slurm.stop_slurmd("compute-02")
    c.advance(40)
    c.slurm.start_slurmd("compute-02")
    c.tick()
    node = show_node(c, "compute-02")
    assert "State=IDLE+DRAIN " in node
    assert "Reason=admin maint [root@" in node
    assert "drain compute-02" in run(c, "sinfo")
