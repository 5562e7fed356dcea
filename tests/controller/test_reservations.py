"""Reservations, licenses and unexpected reboots beyond what the fidelity states play."""

from __future__ import annotations

from hpcgym.controller import Controller, TaskResult, parse_slurm_conf
from hpcgym.controller.slurmctld import BATCH_SCHED_DELAY_S, RESV_CHECK_S, UNEXPECTED_REBOOT_REASON
from hpcgym.controller.state import JobState, NodeBase
from tests.controller.test_rules import run

CONF = """
ClusterName=hpc
SlurmctldHost=head(10.0.0.1)
SlurmdTimeout=30
ReturnToService={rts}
Licenses=matlab:2
NodeName=compute-0[1-4] CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=compute Nodes=compute-0[1-4] Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=compute-0[3-4] MaxTime=1-00:00:00 State=UP
"""


def make(rts: int = 1) -> Controller:
    c = Controller(parse_slurm_conf(CONF.format(rts=rts)), run_task=lambda t: TaskResult("ok\n"))
    c.advance(BATCH_SCHED_DELAY_S)
    return c


MAINT = (
    "scontrol",
    "create",
    "reservation",
    "ReservationName=pm",
    "StartTime=now",
    "Duration=infinite",
    "Nodes=compute-0[3-4]",
    "Users=root",
    "Flags=MAINT,IGNORE_JOBS",
)


def test_maint_reservation_holds_its_partition_until_deleted() -> None:
    c = make()
    assert run(c, *MAINT) == "Reservation created: pm\n"
    run(c, "sbatch", "-p", "gpu", "--wrap", "sleep 600")
    c.advance(2)
    assert "(ReqNodeNotAvail, Reserved for maintenance)" in run(c, "squeue")
    c.advance(RESV_CHECK_S)
    assert "maint compute-[03-04]" in run(c, "sinfo", "-p", "gpu")
    assert "State=IDLE+MAINTENANCE+RESERVED" in run(c, "scontrol", "show", "node", "compute-03")
    assert run(c, "scontrol", "delete", "ReservationName=pm") == ""
    c.advance(2)
    job = c.slurm.jobs[1]
    assert job.state is JobState.RUNNING
    assert "idle" in run(c, "sinfo", "-h", "-n", "compute-04", "-o", "%t")


def test_job_of_a_future_reservation_waits_with_reason_reservation() -> None:
    c = make()
    run(
        c, "scontrol", "create", "res", "StartTime=now+1hour", "Duration=60", "Nodes=compute-01", "Users=root"
    )
    assert "Submitted batch job 1" in run(c, "sbatch", "--reservation=root_1", "--wrap", "true")
    c.advance(2)
    assert "(Reservation)" in run(c, "squeue")
    assert "in use" in run(c, "scontrol", "delete", "reservation", "root_1")


def test_reservation_over_a_running_job_is_refused_without_ignore_jobs() -> None:
    c = make()
    run(c, "sbatch", "-w", "compute-01", "--wrap", "sleep 600")
    c.advance(2)
    out = run(
        c, "scontrol", "create", "res", "StartTime=now", "Duration=60", "Nodes=compute-01", "Users=root"
    )
    assert out == "Error creating the reservation: Requested nodes are busy\n"
    assert not c.slurm.reservations


def test_licenses_count_blocks_the_job_beyond_it_and_frees_at_the_end() -> None:
    c = make()
    run(c, "sbatch", "-L", "matlab:2", "--wrap", "sleep 60")
    run(c, "sbatch", "-L", "matlab", "--wrap", "sleep 60")
    c.advance(2)
    assert "(Licenses)" in run(c, "squeue")
    assert "Total=2 Used=2 Free=0" in run(c, "scontrol", "show", "lic")
    c.advance(70)
    assert c.slurm.jobs[2].state is JobState.RUNNING
    assert "Invalid license specification" in run(c, "sbatch", "-L", "matlab:3", "--wrap", "true")


def test_unexpected_reboot_downs_the_node_at_rts_0_and_1_not_2() -> None:
    for rts, down in ((0, True), (1, True), (2, False)):
        c = make(rts)
        run(c, "sbatch", "-w", "compute-02", "--wrap", "sleep 600")
        c.advance(2)
        c.slurm.reboot_host("compute-02")
        node = c.slurm.nodes["compute-02"]
        assert (node.base is NodeBase.DOWN) is down, rts
        if down:
            assert node.reason == UNEXPECTED_REBOOT_REASON
            assert c.slurm.jobs[1].state is JobState.PENDING
            c.advance(60)
            # It stays down: neither ReturnToService 0 nor 1 brings back a node that rebooted.
            assert node.base is NodeBase.DOWN
            run(c, "scontrol", "update", "nodename=compute-02", "state=resume")
            c.advance(3)
            assert node.base is not NodeBase.DOWN and node.reason is None


def test_unexpected_reboot_keeps_an_admin_reason() -> None:
    c = make(0)
    run(c, "scontrol", "update", "nodename=compute-03", "state=drain", "reason=bad dimm")
    c.slurm.reboot_host("compute-03")
    assert c.slurm.nodes["compute-03"].reason == "bad dimm"
    assert c.slurm.nodes["compute-03"].base is NodeBase.DOWN
