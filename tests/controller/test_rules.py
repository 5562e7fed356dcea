"""The rules beyond the captures: states the reference cluster never showed, and determinism."""

from __future__ import annotations

from hpcgym.controller import Controller, TaskRequest, TaskResult, parse_slurm_conf
from hpcgym.controller.hostlist import compress_hostlist, expand_hostlist
from hpcgym.controller.slurmctld import BATCH_SCHED_DELAY_S

CONF = """
ClusterName=hpc
SlurmctldHost=head(10.0.0.1)
SlurmdTimeout=30
SlurmUser=slurm
ReturnToService=1
NodeName=compute-0[1-2] CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=compute Nodes=compute-0[1-2] Default=YES MaxTime=INFINITE State=UP
"""


def make(**kwargs: object) -> Controller:
    return Controller(parse_slurm_conf(CONF), run_task=lambda t: TaskResult("ok\n"), **kwargs)  # type: ignore[arg-type]


def run(controller: Controller, *argv: str) -> str:
    reply = controller.handle("login", list(argv), "/root")
    controller.tick()
    return reply.stdout + reply.stderr


def test_hostlist_round_trip() -> None:
    names = expand_hostlist("n[09-11],login")
    assert names == ["n09", "n10", "n11", "login"]
    assert compress_hostlist(names) == "login,n[09-11]"


def settled(**kwargs: object) -> Controller:
    # A controller up for longer than batch_sched_delay, so a batch job starts when it is submitted.
    c = make(**kwargs)
    c.advance(BATCH_SCHED_DELAY_S)
    return c


def test_drain_under_running_job_is_draining_then_drained() -> None:
    c = settled()
    run(c, "sbatch", "--wrap", "sleep 30")
    run(c, "scontrol", "update", "NodeName=compute-01", "State=DRAIN", "Reason=disk")
    assert "drng compute-01" in run(c, "sinfo")
    c.advance(60)
    # The job ended long before this moment, its epilog too: the node is drained.
    assert "drain compute-01" in run(c, "sinfo")
    assert "disk                 root" in run(c, "sinfo", "-R")


def test_node_without_slurmd_goes_not_responding_then_down_and_returns() -> None:
    c = make()
    c.slurm.stop_slurmd("compute-02")
    # SlurmdTimeout=30: pings every 10 s; the first that fails (sent at 20 s) is reported once the
    # agent gives up (MessageTimeout, 10 s) and the node goes DOWN a round later.
    c.advance(25)
    assert "idle compute-[01-02]" in run(c, "sinfo")
    c.advance(5)
    assert "idle* compute-02" in run(c, "sinfo")
    c.advance(10)
    out = run(c, "sinfo", "-R")
    assert "Not responding       slurm" in out
    assert "down* compute-02" in run(c, "sinfo")
    c.slurm.start_slurmd("compute-02")
    c.tick()
    assert "idle compute-[01-02]" in run(c, "sinfo")


def test_job_time_limit_gives_timeout() -> None:
    c = make()
    c.advance(27)
    run(c, "sbatch", "-t", "1", "--wrap", "sleep 300")
    # Started at 28 s, limit passed at 88 s, seen on the periodic pass at 90 s.
    c.advance(60)
    assert "1 RUNNING" in run(c, "squeue", "-o", "%i %T")
    c.advance(1)
    assert "1 COMPLETING" in run(c, "squeue", "-t", "TO", "-o", "%i %T")
    assert "TIMEOUT" in run(c, "squeue", "-t", "TO", "-o", "%i %T")
    assert "JobState=TIMEOUT Reason=TimeLimit" in run(c, "scontrol", "show", "job", "1")


def test_batch_jobs_wait_for_the_deferred_pass_after_slurmctld_starts() -> None:
    c = make()
    assert run(c, "sbatch", "--wrap", "sleep 300") == "Submitted batch job 1\n"
    assert run(c, "sbatch", "--wrap", "sleep 300") == "Submitted batch job 2\n"
    assert run(c, "squeue", "-h", "-o", "%i %t %r") == "1 PD None\n2 PD Priority\n"
    c.advance(BATCH_SCHED_DELAY_S)
    assert run(c, "squeue", "-h", "-o", "%i %t %r") == "1 R None\n2 R None\n"
    # srun is tried at once.
    assert make().handle("login", ["srun", "true"], "/root").exit_code == 0


def test_mixed_node_and_cancel() -> None:
    c = settled()
    run(c, "sbatch", "--wrap", "sleep 300")
    assert "mix compute-01" in run(c, "sinfo")
    run(c, "scancel", "1")
    assert "CA" in run(c, "squeue", "-t", "CA", "-h", "-o", "%t")


def test_unknown_flags_fail_like_the_real_tools() -> None:
    c = make()
    reply = c.handle("login", ["sinfo", "--bogus"], "/")
    assert (reply.stderr, reply.exit_code) == (
        "sinfo: unrecognized option '--bogus'\nTry \"sinfo --help\" for more information\n",
        1,
    )
    assert c.handle("login", ["sbatch", "--bogus"], "/").exit_code == 255


def test_same_commands_give_same_bytes() -> None:
    commands = [
        ["sbatch", "--wrap", "sleep 5"],
        ["srun", "-N", "2", "hostname"],
        ["squeue"],
        ["sinfo", "-Nel"],
    ]
    outputs = []
    for _ in range(2):
        c = make()
        outputs.append([c.handle("login", argv, "/root") for argv in commands if c.tick()])
    assert outputs[0] == outputs[1]


def test_srun_passes_slurm_environment() -> None:
    seen: list[TaskRequest] = []
    c = Controller(parse_slurm_conf(CONF), run_task=lambda t: seen.append(t) or TaskResult("x\n"))
    assert c.handle("login", ["srun", "-N", "2", "-l", "hostname"], "/root").stdout == "0: x\n1: x\n"
    assert [t.env["SLURMD_NODENAME"] for t in seen] == ["compute-01", "compute-02"]


def test_nodes_that_never_register_go_down_after_slurmd_timeout() -> None:
    c = make(slurmd_running=False)
    assert "unk* compute-[01-02]" in run(c, "sinfo")
    c.advance(40)
    assert "down* compute-[01-02]" in run(c, "sinfo")
    assert "PD" in run(c, "sbatch", "--wrap", "true") + run(c, "squeue", "-h", "-o", "%t")


def test_clients_fail_while_slurmctld_is_down() -> None:
    c = make()
    c.slurm.set_slurmctld(False)
    down = "Unable to contact slurm controller (connect failure)"
    assert c.handle("login", ["sinfo"], "/").stderr == f"slurm_load_partitions: {down}\n"
    assert c.handle("login", ["squeue"], "/").stderr == f"slurm_load_jobs error: {down}\n"
    assert c.handle("login", ["scontrol", "ping"], "/").stdout == (
        "Slurmctld(primary) at head is DOWN\n"
        "*****************************************\n"
        "** RESTORE SLURMCTLD DAEMON TO SERVICE **\n"
        "*****************************************\n"
    )
    reply = c.handle("login", ["sbatch", "--wrap", "true"], "/")
    assert (reply.stderr, reply.exit_code) == (f"sbatch: error: Batch job submission failed: {down}\n", 1)
    c.slurm.set_slurmctld(True)
    # Until each slurmd registers again (the first ping round, SlurmdTimeout/3 later) an idle
    # node's state is unknown.
    assert c.handle("login", ["sinfo", "-h", "-o", "%t"], "/").stdout == "unk\n"
    c.advance(11)
    assert c.handle("login", ["sinfo", "-h", "-o", "%t"], "/").stdout == "idle\n"


def test_hold_release_and_requeue() -> None:
    c = settled()
    run(c, "sbatch", "-H", "-J", "held", "--wrap", "sleep 100")
    assert run(c, "squeue", "-h", "-o", "%i %t %r") == "1 PD JobHeldUser\n"
    run(c, "scontrol", "release", "1")
    assert run(c, "squeue", "-h", "-o", "%i %t %r") == "1 R None\n"
    # A running job can be held: it keeps running with priority 0 and JobHeldAdmin (22.05.8).
    reply = c.handle("login", ["scontrol", "hold", "1"], "/")
    assert (reply.stderr, reply.exit_code) == ("", 0)
    assert run(c, "squeue", "-h", "-j", "1", "-o", "%t %r") == "R JobHeldAdmin\n"
    run(c, "scontrol", "requeue", "1")
    assert run(c, "squeue", "-h", "-o", "%i %t %r") == "1 PD BeginTime\n"
    c.advance(121)
    assert run(c, "squeue", "-h", "-o", "%i %t") == "1 R\n"
    assert "Restarts=1" in run(c, "scontrol", "show", "job", "1")


def test_node_down_requeues_batch_jobs_and_fails_srun_jobs() -> None:
    c = settled()
    run(c, "sbatch", "-w", "compute-02", "--wrap", "sleep 500")
    c.slurm.stop_slurmd("compute-02")
    c.advance(50)
    # Requeued with no scheduler pass after it: Reason=None and the last allocation's TRES until
    # the backfill pass (every 30 s from slurmctld's start), then BeginTime (Debian's 22.05.8).
    out = run(c, "squeue", "-h", "-o", "%i %t %r")
    assert out == "1 PD None\n"
    shown = run(c, "scontrol", "show", "job", "1")
    assert "AccrueTime=Unknown" in shown and "TRES=cpu=1,node=1,billing=1" in shown
    c.advance(10)
    assert run(c, "squeue", "-h", "-o", "%i %t %r") == "1 PD BeginTime\n"
    assert "AccrueTime=Unknown" not in run(c, "scontrol", "show", "job", "1")
    c.advance(200)
    # compute-02 is still down: the job waits for its required node.
    assert run(c, "squeue", "-h", "-o", "%i %r") == "1 ReqNodeNotAvail, UnavailableNodes:compute-02\n"


def test_admin_down_needs_a_reason_and_stays_down_until_resume() -> None:
    c = make()
    reply = c.handle("login", ["scontrol", "update", "NodeName=compute-01", "State=DOWN"], "/")
    assert reply.stderr == "You must specify a reason when DOWNING or DRAINING a node. Request denied\n"
    run(c, "scontrol", "update", "NodeName=compute-01", "State=DOWN", "Reason=maintenance")
    c.advance(60)
    assert "down compute-01" in run(c, "sinfo")
    assert "State=DOWN " in run(c, "scontrol", "show", "node", "compute-01")
    run(c, "scontrol", "update", "NodeName=compute-01", "State=RESUME")
    assert "idle* compute-01" in run(c, "sinfo")
    c.advance(10)
    assert "idle compute-[01-02]" in run(c, "sinfo")


def test_srun_errors_and_exit_codes() -> None:
    c = Controller(parse_slurm_conf(CONF), run_task=lambda t: TaskResult("", "boom\n", 3))
    reply = c.handle("login", ["srun", "false"], "/")
    assert (reply.stderr, reply.exit_code) == (
        "boom\nsrun: error: compute-01: task 0: Exited with exit code 3\n",
        3,
    )
    assert c.handle("login", ["squeue", "-t", "F", "-h", "-o", "%i %T"], "/").stdout == "1 COMPLETING\n"
    assert c.handle("login", ["srun"], "/").stderr == "srun: fatal: No command given to execute.\n"


def test_slurm_conf_syntax() -> None:
    conf = parse_slurm_conf(
        "ClusterName=c\nSlurmctldHost=h1\nSlurmctldHost=h2\n"
        "NodeName=DEFAULT CPUs=4 RealMemory=1000 \\\n  Gres=gpu:1\n"
        "NodeName=gpu[1-2] NodeAddr=10.0.0.[1-2] Weight=5 # comment\n"
        "PartitionName=DEFAULT MaxTime=30\nPartitionName=p Nodes=ALL Default=YES MaxNodes=1\n"
    )
    assert conf.controller_host == "h1"
    assert [(n.name, n.addr, n.cpus, n.gres, n.weight) for n in conf.nodes] == [
        ("gpu1", "10.0.0.1", 4, "gpu:1", 5),
        ("gpu2", "10.0.0.2", 4, "gpu:1", 5),
    ]
    part = conf.partitions[0]
    assert (part.nodes, part.max_time_min, part.max_nodes) == (("gpu1", "gpu2"), 30, 1)


def test_clients_on_a_node_without_munged_cannot_authenticate() -> None:
    c = make()
    c.slurm.munge_down.add("login")
    reply = c.handle("login", ["squeue"], "/")
    assert reply.stderr == (
        "squeue: error: If munged is up, restart with --num-threads=10\n"
        'squeue: error: Munge encode failed: Failed to access "/run/munge/munge.socket.2": No such file or directory (Did you start munged?)\n'
        "squeue: error: slurm_send_node_msg: auth_g_create: REQUEST_JOB_INFO has authentication error\n"
        "slurm_load_jobs error: Protocol authentication error\n"
    )
    assert reply.exit_code == 1
    sbatch = c.handle("login", ["sbatch", "--wrap", "true"], "/").stderr
    assert sbatch.endswith("sbatch: error: Batch job submission failed: Protocol authentication error\n")
    assert c.handle("compute-01", ["squeue", "-h"], "/").exit_code == 0


def test_failed_batch_job_shows_its_exit_code_and_reason() -> None:
    c = settled()
    files = {"/root/job.sh": b"#!/bin/bash\nsleep 5\nexit 3\n", "/etc/slurm/slurm.conf": CONF.encode()}
    c.read_file = lambda node, path: files.get(path)
    assert run(c, "sbatch", "job.sh") == "Submitted batch job 1\n"
    c.advance(10)
    c.tick()
    assert (
        run(c, "squeue", "-t", "F", "-h")
        == "                 1   compute   job.sh     root  F       0:05      1 (NonZeroExitCode)\n"
    )
    record = run(c, "scontrol", "show", "job", "1")
    assert "JobState=FAILED Reason=NonZeroExitCode" in record
    assert "ExitCode=3:0" in record
    assert "Command=/root/job.sh" in record


def test_resume_of_a_dead_node_goes_down_again_after_slurmd_timeout() -> None:
    c = make()
    c.slurm.stop_slurmd("compute-02")
    c.advance(31)
    run(c, "scontrol", "update", "NodeName=compute-02", "State=RESUME")
    assert "idle* compute-02" in run(c, "sinfo")
    c.advance(31)
    assert "down* compute-02" in run(c, "sinfo")


def test_scontrol_hostnames_reservations_and_reconfigure() -> None:
    c = make()
    assert run(c, "scontrol", "show", "hostnames", "compute-0[1-2]") == "compute-01\ncompute-02\n"
    assert run(c, "scontrol", "show", "hostlist", "compute-02,compute-01") == "compute-[01-02]\n"
    assert run(c, "scontrol", "show", "reservation") == "No reservations in the system\n"
    new_conf = CONF.replace("MaxTime=INFINITE State=UP", "MaxTime=30 State=DOWN")
    c.read_file = lambda node, path: new_conf.encode() if node == "head" else CONF.encode()
    run(c, "scontrol", "update", "NodeName=compute-02", "State=DRAIN", "Reason=keep")
    assert run(c, "scontrol", "reconfigure") == ""
    assert run(c, "sinfo", "-h", "-o", "%P %a %l") == "compute* down 30:00\n"
    assert "drain compute-02" in run(c, "sinfo")


def test_users_come_from_the_calling_nodes_passwd() -> None:
    passwd = b"root:x:0:0:root:/root:/bin/bash\nops:x:1000:1000::/home/ops:/bin/bash\n"
    files = {"/etc/passwd": passwd, "/etc/slurm/slurm.conf": CONF.encode()}
    c = Controller(parse_slurm_conf(CONF), read_file=lambda node, path: files.get(path))
    assert c.handle("login", ["squeue", "-u", "ops"], "/").stderr == ""
    assert c.handle("login", ["squeue", "-u", "1000", "-h"], "/").exit_code == 0
    assert (
        c.handle("login", ["squeue", "-u", "nobody"], "/").stderr == "squeue: error: Invalid user: nobody\n\n"
    )
    reply = c.handle("login", ["scancel", "-u", "nobody"], "/")
    assert (reply.stderr, reply.exit_code) == ("scancel: error: Invalid user name: nobody\n", 1)


def test_dependencies_memory_gres_and_exclusive() -> None:
    c = make()
    run(c, "sbatch", "--wrap", "sleep 10")
    run(c, "sbatch", "--dependency=afterok:1", "--wrap", "sleep 10")
    run(c, "sbatch", "-d", "afternotok:1", "--wrap", "true")
    assert run(c, "squeue", "-h", "-o", "%i %t %r") == "2 PD Dependency\n3 PD Dependency\n1 R None\n"
    assert "Dependency=afterok:1(unfulfilled)" in run(c, "scontrol", "show", "job", "2")
    c.advance(10)
    c.tick()
    assert run(c, "squeue", "-h", "-o", "%i %t %r") == "3 PD DependencyNeverSatisfied\n2 R None\n"
    reply = c.handle("login", ["sbatch", "--mem=8G", "--wrap", "true"], "/")
    assert reply.stderr == (
        "sbatch: error: Memory specification can not be satisfied\n"
        "sbatch: error: Batch job submission failed: Requested node configuration is not available\n"
    )
    reply = c.handle("login", ["sbatch", "--gres=gpu:1", "--wrap", "true"], "/")
    assert (
        reply.stderr
        == "sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification\n"
    )
    # A dependency on an unknown job is accepted (and met), as on Debian's 22.05.8; the refused
    # --mem=8G job above used up id 4.
    assert run(c, "sbatch", "-d", "afterok:99", "--wrap", "true") == "Submitted batch job 5\n"
    run(c, "sbatch", "--exclusive", "--mem=1000", "--wrap", "sleep 50")
    record = run(c, "scontrol", "show", "job", "6")
    assert "NumCPUs=2 " in record and "OverSubscribe=NO" in record and "MinMemoryNode=1000M" in record


def test_held_running_job_is_no_longer_eligible_and_a_cancelled_one_ends_by_signal() -> None:
    # Debian's 22.05.8: `scontrol hold` of a running batch job leaves EligibleTime=Unknown; a
    # cancelled running batch job ends ExitCode=0:15.
    c = settled()
    run(c, "sbatch", "--wrap", "sleep 120")
    run(c, "scontrol", "hold", "1")
    shown = run(c, "scontrol", "show", "job", "1")
    assert "JobState=RUNNING Reason=JobHeldAdmin" in shown and "EligibleTime=Unknown" in shown
    run(c, "scancel", "1")
    assert "ExitCode=0:15" in run(c, "scontrol", "show", "job", "1")
