"""A partition's MaxTime and DefaultTime against jobs' time limits, as slurmctld 22.05 applies them.

With EnforcePartLimits=NO (the default) a job asking for more than its partition's MaxTime is
queued and pends with PartitionTimeLimit until the limit changes (slurm.conf(5); job_limits_check()
in job_mgr.c). A job that gives no --time takes the partition's DefaultTime at submit; with none it
keeps no limit of its own (NO_VAL): it shows the partition's MaxTime of the moment and takes it when
it starts (select_nodes() in node_scheduler.c). An operator's `scontrol update ... TimeLimit=` is
ADMIN_SET_LIMIT and no longer held back by the partition.
"""

from __future__ import annotations

from hpcgym.controller import Controller, parse_slurm_conf
from hpcgym.controller.rpc import User
from hpcgym.controller.slurmctld import BATCH_SCHED_DELAY_S
from tests.controller.test_rules import run

CONF = """
ClusterName=hpc
SlurmctldHost=head(10.0.0.1)
SlurmUser=slurm
NodeName=compute-0[1-2] CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=compute Nodes=compute-0[1-2] Default=YES MaxTime=INFINITE State=UP
PartitionName=long Nodes=compute-0[1-2] MaxTime=2-00:00:00 State=UP
"""
ALICE = User("alice", 1001, "alice", 1001)


def settled(conf: str = CONF) -> Controller:
    c = Controller(parse_slurm_conf(conf))
    c.advance(BATCH_SCHED_DELAY_S)
    return c


def reconfigure(c: Controller, conf: str) -> None:
    c.read_file = lambda node, path: conf.encode()
    assert run(c, "scontrol", "reconfigure") == ""


def test_a_job_over_a_lowered_maxtime_is_queued_and_pends_until_the_limit_is_back() -> None:
    lowered = CONF.replace("MaxTime=2-00:00:00", "MaxTime=48")
    c = settled(lowered)
    # No warning from sbatch: EnforcePartLimits=NO accepts the job.
    reply = c.handle("login", ["sbatch", "-p", "long", "-t", "1-00:00:00", "--wrap", "sleep 600"], "/root")
    assert (reply.stdout, reply.stderr, reply.exit_code) == ("Submitted batch job 1\n", "", 0)
    c.advance(2)
    assert run(c, "squeue", "-h", "-o", "%i %T %l %r") == "1 PENDING 1-00:00:00 PartitionTimeLimit\n"
    assert "JobState=PENDING Reason=PartitionTimeLimit " in run(c, "scontrol", "show", "job", "1")
    # MaxTime=48 is 48 minutes: scontrol prints mins2time_str, sinfo its own short form.
    assert "MaxTime=00:48:00 " in run(c, "scontrol", "show", "partition", "long")
    assert run(c, "sinfo", "-h", "-p", "long", "-o", "%P %l") == "long 48:00\n"
    reconfigure(c, CONF)
    assert run(c, "squeue", "-h", "-o", "%i %T %l") == "1 RUNNING 1-00:00:00\n"


def test_a_job_without_a_time_limit_is_never_held_by_maxtime_and_takes_it_at_start() -> None:
    c = settled()
    run(c, "sbatch", "-H", "-p", "long", "--wrap", "sleep 600")
    assert run(c, "squeue", "-h", "-o", "%i %l %r") == "1 2-00:00:00 JobHeldUser\n"
    # The pending job shows the partition's MaxTime as it is now.
    assert run(c, "scontrol", "update", "PartitionName=long", "MaxTime=2:00:00") == ""
    assert run(c, "squeue", "-h", "-o", "%i %l") == "1 2:00:00\n"
    run(c, "scontrol", "release", "1")
    c.advance(2)
    assert run(c, "squeue", "-h", "-o", "%i %T %l") == "1 RUNNING 2:00:00\n"
    # Started, the limit is its own: raising MaxTime again does not lengthen it.
    reconfigure(c, CONF)
    assert "TimeLimit=02:00:00 " in run(c, "scontrol", "show", "job", "1")


def test_defaulttime_is_the_jobs_own_limit_and_one_over_maxtime_is_dropped() -> None:
    with_default = CONF.replace("MaxTime=2-00:00:00", "MaxTime=2-00:00:00 DefaultTime=1-00:00:00")
    c = settled(with_default)
    run(c, "sbatch", "-H", "-p", "long", "--wrap", "sleep 600")
    assert "TimeLimit=1-00:00:00 " in run(c, "scontrol", "show", "job", "1")
    # MaxTime lowered under that DefaultTime: slurmctld drops the DefaultTime ("DefaultTime exceeds
    # MaxTime"), and the job, whose limit is 1 day, waits on the partition.
    reconfigure(c, with_default.replace("MaxTime=2-00:00:00", "MaxTime=12:00:00"))
    assert "DefaultTime=NONE " in run(c, "scontrol", "show", "partition", "long")
    run(c, "scontrol", "release", "1")
    c.advance(2)
    assert run(c, "squeue", "-h", "-o", "%i %T %r") == "1 PENDING PartitionTimeLimit\n"


def test_a_zero_defaulttime_refuses_jobs_without_a_time_limit() -> None:
    c = settled(CONF.replace("MaxTime=2-00:00:00", "MaxTime=2-00:00:00 DefaultTime=0"))
    reply = c.handle("login", ["sbatch", "-p", "long", "--wrap", "true"], "/root")
    assert reply.stderr == (
        "sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds "
        "some limit)\n"
    )
    assert reply.exit_code == 1
    assert run(c, "sbatch", "-p", "long", "-t", "10", "--wrap", "true") == "Submitted batch job 1\n"


def test_an_operators_time_limit_is_not_held_by_the_partition_and_a_user_may_not_raise_one() -> None:
    c = settled(CONF.replace("MaxTime=2-00:00:00", "MaxTime=2:00:00"))
    c.users["alice"] = ALICE
    c.caller = ALICE
    run(c, "sbatch", "-p", "long", "-t", "1-00:00:00", "--wrap", "sleep 600")
    run(c, "sbatch", "-p", "long", "-t", "1-00:00:00", "--wrap", "sleep 600")
    c.advance(2)
    # Root's limit (ADMIN_SET_LIMIT) runs past MaxTime.
    c.caller = c.users["root"]
    assert run(c, "scontrol", "update", "JobId=1", "TimeLimit=3-00:00:00") == ""
    c.caller = ALICE
    # A user may shorten a limit, or lengthen a pending job's within MaxTime, never past it.
    assert run(c, "scontrol", "update", "JobId=2", "TimeLimit=2-00:00:00") == (
        "Access/permission denied for job 2\n"
    )
    assert run(c, "scontrol", "update", "JobId=2", "TimeLimit=1:00:00") == ""
    # Debian's 22.05.8 as nobody (fidelity state as-a-user): partitions are the operators'.
    assert run(c, "scontrol", "update", "PartitionName=long", "MaxTime=UNLIMITED") == (
        "slurm_update error: Invalid user id\n"
    )
    assert run(c, "squeue", "-h", "-o", "%i %T %l") == "1 RUNNING 3-00:00:00\n2 RUNNING 1:00:00\n"


def test_scontrol_refuses_a_maxtime_it_cannot_parse() -> None:
    c = settled()
    reply = c.handle("login", ["scontrol", "update", "PartitionName=long", "MaxTime=2days"], "/root")
    assert (reply.stderr, reply.exit_code) == (
        "scontrol: error: Invalid input MaxTime=2days\nslurm_update error: No error\n",
        1,
    )
    # The key may be cut to four letters or more, in any case (Debian's 22.05.8).
    assert run(c, "scontrol", "update", "PartitionName=long", "maxt=30") == ""
    assert run(c, "sinfo", "-h", "-p", "long", "-o", "%P %l") == "long 30:00\n"


def test_squeue_prints_limits_short_and_invalid_past_a_year() -> None:
    # squeue's _print_secs, as Debian's 22.05.8 printed `-t 400-00:00:00` and `-t 30`.
    c = settled()
    run(c, "sbatch", "-t", "400-00:00:00", "--wrap", "sleep 120")
    run(c, "sbatch", "-p", "long", "-t", "30", "--wrap", "sleep 120")
    c.advance(2)
    assert run(c, "squeue", "-h", "-o", "%i %T %l %L") == "1 RUNNING INVALID INVALID\n2 RUNNING 30:00 29:58\n"
