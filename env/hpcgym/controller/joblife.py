"""The Prolog slurmd runs before a batch job: a real script in the node, and what its failure does.

slurm.conf's `Prolog=` names a program slurmd runs as root on the batch host before the job's
script starts. Here it is the node's own file, run by the node's init (`NodeAccess.start_process`),
so what the agent wrote in it, and what the node's filesystem holds when it runs, decide its exit.
A non-zero exit (or no exit within PrologEpilogTimeout) does what Slurm 23.x does: slurmd logs
`[job N] prolog failed status=E:S` (src/slurmd/slurmd/req.c), slurmctld drains the node with the
reason "Prolog error" in its slurm user's name (node_mgr.c, validate_node_specs), and requeues the
batch job held, so squeue shows it pending "(launch failed requeued held)" until `scontrol release`.

What this module leaves to others: Slurm state (cluster.py: drain, requeue, hold), the node's
processes (the runtime), and when to look (`sync_prologs` runs after every request and tick).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hpcgym.controller.cluster import Cluster
from hpcgym.controller.services import lifecycle, slurm
from hpcgym.controller.services.daemon import append_log, iso_time, lookup_ids
from hpcgym.controller.services.lifecycle import decode_wait_status
from hpcgym.controller.services.manager import ServiceManager
from hpcgym.controller.state import JobState, Reason
from hpcgym.errors import ControllerError

PROLOG_ERROR = "Prolog error"
LAUNCH_FAILED_HELD = "launch failed requeued held"
# How long one sync waits, in host seconds, for a prolog it has just started: a site's checks take
# milliseconds; one that runs longer is looked at again at each later request, and killed once
# PrologEpilogTimeout (virtual seconds) has passed.
FIRST_WAIT_S = 2.0
POLL_S = 0.01
# Slurm's default is no timeout; the simulation needs a bound on a prolog that never ends.
DEFAULT_TIMEOUT_S = 300


@dataclass
class PrologRun:
    job_id: int
    node: str
    pid: int | None
    started_s: int
    # A program that could not be started at all: what the shell would have returned (126, 127).
    exec_status: int | None = None


@dataclass
class JobLife:
    """Per episode: the prolog runs slurmd has under way, and the job starts already seen."""

    runs: list[PrologRun] = field(default_factory=list)
    seen: set[tuple[int, int]] = field(default_factory=set)


def sync_prologs(cluster: Cluster, services: ServiceManager, life: JobLife) -> None:
    """Start the prolog of every batch job that started since the last look; act on those that end."""
    path = cluster.conf.options.get("prolog", "").strip()
    for job in list(cluster.jobs.values()):
        key = (job.job_id, job.restarts)
        if job.state is not JobState.RUNNING or not job.batch or key in life.seen:
            continue
        life.seen.add(key)
        if path and job.batch_host:
            life.runs.append(_start(services, job.job_id, job.batch_host, path, cluster.now_s))
    for run in list(life.runs):
        status = _status(services, run, cluster.now_s, _timeout_s(cluster))
        if status is None:
            continue
        life.runs.remove(run)
        code, value = decode_wait_status(status)
        if code == "exited" and value == 0:
            continue
        exit_code, signal = (value, 0) if code == "exited" else (0, value)
        _failed(cluster, services, run, exit_code, signal)


def _timeout_s(cluster: Cluster) -> int:
    raw = cluster.conf.options.get("prologepilogtimeout", "")
    return int(raw) if raw.isdigit() else DEFAULT_TIMEOUT_S


def _start(services: ServiceManager, job_id: int, node: str, path: str, now_s: int) -> PrologRun:
    try:
        pid = services.access.start_process(node, "prolog", [path], program=path)
    except OSError as error:
        # execve failed: a missing script reads as the shell's 127, one not executable as 126.
        return PrologRun(job_id, node, None, now_s, exec_status=(127 if error.errno == 2 else 126) << 8)
    except ControllerError:
        return PrologRun(job_id, node, None, now_s, exec_status=1 << 8)
    run = PrologRun(job_id, node, pid, now_s)
    deadline = time.monotonic() + FIRST_WAIT_S
    while services.access.is_alive(node, pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return run


def _status(services: ServiceManager, run: PrologRun, now_s: int, timeout_s: int) -> int | None:
    if run.pid is None:
        return run.exec_status
    if services.access.is_alive(run.node, run.pid):
        if now_s - run.started_s < timeout_s:
            return None
        services.access.kill(run.node, run.pid, 9)
        return 9
    status = services.access.exit_status(run.node, run.pid)
    return 9 if status is None else status


def _failed(cluster: Cluster, services: ServiceManager, run: PrologRun, exit_code: int, signal: int) -> None:
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


LOG_FILES = {"slurmd": "slurmdlogfile", "slurmctld": "slurmctldlogfile"}


def _log(cluster: Cluster, services: ServiceManager, node: str, daemon: str, text: str) -> None:
    # As the daemon's other lines: "slurmd: error: ..." in its unit's journal, and the same text,
    # stamped, in its log file (SlurmdLogFile / SlurmctldLogFile).
    runtime = services.node_state(node).units.get(f"{daemon}.service")
    if runtime is None or not runtime.main_pid:
        return
    for line in slurm.daemon_lines(daemon, [text]):
        lifecycle.log_line(services, node, runtime, daemon, runtime.main_pid, line)
    path = slurm.slurmd_path(cluster.conf, LOG_FILES[daemon], "", node)
    uid, gid = lookup_ids(services.access, node, cluster.slurm_user if daemon == "slurmctld" else "root")
    append_log(services.access, node, path, [f"[{iso_time(services.now_s)}.000] {text}"], uid, gid)
