"""Cluster state as slurmctld keeps it: nodes, partitions, jobs, and their state enums.

Enum values are the spellings the tools print; the naming rules that combine a base state with flags
(`IDLE+DRAIN`, `drng`, `idle*`) live next to the enums so every tool prints a node the same way.
What changes state (scheduling, timeouts, updates) lives in `slurmctld.py`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from hpcgym.controller.slurmconf import NodeConf, PartitionConf
from hpcgym.controller.timefmt import TimeLimit


class NodeBase(enum.Enum):
    """A node's base state; IDLE/MIXED/ALLOCATED follow from its allocated CPUs."""

    UNKNOWN = "UNKNOWN"
    DOWN = "DOWN"
    IDLE = "IDLE"
    ALLOCATED = "ALLOCATED"
    MIXED = "MIXED"
    FUTURE = "FUTURE"


class NodeFlag(enum.Flag):
    """Flags slurmctld ORs onto the base state, in the order scontrol prints them."""

    NONE = 0
    COMPLETING = enum.auto()
    DRAIN = enum.auto()
    FAIL = enum.auto()
    MAINT = enum.auto()
    # In an active reservation (set with MAINT by slurmctld's periodic pass, `reservations.py`).
    RESERVED = enum.auto()
    NOT_RESPONDING = enum.auto()
    # The last registration reported less than slurm.conf configures (node_mgr.c NODE_STATE_INVALID_REG).
    INVALID_REG = enum.auto()


# sinfo's compact spellings (%t) of base states; flags and '*' are added by `node_state_compact`.
_COMPACT = {
    NodeBase.UNKNOWN: "unk",
    NodeBase.DOWN: "down",
    NodeBase.IDLE: "idle",
    NodeBase.ALLOCATED: "alloc",
    NodeBase.MIXED: "mix",
    NodeBase.FUTURE: "futr",
}


class PartitionState(enum.Enum):
    UP = "UP"
    DOWN = "DOWN"
    DRAIN = "DRAIN"
    INACTIVE = "INACTIVE"


class JobState(enum.Enum):
    """A job's base state; the value is the long name, `compact` the two-letter one."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"

    @property
    def compact(self) -> str:
        return _JOB_COMPACT[self]

    def is_finished(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING, JobState.SUSPENDED)


_JOB_COMPACT = {
    JobState.PENDING: "PD",
    JobState.RUNNING: "R",
    JobState.SUSPENDED: "S",
    JobState.COMPLETED: "CD",
    JobState.CANCELLED: "CA",
    JobState.FAILED: "F",
    JobState.TIMEOUT: "TO",
    JobState.NODE_FAIL: "NF",
    JobState.PREEMPTED: "PR",
    JobState.BOOT_FAIL: "BF",
    JobState.DEADLINE: "DL",
    JobState.OUT_OF_MEMORY: "OOM",
}


class TimeLimitSource(enum.Enum):
    """Where a job's time limit comes from: slurmctld's NO_VAL and `limit_set.time`, as one value."""

    # --time, or the partition's DefaultTime filled in at submit (_valid_job_part_acct):
    # partition limits judge it at every pass.
    JOB = "job"
    # Neither (NO_VAL): the job shows its partition's MaxTime of the moment (pack_job) and no
    # partition time limit holds it back; it takes DefaultTime or MaxTime when it starts.
    PARTITION = "partition"
    # A NO_VAL limit filled in when the job started (select_nodes(), limit_set.time = 1).
    START = "start"
    # Set by root or SlurmUser with `scontrol update` (ADMIN_SET_LIMIT): partition time limits
    # no longer hold the job back (job_limits_check).
    ADMIN = "admin"


# The states squeue -t accepts, in the order its error message lists them.
SQUEUE_STATE_NAMES = (
    "PENDING,RUNNING,SUSPENDED,COMPLETED,CANCELLED,FAILED,TIMEOUT,NODE_FAIL,PREEMPTED,BOOT_FAIL,DEADLINE,"
    "OUT_OF_MEMORY,COMPLETING,CONFIGURING,RESIZING,RESV_DEL_HOLD,REQUEUED,REQUEUE_FED,REQUEUE_HOLD,REVOKED,"
    "SIGNALING,SPECIAL_EXIT,STAGE_OUT,STOPPED"
)


class Reason(enum.Enum):
    """Why a job waits or ended (slurmctld's `job_state_reason`), spelled as the tools print it."""

    NONE = "None"
    PRIORITY = "Priority"
    RESOURCES = "Resources"
    DEPENDENCY = "Dependency"
    DEPENDENCY_NEVER = "DependencyNeverSatisfied"
    PARTITION_NODE_LIMIT = "PartitionNodeLimit"
    PARTITION_TIME_LIMIT = "PartitionTimeLimit"
    PARTITION_DOWN = "PartitionDown"
    PARTITION_INACTIVE = "PartitionInactive"
    PARTITION_CONFIG = "PartitionConfig"
    HELD_ADMIN = "JobHeldAdmin"
    HELD_USER = "JobHeldUser"
    BEGIN_TIME = "BeginTime"
    REQ_NODE_NOT_AVAIL = "ReqNodeNotAvail"
    NODE_DOWN = "NodeDown"
    TIME_LIMIT = "TimeLimit"
    NON_ZERO_EXIT = "NonZeroExitCode"
    ARRAY_TASK_LIMIT = "JobArrayTaskLimit"
    LICENSES = "Licenses"
    RESERVATION = "Reservation"
    # Accounting limits (issue 17): a QOS's MaxTRESPerUser and GrpTRES on cpu.
    QOS_MAX_CPU_PER_USER = "QOSMaxCpuPerUserLimit"
    QOS_GRP_CPU = "QOSGrpCpuLimit"


# What _build_node_list() says when a job without a reservation needs nodes a MAINT reservation holds
# (every node of its partition, or one it asked for by name): squeue shows it in place of the reason.
RESERVED_FOR_MAINT_DESC = "ReqNodeNotAvail, Reserved for maintenance"
RESERVED_FOR_OTHER_DESC = "ReqNodeNotAvail, May be reserved for other job"

# slurmctld's description when too few of a partition's nodes are usable; squeue prints it in place
# of the reason and scontrol prints it with spaces turned into underscores.
NODES_UNAVAILABLE_DESC = (
    "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions"
)


@dataclass
class SlurmNode:
    """One compute node's live state."""

    conf: NodeConf
    base: NodeBase = NodeBase.UNKNOWN
    flags: NodeFlag = NodeFlag.NONE
    partitions: list[str] = field(default_factory=list)
    cpus_alloc: int = 0
    reason: str | None = None
    reason_user: str | None = None
    reason_s: int | None = None
    boot_s: int | None = None
    slurmd_start_s: int | None = None
    last_busy_s: int | None = None
    last_response_s: int | None = None
    # Whether slurmd on the node runs and can reach slurmctld; the service layer sets this.
    slurmd_up: bool = False
    # Whether its slurmd has registered since slurmctld started: until then slurmctld knows
    # nothing of its architecture, OS or version (scontrol show node leaves them out).
    registered: bool = False
    # The CPU count slurmctld built this node's record with when it started (or first met the
    # node); a reconfigure keeps it (read_config.c, `_restore_node_state`), so a changed CPUs= takes
    # effect only at slurmctld's next start. None: the configured count.
    record_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.record_cpus is None:
            self.record_cpus = self.conf.cpus

    @property
    def name(self) -> str:
        return self.conf.name

    @property
    def cpus_free(self) -> int:
        return self.conf.cpus - self.cpus_alloc

    def free_mem_mb(self) -> int:
        # Host-specific in real Slurm (FreeMem); here a deterministic stand-in that falls as jobs run.
        return max(0, self.conf.real_memory_mb - 256 - 128 * self.cpus_alloc)

    def cpu_load_centi(self) -> int:
        # CPULoad x 100, as slurmctld stores it: one busy CPU adds 1.00.
        return 100 * self.cpus_alloc

    def has(self, flag: NodeFlag) -> bool:
        return bool(self.flags & flag)

    def effective_base(self) -> NodeBase:
        if self.base in (NodeBase.UNKNOWN, NodeBase.DOWN, NodeBase.FUTURE):
            return self.base
        if self.cpus_alloc == 0:
            return NodeBase.IDLE
        return NodeBase.ALLOCATED if self.cpus_alloc >= self.conf.cpus else NodeBase.MIXED

    def is_usable(self) -> bool:
        """Whether the scheduler may place new work here."""
        bad = NodeFlag.DRAIN | NodeFlag.FAIL | NodeFlag.NOT_RESPONDING | NodeFlag.MAINT | NodeFlag.INVALID_REG
        return self.effective_base() not in (NodeBase.DOWN, NodeBase.UNKNOWN, NodeBase.FUTURE) and not (
            self.flags & bad
        )

    def state_long(self) -> str:
        """The spelling of sinfo %T (lower case): idle, mixed, draining, drained*, down*, ..."""
        return _state_long(self).lower()

    def state_compact(self) -> str:
        """The spelling of sinfo %t: idle, mix, drng, drain, down*, ..."""
        return _state_compact(self)

    def state_complete(self) -> str:
        """The spelling of scontrol State=: IDLE+DRAIN, MIXED+COMPLETING, DOWN+NOT_RESPONDING, ..."""
        names = [self.effective_base().value]
        for flag in (
            NodeFlag.COMPLETING,
            NodeFlag.DRAIN,
            NodeFlag.INVALID_REG,
            NodeFlag.FAIL,
            NodeFlag.MAINT,
            NodeFlag.RESERVED,
            NodeFlag.NOT_RESPONDING,
        ):
            if self.has(flag):
                names.append(_COMPLETE_FLAG_NAMES.get(flag, flag.name or ""))
        return "+".join(names)


# node_state_string_complete() spells these flags otherwise than the enum (State=IDLE+MAINTENANCE+RESERVED).
_COMPLETE_FLAG_NAMES = {NodeFlag.MAINT: "MAINTENANCE", NodeFlag.RESERVED: "RESERVED"}


# How node_state_string() and node_state_string_compact() spell the states a flag overrides.
_FLAGGED_LONG = {
    "maint": "MAINT",
    "draining": "DRAINING",
    "drained": "DRAINED",
    "failing": "FAILING",
    "fail": "FAIL",
    "alloc+": "ALLOCATED+",
    "completing": "COMPLETING",
    "reserved": "RESERVED",
    "inval": "INVAL",
}
_FLAGGED_COMPACT = {
    "maint": "maint",
    "draining": "drng",
    "drained": "drain",
    "failing": "failg",
    "fail": "fail",
    "alloc+": "alloc+",
    "completing": "comp",
    "reserved": "resv",
    "inval": "inval",
}


def _state_word(node: SlurmNode) -> tuple[NodeBase | str, str]:
    # Mirrors node_state_string(): maintenance, drain and fail win over the base; then '$' marks a
    # node in a MAINT reservation, or else '*' one that does not respond. Returns the base itself, or
    # the key of the flag-driven word, and the suffix.
    base = node.effective_base()
    star = "*" if node.has(NodeFlag.NOT_RESPONDING) else ""
    mark = "$" if node.has(NodeFlag.MAINT) else star
    busy = node.has(NodeFlag.COMPLETING) or base in (NodeBase.ALLOCATED, NodeBase.MIXED)
    if node.has(NodeFlag.MAINT) and not (
        node.has(NodeFlag.DRAIN) or base in (NodeBase.ALLOCATED, NodeBase.MIXED, NodeBase.DOWN)
    ):
        return "maint", star
    if node.has(NodeFlag.INVALID_REG):
        return "inval", star
    if node.has(NodeFlag.DRAIN):
        return ("draining" if busy else "drained"), mark
    if node.has(NodeFlag.FAIL):
        return ("failing" if busy else "fail"), star
    if base is NodeBase.ALLOCATED and not mark and node.has(NodeFlag.COMPLETING):
        return "alloc+", ""
    if base is NodeBase.IDLE and node.has(NodeFlag.COMPLETING):
        return "completing", mark
    if base is NodeBase.IDLE and not mark and node.has(NodeFlag.RESERVED):
        return "reserved", ""
    return base, mark


def _state_long(node: SlurmNode) -> str:
    word, star = _state_word(node)
    return (word.value if isinstance(word, NodeBase) else _FLAGGED_LONG[word]) + star


def _state_compact(node: SlurmNode) -> str:
    word, star = _state_word(node)
    return (_COMPACT[word] if isinstance(word, NodeBase) else _FLAGGED_COMPACT[word]) + star


@dataclass
class Partition:
    conf: PartitionConf
    state: PartitionState = PartitionState.UP

    @property
    def name(self) -> str:
        return self.conf.name

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.conf.nodes


class ReservationFlag(enum.Flag):
    """The reservation flags simulated, in the order reservation_flags_string() prints them."""

    NONE = 0
    MAINT = enum.auto()
    FLEX = enum.auto()
    OVERLAP = enum.auto()
    IGNORE_JOBS = enum.auto()
    DAILY = enum.auto()
    WEEKLY = enum.auto()
    # Set by slurmctld for a reservation made of named nodes (`Nodes=`), never asked for.
    SPEC_NODES = enum.auto()
    # Set for `Nodes=ALL`.
    ALL_NODES = enum.auto()

    def spelled(self) -> str:
        return ",".join(flag.name or "" for flag in ReservationFlag if flag and flag in self)


class ReservationState(enum.Enum):
    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"


@dataclass
class Reservation:
    """An advanced reservation (`scontrol create reservation`): nodes held for some users over a window.

    `end_s` None is an infinite duration (slurmctld stores it as one year past the start).
    """

    name: str
    start_s: int
    end_s: int
    nodes: tuple[str, ...]
    users: tuple[str, ...]
    flags: ReservationFlag = ReservationFlag.NONE
    partition: str | None = None
    cores: int = 0
    # Whether slurmctld's periodic pass has put RESERVED (and MAINT) on its nodes yet.
    node_flags_set: bool = False

    def state_at(self, now_s: int) -> ReservationState:
        return ReservationState.ACTIVE if self.start_s <= now_s < self.end_s else ReservationState.INACTIVE

    def overlaps(self, start_s: int, end_s: int | None) -> bool:
        """Whether the window [start_s, end_s) of a job (end None: no time limit) meets this one."""
        return self.start_s < (end_s if end_s is not None else self.end_s + 1) and start_s < self.end_s


@dataclass
class Step:
    """A job step as squeue -s and scontrol show step list it (`8.batch`, `15.0`)."""

    step_id: str
    name: str
    start_s: int
    nodes: list[str]
    cpus: int
    tasks: int


@dataclass
class Job:
    """One job, pending, running or finished (finished ones stay visible for MinJobAge)."""

    job_id: int
    name: str
    user: str
    uid: int
    group: str
    gid: int
    partition: str
    priority: int
    submit_s: int
    work_dir: str
    batch: bool
    command: str | None
    time_limit_min: TimeLimit
    time_limit_source: TimeLimitSource = TimeLimitSource.JOB
    min_nodes: int = 1
    max_nodes: int | None = None
    num_tasks: int | None = None
    cpus_per_task: int = 1
    req_nodes: list[str] = field(default_factory=list)
    exc_nodes: list[str] = field(default_factory=list)
    state: JobState = JobState.PENDING
    completing: bool = False
    reason: Reason = Reason.NONE
    reason_desc: str | None = None
    held: Reason | None = None
    begin_s: int | None = None
    eligible_s: int | None = None
    accrue_s: int | None = None
    start_s: int | None = None
    end_s: int | None = None
    last_sched_eval_s: int | None = None
    nodes: list[str] = field(default_factory=list)
    cpus_by_node: dict[str, int] = field(default_factory=dict)
    # True while the job holds CPUs on its nodes (running or completing).
    allocated: bool = False
    exit_code: int = 0
    exit_signal: int = 0
    # How long the job runs once started, in virtual seconds (None: until cancelled or timed out).
    run_for_s: int | None = None
    # Batch jobs that are still allocated keep their batch host; srun jobs record where srun ran.
    batch_host: str | None = None
    run_exit_code: int = 0
    steps: list[Step] = field(default_factory=list)
    restarts: int = 0
    alloc_sid: int = 1
    # Batch output paths as given (-o/-e, `%j` expanded); None means slurm-<id>.out in WorkDir.
    stdout_path: str | None = None
    stderr_path: str | None = None
    min_mem_mb: int = 0
    gres: str | None = None
    exclusive: bool = False
    # (type, job id) pairs from --dependency, e.g. ("afterok", 5); emptied once satisfied.
    dependency: list[tuple[str, int]] = field(default_factory=list)
    dependency_failed: bool = False
    # Job arrays (see arrays.py): the array's job id, this record's task (None while it is the
    # array's record holding `array_pending`), the %N throttle, and -o/-e as given (with %A/%a).
    array_job_id: int | None = None
    array_task_id: int | None = None
    array_pending: list[int] = field(default_factory=list)
    array_throttle: int = 0
    array_output: str | None = None
    array_error: str | None = None
    # The record's place in slurmctld's job list, which is the order scontrol lists jobs in.
    seq: int = 0
    # A job requeued because its node failed: nothing looks at it before the backfill pass at this
    # time (Reason=None, no AccrueTime until then), and it shows the TRES of its last allocation
    # (CPUs, nodes) instead of its request.
    unseen_until_s: int | None = None
    kept_alloc: tuple[int, int] | None = None
    # -L/--licenses as given (scontrol and squeue %W print it so) and as (name, count) pairs.
    licenses: str | None = None
    license_counts: tuple[tuple[str, int], ...] = ()
    # --reservation: the job may run only there, and only while it is active.
    reservation: str | None = None

    @property
    def state_long(self) -> str:
        return "COMPLETING" if self.completing else self.state.value

    @property
    def state_compact(self) -> str:
        return "CG" if self.completing else self.state.compact

    @property
    def cpus(self) -> int:
        if self.cpus_by_node:
            return sum(self.cpus_by_node.values())
        return max(self.num_tasks or 1, self.min_nodes) * self.cpus_per_task

    def reason_text(self) -> str:
        """What squeue's %r/%R print for a job that is not running."""
        return self.reason_desc or self.reason.value

    def is_active(self) -> bool:
        return not self.state.is_finished() or self.completing
