"""Who calls: a user's tools act as that user, and slurmctld refuses her what is the operators'.

The texts and exit codes are Debian's slurm-wlm 22.05.8 run as `nobody` against a private cluster
here (the fidelity state `as-a-user` compares them on every run).
"""

from __future__ import annotations

from hpcgym.controller import Controller, TaskResult, parse_slurm_conf
from hpcgym.controller.rpc import User
from hpcgym.controller.slurmctld import BATCH_SCHED_DELAY_S
from hpcgym.controller.state import NodeBase, NodeFlag

CONF = """
ClusterName=hpc
SlurmctldHost=head(10.0.0.1)
NodeName=compute-0[1-2] CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=compute Nodes=compute-0[1-2] Default=YES MaxTime=INFINITE State=UP
"""
ROOT = User("root", 0, "root", 0)
ALICE = User("alice", 2001, "alice", 2001)
BOB = User("bob", 2002, "bob", 2002)


def make() -> Controller:
    c = Controller(parse_slurm_conf(CONF), users=(ROOT, ALICE, BOB), run_task=lambda t: TaskResult("ok\n"))
    c.advance(BATCH_SCHED_DELAY_S)
    return c


def call(c: Controller, user: User, *argv: str) -> tuple[str, str, int]:
    reply = c.handle("login", list(argv), "/home", uid=user.uid)
    c.tick()
    return reply.stdout, reply.stderr, reply.exit_code


def test_a_users_job_is_hers_and_squeue_me_shows_it() -> None:
    c = make()
    assert call(c, ROOT, "sbatch", "--wrap", "sleep 100")[0] == "Submitted batch job 1\n"
    assert call(c, ALICE, "sbatch", "--wrap", "sleep 100")[0] == "Submitted batch job 2\n"
    assert call(c, ALICE, "squeue", "--me", "-h", "-o", "%i %u")[0] == "2 alice\n"
    assert call(c, BOB, "squeue", "-h", "-o", "%i %u")[0] == "1 root\n2 alice\n"
    # Her own job she may cancel; root's she may not, and it runs on.
    assert call(c, ALICE, "scancel", "2") == ("", "", 0)
    out, err, code = call(c, ALICE, "scancel", "1")
    assert (out, err, code) == (
        "",
        "scancel: error: Kill job error on job id 1: Access/permission denied\n",
        210,
    )
    assert call(c, ROOT, "squeue", "-h", "-o", "%i %T")[0] == "1 RUNNING\n"


def test_scancel_by_filter_reports_each_job_she_may_not_touch() -> None:
    c = make()
    call(c, ROOT, "sbatch", "--wrap", "sleep 100")
    call(c, BOB, "sbatch", "--wrap", "sleep 100")
    out, err, code = call(c, ALICE, "scancel", "--state=RUNNING")
    assert out == ""
    assert code == 210
    assert err == (
        "scancel: error: Kill job error on job id 1: Access/permission denied\n"
        "scancel: error: Kill job error on job id 2: Access/permission denied\n"
    )
    assert call(c, ROOT, "squeue", "-h", "-o", "%i")[0] == "1\n2\n"


def test_what_only_an_operator_may_do_is_refused_to_a_user() -> None:
    c = make()
    call(c, ROOT, "sbatch", "--wrap", "sleep 100")
    refused = {
        ("scontrol", "update", "nodename=compute-02", "state=drain", "reason=mine"): (
            "slurm_update error: Invalid user id\n"
        ),
        (
            "scontrol",
            "update",
            "partitionname=compute",
            "state=down",
        ): "slurm_update error: Invalid user id\n",
        ("scontrol", "reconfigure"): "slurm_reconfigure error: Invalid user id\n",
        ("scontrol", "hold", "1"): "Invalid user id for job 1\nslurm_suspend error: Invalid user id\n",
        ("scontrol", "release", "1"): "Invalid user id for job 1\nslurm_suspend error: Invalid user id\n",
        ("scontrol", "update", "jobid=1", "timelimit=5"): "Invalid user id for job 1\n",
        ("scontrol", "requeue", "1"): "Access/permission denied for job 1\n",
        (
            "scontrol",
            "create",
            "reservation",
            "starttime=now",
            "duration=60",
            "nodes=compute-02",
            "users=root",
        ): "Error creating the reservation: Invalid user id\n",
        ("scontrol", "delete", "reservation=foo"): "delete_reservation reservation=foo: Invalid user id\n",
    }
    for argv, err in refused.items():
        assert call(c, ALICE, *argv) == ("", err, 1), argv
    # Nothing of it happened.
    node = c.slurm.nodes["compute-02"]
    assert node.base is not NodeBase.DOWN and NodeFlag.DRAIN not in node.flags and node.reason is None
    assert c.slurm.partitions["compute"].state.name == "UP"
    assert not c.slurm.reservations
    assert call(c, ROOT, "squeue", "-h", "-o", "%i %T %l")[0] == "1 RUNNING UNLIMITED\n"
    # Root may, as before.
    assert call(c, ROOT, "scontrol", "update", "nodename=compute-02", "state=drain", "reason=ops") == (
        "",
        "",
        0,
    )
    assert NodeFlag.DRAIN in c.slurm.nodes["compute-02"].flags


def test_a_uid_the_node_does_not_know_is_that_number_and_no_operator() -> None:
    c = make()
    assert (
        call(c, User("4242", 4242, "4242", 4242), "sbatch", "--wrap", "true")[0] == "Submitted batch job 1\n"
    )
    assert call(c, ROOT, "squeue", "-h", "-t", "all", "-o", "%i %u")[0].startswith("1 4242")
    assert call(c, User("4242", 4242, "4242", 4242), "scontrol", "reconfigure")[1] == (
        "slurm_reconfigure error: Invalid user id\n"
    )
