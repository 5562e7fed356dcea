"""The Prolog and Epilog slurmd runs around a job: real scripts in the node, and what failure does.

slurm.conf's `Prolog=` names a program slurmd runs as root on the batch host before the job's
script starts. Here it is the node's own file, run by the node's init (`NodeAccess.start_process`),
so what the agent wrote in it, and what the node's filesystem holds when it runs, decide its exit.
A non-zero exit (or no exit within PrologEpilogTimeout) does what Slurm (22.05 to 24.x) does: slurmd logs
`[job N] prolog failed status=E:S` (src/slurmd/slurmd/req.c), slurmctld drains the node with the
reason "Prolog error" in its slurm user's name (node_mgr.c, validate_node_specs), and requeues the
batch job held, so squeue shows it pending "(launch failed requeued held)" until `scontrol release`.
`Epilog=` runs on every node of a job once it has ended; a failure drains the node "Epilog error"
(job_mgr.c, job_epilog_complete) and leaves the job's own record alone. A job whose process sleeps
uninterruptibly on a hung NFS mount (`hang_job`) stays COMPLETING; after UnkillableStepTimeout its
node is drained "Kill task failed", until the mount is forced off.

What this module leaves to others: Slurm state (slurmctld.py: drain, requeue, hold), the node's
processes (the runtime), and when to look (`sync_prologs` runs after every request and tick).
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field

from hpcgym.controller import numbers
from hpcgym.controller.commands.mountcmds import ShareAccess
from hpcgym.controller.services import lifecycle, xid
from hpcgym.controller.services.daemon import iso_time
from hpcgym.controller.services.journal import Entry, Priority
from hpcgym.controller.services.lifecycle import decode_wait_status
from hpcgym.controller.services.manager import ServiceManager
from hpcgym.controller.slurmctld import SlurmState
from hpcgym.controller.state import JobState, Reason

PROLOG_ERROR = "Prolog error"
EPILOG_ERROR = "Epilog error"
KILL_TASK_FAILED = "Kill task failed"
DEFAULT_UNKILLABLE_S = 60
# The compute image's kernel, as `uname -r` and the hung-task report name it.
KERNEL_RELEASE = "5.14.0-362.8.1.el9_3.x86_64"
LAUNCH_FAILED_HELD = "launch failed requeued held"
# How long one sync waits in all, in host seconds and under the controller's lock, for the scripts
# it has just started (together, not each): a site's checks take milliseconds, so one that fails at
# once drains its node before the next command looks; one that runs longer is looked at again at
# each later sync, and killed once PrologEpilogTimeout (virtual seconds) has passed. The node
# controls how long its scripts run, so no request waits longer than this for them, however many.
WAIT_BUDGET_S = 0.25
# At most this many scripts are started per sync (each start is a round trip to the node's init,
# and a tick or `advance` has no request deadline to stop at): a job array ending at once starts
# its Epilogs over the next syncs. A run's PrologEpilogTimeout counts from its own start.
MAX_STARTS_PER_SYNC = 16
POLL_S = 0.01
# Slurm's default is no timeout; the simulation needs a bound on a prolog that never ends.
DEFAULT_TIMEOUT_S = 300


@dataclass
class PrologRun:
    job_id: int
    node: str
    path: str
    started_s: int
    epilog: bool = False
    pid: int | None = None
    # A program that could not be started at all: what the shell would have returned (126, 127).
    exec_status: int | None = None
    # Not started yet: the request that asked ran out of time first; a later sync starts it.
    pending: bool = True


@dataclass
class JobLife:
    """Per episode: the Prolog and Epilog runs slurmd has under way, and the job starts and ends seen."""

    runs: list[PrologRun] = field(default_factory=list)
    seen: set[tuple[int, int]] = field(default_factory=set)
    ended: set[tuple[int, int]] = field(default_factory=set)
    # Jobs whose process sleeps uninterruptibly on an NFS share that stopped answering.
    hung: dict[int, HungTask] = field(default_factory=dict)


@dataclass
class HungTask:
    """A job's process in D state on `point` of `node`: no signal ends it while the mount hangs."""

    node: str
    point: str
    comm: str
    pid: int
    reported: bool = False


def hang_job(cluster: SlurmState, life: JobLife, job_id: int, task: HungTask) -> None:
    """Scenario hook: the job's process blocks in the kernel on the share; its end will wait on it."""
    life.hung[job_id] = task
    cluster.unkillable.add(job_id)


def sync_prologs(cluster: SlurmState, services: ServiceManager, life: JobLife) -> None:
    """Run the Prolog of each batch job started, and the Epilog of each job ended, since the last look.

    Then act on the runs that have ended: a failure drains the node (and a Prolog's holds the job).
    """
    prolog = cluster.conf.options.get("prolog", "").strip()
    epilog = cluster.conf.options.get("epilog", "").strip()
    for job in list(cluster.jobs.values()):
        key = (job.job_id, job.restarts)
        if job.state is JobState.RUNNING and job.batch and key not in life.seen:
            life.seen.add(key)
            if prolog and job.batch_host:
                life.runs.append(PrologRun(job.job_id, job.batch_host, prolog, cluster.now_s))
        elif (
            job.state.is_finished()
            and job.nodes
            and key not in life.ended
            and job.job_id not in cluster.unkillable
        ):
            # slurmd runs the Epilog on every node of the allocation once the job's steps are gone.
            life.ended.add(key)
            for node in job.nodes if epilog else ():
                life.runs.append(PrologRun(job.job_id, node, epilog, cluster.now_s, epilog=True))
    started: list[PrologRun] = []
    for run in [run for run in life.runs if run.pending][:MAX_STARTS_PER_SYNC]:
        if _start(services, run, cluster.now_s):
            started.append(run)
    _wait(services, started)
    _check_hung(cluster, services, life)
    for run in list(life.runs):
        status = _status(services, run, cluster.now_s, _timeout_s(cluster))
        if status is None:
            continue
        life.runs.remove(run)
        code, value = decode_wait_status(status)
        if code == "exited" and value == 0:
            continue
        exit_code, signal = (value, 0) if code == "exited" else (0, value)
        if run.epilog:
            _epilog_failed(cluster, services, run, exit_code, signal)
        else:
            _failed(cluster, services, run, exit_code, signal)


def _epilog_failed(
    cluster: SlurmState, services: ServiceManager, run: PrologRun, exit_code: int, signal: int
) -> None:
    # slurmd (req.c, _rpc_terminate_job) and slurmctld (job_mgr.c, job_epilog_complete): the job's
    # record keeps its own end; only the node is drained.
    text = f"error: [job {run.job_id}] epilog failed status={exit_code}:{signal}"
    _log(cluster, services, run.node, "slurmd", text)
    text = f"error: job_epilog_complete: JobId={run.job_id} epilog error on {run.node}, draining the node"
    _log(cluster, services, services.controller_host, "slurmctld", text)
    node = cluster.nodes.get(run.node)
    if node is not None:
        cluster.drain(node, EPILOG_ERROR, cluster.slurm_user)


def _check_hung(cluster: SlurmState, services: ServiceManager, life: JobLife) -> None:
    # slurmstepd sends SIGKILL at the job's end and waits UnkillableStepTimeout (slurm.conf(5),
    # default 60 s) for the step's processes to go; one asleep in the kernel on a dead NFS server
    # does not, so the step is reported and the node drained "Kill task failed", and the job stays
    # COMPLETING. `umount -f` aborts the mount's outstanding calls: the process gets EIO and exits.
    timeout_s = _conf_seconds(cluster, "unkillablesteptimeout", DEFAULT_UNKILLABLE_S)
    access = services.access
    for job_id, task in list(life.hung.items()):
        job = cluster.jobs.get(job_id)
        gone = isinstance(access, ShareAccess) and not access.is_share_mounted(task.node, task.point)
        if job is None or gone:
            del life.hung[job_id]
            cluster.unkillable.discard(job_id)
            continue
        if task.reported or not job.completing or job.end_s is None or cluster.now_s - job.end_s < timeout_s:
            continue
        task.reported = True
        stamp = iso_time(services.clocks.now_s)
        text = f"error: *** JOB {job_id} STEPD TERMINATED ON {task.node} AT {stamp} "
        text += "DUE TO JOB NOT ENDING WITH SIGNALS ***"
        _log(cluster, services, task.node, "slurmd", text)
        text = f"error: slurmd error running JobId={job_id} on node(s)={task.node}: Kill task failed"
        _log(cluster, services, services.controller_host, "slurmctld", text)
        journal = services.systemd.journal(task.node)
        for line in (
            f"INFO: task {task.comm}:{task.pid} blocked for more than 122 seconds.",
            f"      Not tainted {KERNEL_RELEASE} #1",
            '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.',
        ):
            journal.add(Entry(services.clocks.now_s, xid.KERNEL, 0, "", line, Priority.ERR))
        node = cluster.nodes.get(task.node)
        if node is not None:
            cluster.drain(node, KILL_TASK_FAILED, cluster.slurm_user)


def _timeout_s(cluster: SlurmState) -> int:
    return _conf_seconds(cluster, "prologepilogtimeout", DEFAULT_TIMEOUT_S)


def _conf_seconds(cluster: SlurmState, key: str, default: int) -> int:
    # The agent writes slurm.conf: a value that is not plain ASCII digits ("²", "٣", a 5,000-digit
    # number) is read as unset, as the default, and never raises.
    value = numbers.to_int(cluster.conf.options.get(key, "").strip())
    return default if value is None else value


def _start(services: ServiceManager, run: PrologRun, now_s: int) -> bool:
    """Ask the node's init to start the run's script; False if it is left for a later sync."""
    try:
        run.pid = services.access.start_process(run.node, "prolog", [run.path], program=run.path)
    except OSError as error:
        if error.errno == errno.ETIME:
            # This request's time is spent (many starts, or a slow node): nothing failed, so the
            # script is started on a later sync, not read as an exit of 126.
            return False
        # execve failed: a missing script reads as the shell's 127, one not executable as 126.
        # (A node whose init cannot be reached raises on: the episode is broken, not the script.)
        run.exec_status = (127 if error.errno == errno.ENOENT else 126) << 8
    run.pending, run.started_s = False, now_s
    return True


def _wait(services: ServiceManager, runs: list[PrologRun]) -> None:
    # The controller's lock is held here, so the wait is short and bounded in all: a script that
    # calls a cluster tool (whose request waits on that lock), or sleeps, is looked at next time.
    deadline = time.monotonic() + WAIT_BUDGET_S
    waiting = [(run.node, run.pid) for run in runs if run.pid is not None]
    while waiting and time.monotonic() < deadline:
        waiting = [(node, pid) for node, pid in waiting if services.access.is_alive(node, pid)]
        if waiting:
            time.sleep(POLL_S)


def _status(services: ServiceManager, run: PrologRun, now_s: int, timeout_s: int) -> int | None:
    if run.pending:
        return None
    if run.pid is None:
        return run.exec_status
    if services.access.is_alive(run.node, run.pid):
        if now_s - run.started_s < timeout_s:
            return None
        services.access.kill(run.node, run.pid, 9)
        return 9
    status = services.access.exit_status(run.node, run.pid)
    return 9 if status is None else status


def _failed(
    cluster: SlurmState, services: ServiceManager, run: PrologRun, exit_code: int, signal: int
) -> None:
    _log(
        cluster,
        services,
        run.node,
        "slurmd",
        f"error: [job {run.job_id}] prolog failed status={exit_code}:{signal}",
    )
    ctl = services.controller_host
    _log(
        cluster,
        services,
        ctl,
        "slurmctld",
        f"error: validate_node_specs: Prolog or job env setup failure on node {run.node}, draining the node",
    )
    node = cluster.nodes.get(run.node)
    if node is not None:
        cluster.drain(node, PROLOG_ERROR, cluster.slurm_user)
    job = cluster.jobs.get(run.job_id)
    if job is None or job.state is not JobState.RUNNING:
        return
    cluster.requeue(job)
    cluster.hold(job, Reason.HELD_ADMIN)
    job.reason_desc = LAUNCH_FAILED_HELD
    # As Debian's 22.05.8 shows such a job (fidelity state prolog-fails): SubmitTime is the requeue,
    # it is eligible from its new BeginTime, and it accrues nothing while held.
    job.eligible_s, job.accrue_s = job.begin_s, None


def _log(cluster: SlurmState, services: ServiceManager, node: str, daemon: str, text: str) -> None:
    lifecycle.log_slurm_daemon(services, cluster.conf, cluster.slurm_user, node, daemon, text)
