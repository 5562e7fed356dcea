"""slurmctld's main scheduler, simplified: who starts now, where, and why the others wait.

Pending jobs are tried in priority order. Reasons follow slurmctld's: held, BeginTime, partition
limits, required nodes unavailable, Priority (a better job in the partition is waiting), too few usable
nodes (the "Nodes required for job are DOWN, DRAINED or reserved ..." description), Resources.
Placement imitates select/cons_tres with CR_Core: best fit, then slurm.conf order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpcgym.controller.arrays import is_meta, running_tasks
from hpcgym.controller.hostlist import compress_hostlist
from hpcgym.controller.state import (
    NODES_UNAVAILABLE_DESC,
    RESERVED_FOR_MAINT_DESC,
    RESERVED_FOR_OTHER_DESC,
    Job,
    JobState,
    NodeFlag,
    Partition,
    PartitionState,
    Reason,
    ReservationFlag,
    ReservationState,
    SlurmNode,
    Step,
    TimeLimitSource,
)

if TYPE_CHECKING:
    from hpcgym.controller.slurmctld import SlurmState


def schedule(cluster: SlurmState) -> None:
    """One pass of the main scheduler over pending jobs, highest priority first.

    A job that cannot start blocks its partition for the rest of the pass: later jobs there wait
    with `Priority`, and jobs elsewhere may not take its partition's nodes (which is why a big job
    in an overlapping partition waits "for jobs in higher priority partitions", capture 50).
    """
    now = cluster.now_s
    _show_partition_limits(cluster)
    if cluster.conf.controller_host in cluster.munge_down:
        # Without its munged slurmctld cannot sign a launch: nothing starts (Debian's 22.05.8 left a
        # batch job pending with reason None while munged was stopped).
        return
    blocked_parts: set[str] = set()
    blocked_nodes: set[str] = set()
    pending = [job for job in cluster.jobs.values() if job.state is JobState.PENDING]
    for job in sorted(pending, key=lambda j: (-j.priority, j.job_id)):
        part = cluster.partitions[job.partition]
        if job.held is not None:
            # A hold keeps its own words: a failed launch's "launch failed requeued held" (joblife.py).
            job.reason_desc = job.reason_desc if job.reason is job.held else None
            job.reason = job.held
            continue
        dependency = _dependency_reason(cluster, job)
        if dependency is not None:
            job.reason, job.reason_desc = dependency, None
            continue
        if job.batch and now < cluster.first_pass_s(job):
            continue
        if job.unseen_until_s is not None:
            if now < job.unseen_until_s:
                continue
            job.unseen_until_s = None
            if job.batch and job.accrue_s is None:
                job.accrue_s = job.begin_s
        if job.begin_s is not None and now < job.begin_s:
            job.reason, job.reason_desc = Reason.BEGIN_TIME, None
            continue
        limit = _partition_limit(job, part)
        if limit is not None:
            job.reason, job.reason_desc = limit, None
            continue
        qos_limit = cluster.accounting.limit_reason(cluster, job)
        if qos_limit is not None:
            # acct_policy_job_runnable_pre_select(): held by its QOS, the job does not hold its
            # partition back from the jobs after it.
            job.reason, job.reason_desc = qos_limit, None
            continue
        if not _licenses_free(cluster, job):
            # license_job_test() fails before any node is looked at; the partition stays open to
            # the jobs after it.
            job.reason, job.reason_desc = Reason.LICENSES, None
            continue
        held_by_resv = _reservation_block(cluster, job)
        if isinstance(held_by_resv, tuple):
            # Unlike a down node it asked for, a reservation in its way does not hold the partition
            # back from the jobs after it (22.05.8: a -N4 job behind one still said "Nodes required").
            job.reason, job.reason_desc = held_by_resv
            continue
        # Required nodes that are down, drained or held for a higher-priority job are the more
        # specific reason, so they win over `Priority` (capture 60, srun --immediate -w).
        unavailable = _unavailable_required(cluster, job, blocked_nodes)
        if unavailable:
            job.reason = Reason.REQ_NODE_NOT_AVAIL
            job.reason_desc = f"ReqNodeNotAvail, UnavailableNodes:{compress_hostlist(unavailable)}"
            blocked_parts.add(job.partition)
            continue
        if job.partition in blocked_parts:
            job.reason, job.reason_desc = Reason.PRIORITY, None
            continue
        if is_meta(job):
            # The array's record is eligible once the scheduler has looked at it; one pass starts
            # as many of its tasks as fit (all six of --array=1-6 started in one second, 22.05.8).
            if job.eligible_s is None:
                job.eligible_s = now
            while is_meta(job):
                if job.array_throttle and running_tasks(list(cluster.jobs.values()), job.job_id) >= (
                    job.array_throttle
                ):
                    job.reason, job.reason_desc = Reason.ARRAY_TASK_LIMIT, None
                    break
                if not _try_start(cluster, job, part, blocked_nodes | held_by_resv):
                    blocked_parts.add(job.partition)
                    blocked_nodes.update(part.nodes)
                    break
            continue
        if not _try_start(cluster, job, part, blocked_nodes | held_by_resv):
            blocked_parts.add(job.partition)
            blocked_nodes.update(part.nodes)


def _show_partition_limits(cluster: SlurmState) -> None:
    # A pending job with no limit of its own (NO_VAL) is shown with its partition's MaxTime as it
    # is now (pack_job()), and a reservation judges it by that too (_get_job_duration()).
    for job in cluster.jobs.values():
        if job.state is JobState.PENDING and job.time_limit_source is TimeLimitSource.PARTITION:
            part = cluster.partitions.get(job.partition)
            if part is not None:
                job.time_limit_min = part.conf.max_time_min


def _dependency_reason(cluster: SlurmState, job: Job) -> Reason | None:
    # Satisfied dependencies are dropped, as slurmctld does; a job record already purged counts as
    # satisfied. An afterok on a failed job (or afternotok on a completed one) can never be met.
    waiting = []
    for kind, dep_id in job.dependency:
        other = cluster.jobs.get(dep_id)
        if other is None:
            continue
        finished = other.state.is_finished() and not other.completing
        ok = other.state is JobState.COMPLETED
        if kind == "after" and other.state is not JobState.PENDING:
            continue
        if kind == "afterany" and finished:
            continue
        if finished and ((kind == "afterok" and not ok) or (kind == "afternotok" and ok)):
            job.dependency_failed = True
            return Reason.DEPENDENCY_NEVER
        if finished and kind in ("afterok", "afternotok"):
            continue
        waiting.append((kind, dep_id))
    if job.dependency and not waiting:
        # The job becomes eligible (and accrues) from the moment its dependencies are met (22.05.8).
        job.eligible_s = cluster.now_s
        if job.batch:
            job.accrue_s = cluster.now_s
    job.dependency = waiting
    return Reason.DEPENDENCY if waiting else None


def _licenses_free(cluster: SlurmState, job: Job) -> bool:
    if not job.license_counts:
        return True
    total = dict(cluster.conf.licenses)
    used = cluster.licenses_used()
    return all(used.get(name, 0) + count <= total.get(name, 0) for name, count in job.license_counts)


def _reservation_block(cluster: SlurmState, job: Job) -> tuple[Reason, str | None] | set[str]:
    """What reservations do to `job` now: the reason it waits, or the nodes it may not use.

    As job_test_resv(): a job of a reservation runs only on its nodes and only while it is active
    (else Reservation); a job without one may not use the nodes of a reservation whose window meets
    its own (now to its time limit, or forever), and it waits "Reserved for maintenance" when a MAINT
    reservation holds every node of its partition, or "May be reserved for other job" when it asked
    for such a node by name.
    """
    now = cluster.now_s
    if job.reservation is not None:
        resv = cluster.reservations.get(job.reservation)
        if resv is None or resv.state_at(now) is not ReservationState.ACTIVE:
            return Reason.RESERVATION, None
        return {name for name in cluster.partitions[job.partition].nodes if name not in resv.nodes}
    end = None if job.time_limit_min is None else now + job.time_limit_min * 60
    part_nodes = set(cluster.partitions[job.partition].nodes)
    held: set[str] = set()
    for resv in cluster.reservations.values():
        if not resv.overlaps(now, end):
            continue
        if resv.flags & ReservationFlag.MAINT and part_nodes <= set(resv.nodes):
            return Reason.REQ_NODE_NOT_AVAIL, RESERVED_FOR_MAINT_DESC
        if set(job.req_nodes) & set(resv.nodes):
            return Reason.REQ_NODE_NOT_AVAIL, RESERVED_FOR_OTHER_DESC
        held |= set(resv.nodes)
    return held


def part_limit_reason(job: Job, part: Partition) -> Reason | None:
    """Why the partition's limits keep `job` from running (None: they do not)."""
    return _partition_limit(job, part)


def _partition_limit(job: Job, part: Partition) -> Reason | None:
    if part.state is PartitionState.DOWN or part.state is PartitionState.DRAIN:
        return Reason.PARTITION_DOWN
    if part.state is PartitionState.INACTIVE:
        return Reason.PARTITION_INACTIVE
    if job.min_nodes > len(part.nodes):
        return Reason.PARTITION_CONFIG
    if part.conf.max_nodes is not None and job.min_nodes > part.conf.max_nodes:
        return Reason.PARTITION_NODE_LIMIT
    # job_limits_check(): a limit of the job's own above MaxTime holds it (EnforcePartLimits=NO, the
    # default, let it be queued); one an operator set does not, nor does none (NO_VAL).
    judged = job.time_limit_source in (TimeLimitSource.JOB, TimeLimitSource.START)
    if judged and exceeds(job.time_limit_min, part.conf.max_time_min):
        return Reason.PARTITION_TIME_LIMIT
    return None


def exceeds(limit_min: int | None, max_min: int | None) -> bool:
    """Whether a time limit (None: UNLIMITED) is longer than a maximum (None: UNLIMITED)."""
    return max_min is not None and (limit_min is None or limit_min > max_min)


def _unavailable_required(cluster: SlurmState, job: Job, blocked_nodes: set[str]) -> list[str]:
    return [
        name
        for name in job.req_nodes
        if name in blocked_nodes or name in job.exc_nodes or not cluster.nodes[name].is_usable()
    ]


def _try_start(cluster: SlurmState, job: Job, part: Partition, blocked_nodes: set[str]) -> bool:
    candidates = [
        cluster.nodes[name]
        for name in part.nodes
        if name not in job.exc_nodes and name not in blocked_nodes and cluster.nodes[name].is_usable()
    ]
    if len(candidates) < job.min_nodes:
        job.reason, job.reason_desc = Reason.RESOURCES, NODES_UNAVAILABLE_DESC
        return False
    placement = _place(cluster, job, [n for n in candidates if not n.has(NodeFlag.COMPLETING)])
    if placement is None:
        job.reason, job.reason_desc = Reason.RESOURCES, None
        return False
    if is_meta(job):
        job = cluster.take_array_task(job)
        # A task is eligible from the moment it is split off to start; it shows no AccrueTime
        # (Debian's 22.05.8, two runs of three; the third showed the start).
        job.eligible_s = cluster.now_s
    _start(cluster, job, placement)
    return True


def _place(cluster: SlurmState, job: Job, nodes: list[SlurmNode]) -> dict[str, int] | None:
    # select/cons_tres with CR_Core, simplified: best fit (fewest free CPUs that still fit), then
    # slurm.conf order; required nodes first. Returns CPUs to allocate per node.
    cpt = job.cpus_per_task
    fitting = [n for n in nodes if n.cpus_free >= cpt and not (job.exclusive and n.cpus_alloc)]
    order = {name: i for i, name in enumerate(cluster.nodes)}
    required = [n for n in fitting if n.name in job.req_nodes]
    if len(required) < len(job.req_nodes):
        return None
    others = sorted(
        (n for n in fitting if n.name not in job.req_nodes), key=lambda n: (n.cpus_free, order[n.name])
    )
    tasks = job.num_tasks or job.min_nodes
    max_nodes = job.max_nodes or max(job.min_nodes, tasks)
    if job.min_nodes > 1 and not required:
        block = _best_block(fitting, order, job.min_nodes, tasks, cpt)
        if block is not None:
            if job.exclusive:
                return {n.name: n.conf.cpus for n in block}
            return _distribute(block, tasks, cpt)
    for count in range(max(job.min_nodes, len(required)), max_nodes + 1):
        chosen = required + others[: count - len(required)]
        if len(chosen) < count:
            return None
        capacity = sum(n.cpus_free // cpt for n in chosen)
        if capacity < tasks:
            # A smaller set of roomier nodes may do: prefer the ones with the most free CPUs.
            roomy = sorted(others, key=lambda n: (-n.cpus_free, order[n.name]))
            chosen = required + roomy[: count - len(required)]
            capacity = sum(n.cpus_free // cpt for n in chosen)
        if capacity >= tasks and len(chosen) == count:
            chosen.sort(key=lambda n: order[n.name])
            if job.exclusive:
                return {n.name: n.conf.cpus for n in chosen}
            return _distribute(chosen, tasks, cpt)
    return None


def _best_block(
    fitting: list[SlurmNode], order: dict[str, int], count: int, tasks: int, cpt: int
) -> list[SlurmNode] | None:
    # cons_tres places a multi-node job in runs of consecutive usable nodes: the smallest run that
    # holds the whole job, its first nodes (Debian's 22.05.8: with compute-01 half used and
    # compute-02 full, `sbatch -N2` went to compute-[03-04], not compute-01 and compute-03).
    runs: list[list[SlurmNode]] = []
    for node in sorted(fitting, key=lambda n: order[n.name]):
        if runs and order[runs[-1][-1].name] + 1 == order[node.name]:
            runs[-1].append(node)
        else:
            runs.append([node])
    best = None
    for run in runs:
        chosen = run[:count]
        fits = len(chosen) == count and sum(n.cpus_free // cpt for n in chosen) >= tasks
        if fits and (best is None or len(run) < best[0]):
            best = (len(run), chosen)
    return None if best is None else best[1]


def _distribute(nodes: list[SlurmNode], tasks: int, cpt: int) -> dict[str, int]:
    # Block distribution: one task per node first, then fill nodes in order.
    counts = {n.name: 1 for n in nodes}
    left = tasks - len(nodes)
    for node in nodes:
        room = node.cpus_free // cpt - counts[node.name]
        take = min(room, max(left, 0))
        counts[node.name] += take
        left -= take
    return {name: count * cpt for name, count in counts.items()}


def _start(cluster: SlurmState, job: Job, placement: dict[str, int]) -> None:
    now = cluster.now_s
    if job.time_limit_source is TimeLimitSource.PARTITION:
        # select_nodes(): a job without a limit of its own takes its partition's DefaultTime, or
        # else its MaxTime, as they are when it starts, and keeps it.
        conf = cluster.partitions[job.partition].conf
        job.time_limit_min = conf.default_time_min if conf.default_time_min is not None else conf.max_time_min
        job.time_limit_source = TimeLimitSource.START
    job.state = JobState.RUNNING
    job.reason, job.reason_desc = Reason.NONE, None
    job.start_s = now
    job.last_sched_eval_s = now
    job.nodes = list(placement)
    job.cpus_by_node = dict(placement)
    job.allocated = True
    for name, cpus in placement.items():
        # LastBusyTime moves when a node goes idle again, not when a job starts (Debian's 22.05.8).
        cluster.nodes[name].cpus_alloc += cpus
    job.batch_host = job.nodes[0]
    if job.batch:
        job.steps = [Step(f"{job.job_id}.batch", "batch", now, [job.nodes[0]], placement[job.nodes[0]], 1)]
    else:
        tasks = job.num_tasks or len(job.nodes)
        job.steps = [Step(f"{job.job_id}.0", job.name, now, list(job.nodes), job.cpus, tasks)]
    for hook in cluster.launch_hooks:
        hook(job)
