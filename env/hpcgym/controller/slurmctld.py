"""The rules slurmctld applies: node state changes, job submission, scheduling, time-driven events.

Commands (`commands/*.py`) only parse flags and format; every change of cluster state goes through a
`SlurmState` method here, so a state the reference captures never showed (a node draining under running
jobs, a node that stops answering pings, a job hitting its time limit) follows the same rules as the
states they did show. Time comes only from the episode's `VirtualClock`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from hpcgym.controller.accounting import SITE_ACCOUNTS, Accounting
from hpcgym.controller.arrays import (
    NO_TASK,
    expand_output,
    last_task,
    parse_array_spec,
    set_outputs,
    split_task,
)
from hpcgym.controller.clock import VirtualClock
from hpcgym.controller.numbers import is_digits, to_int
from hpcgym.controller.rpc import JobRequest, SlurmError
from hpcgym.controller.scheduler import part_limit_reason, schedule
from hpcgym.controller.slurmconf import SlurmConf, parse_licenses
from hpcgym.controller.state import (
    Job,
    JobState,
    NodeBase,
    NodeFlag,
    Partition,
    PartitionState,
    Reason,
    Reservation,
    ReservationFlag,
    SlurmNode,
    TimeLimitSource,
)
from hpcgym.controller.timefmt import TimeLimit
from hpcgym.errors import ControllerError

# priority/basic hands out 0xFFFEFFFF to the first job and one less to each later one (capture 50).
FIRST_PRIORITY = 4294901759
# A requeued job may not start again until its launch credential has expired (CredExpire=120 s).
REQUEUE_HOLD_S = 121
# After RESUME slurmctld asks the node to register again on its next background cycle; until the
# answer arrives (a second or two) the node shows `idle*` and BootTime=None (capture 21).
REREGISTER_AFTER_S = 2
# slurmctld pings nodes every SlurmdTimeout/3 seconds, only those it has not heard from for that
# long, and starts a round only when the previous one is done. A ping to a dead slurmd fails only
# once the agent gives up connecting, MessageTimeout later; then the node is NOT_RESPONDING. A node
# goes DOWN at the first round whose previous round began SlurmdTimeout after its last answer.
# (Debian's 22.05.8 with SlurmdTimeout=10: idle* about 15 s and down* about 28 s after slurmd
# stopped; with 20: about 21 s and 34 s. The fidelity harness measures this.)
PING_INTERVAL_DIVISOR = 3
DEFAULT_MESSAGE_TIMEOUT_S = 10
# slurmctld looks for jobs past their TimeLimit on its periodic pass (PERIODIC_TIMEOUT), not the
# moment the limit passes: `sbatch -t 1` ended 87 s after it started on Debian's 22.05.8.
TIME_LIMIT_CHECK_S = 30
# Batch jobs wait for the main scheduler, which slurmctld defers for batch_sched_delay (3 s by
# default) after it starts; an srun allocation is tried at once (Debian's 22.05.8: sbatch jobs
# submitted just after a start begin about 3 s after it, srun jobs at once).
BATCH_SCHED_DELAY_S = 3
# The backfill scheduler's cycle (bf_interval's default): a job no event brings to the main
# scheduler's attention is looked at then. A batch job requeued at 31 s after slurmctld's start
# still showed Reason=None at 45 s; one requeued at 29 s showed BeginTime at 33 s (22.05.8).
BACKFILL_INTERVAL_S = 30
# slurm.conf's MaxArraySize when it does not say: task ids go up to 1000.
DEFAULT_MAX_ARRAY_SIZE = 1001
# SIGTERM, what slurmstepd sends a step's tasks when the job reaches its TimeLimit.
TIME_LIMIT_SIGNAL = 15
# slurmctld's background loop puts RESERVED and MAINT on the nodes of active reservations (and takes
# them off expired ones) every 5 s, not at create: Debian's 22.05.8 showed a node of a reservation
# made `StartTime=now` as `idle` at once and as `maint` five seconds later.
RESV_CHECK_S = 5
# An infinite reservation lasts a year as slurmctld stores it (EndTime one year on, 365-00:00:00).
INFINITE_RESV_S = 365 * 24 * 3600
# validate_node_specs() stamps a node that registers with a boot time after its last answer.
UNEXPECTED_REBOOT_REASON = "Node unexpectedly rebooted"


class SlurmState:
    """All of one episode's Slurm state and the rules that change it."""

    def __init__(self, conf: SlurmConf, clock: VirtualClock, *, slurmd_running: bool = True) -> None:
        self.conf = conf
        self.clock = clock
        self.nodes: dict[str, SlurmNode] = {}
        self.partitions: dict[str, Partition] = {}
        self.jobs: dict[int, Job] = {}
        self.next_job_id = 1
        self.next_seq = 0
        self.next_priority = FIRST_PRIORITY
        self.resumed_at: dict[str, int] = {}
        self.slurmctld_start_s = clock.now_s
        # The ping agent (see PING_INTERVAL_DIVISOR): when its last round began, the round before
        # that, until when it is busy, and the nodes whose failed ping it reports when done.
        self.last_ping_s = clock.now_s
        self.prev_ping_s = clock.now_s
        self.ping_busy_until_s = clock.now_s
        self.ping_failed: set[str] = set()
        self.pinged_until_s = clock.now_s
        # When slurmctld last started: its periodic passes (time limits, the batch delay) count from it.
        self.sched_start_s = clock.now_s
        # `slurmctld -c` was asked for (the service layer sets it); nodes register again only from
        # register_after_s on after a restart.
        self.clean_start_pending = False
        self.register_after_s = clock.now_s
        self.advanced_to_s = clock.now_s
        # False while slurmctld is stopped: clients then fail with CONTROLLER_DOWN and time-driven
        # events wait for its return (the service layer drives this through `set_slurmctld`).
        self.slurmctld_up = True
        # Nodes (any node, the login node too) whose munged is not running; the service layer keeps
        # this current. Slurm clients there cannot sign their requests.
        self.munge_down: set[str] = set()
        # Nodes with no network path to SlurmctldHost (a broken route): their clients cannot connect.
        self.controller_unreachable: set[str] = set()
        # Reasons slurmctld itself sets are stamped with SlurmUser (root unless slurm.conf says).
        self.slurm_user = conf.options.get("slurmuser", "root")
        self.reservations: dict[str, Reservation] = {}
        self.next_resv_id = 1
        self.resv_checked_s = clock.now_s
        # When a node's host last booted, where it did after slurmctld started; `reboot_unseen`: the
        # reboots slurmd's next registration reports (an unexpected reboot, see `_register`).
        self.host_boot_s: dict[str, int] = {}
        self.reboot_unseen: set[str] = set()
        # slurmctld's DBD agent queue and slurmdbd's database (accounting.py); used where slurm.conf
        # says AccountingStorageType=accounting_storage/slurmdbd.
        self.accounting = Accounting.seeded(conf.cluster_name, SITE_ACCOUNTS)
        # What a registering slurmd reports against its configured line (hardware.py judges it): the
        # drain reason `_validate_node_specs` would set, or None. Unset: every registration fits.
        self.node_specs_check: Callable[[SlurmNode], str | None] | None = None
        # Jobs whose end waits on a process slurmd cannot kill (hung I/O, joblife.py): they stay
        # COMPLETING until it exits.
        self.unkillable: set[int] = set()
        # Called with each job as it starts (its nodes placed): what the node's slurmd finds when it
        # launches it (a library the job's program needs, say) may end it at once.
        self.launch_hooks: list[Callable[[Job], None]] = []
        # Lines slurmctld logs, with when, that the service layer writes to its journal and
        # SlurmctldLogFile (slurmlink.py empties it after every request and tick).
        self.log_lines: list[tuple[int, str]] = []
        # Which start of slurmctld these tables belong to (the service layer's mark for it): a
        # slurmctld started since builds them again from slurm.conf (`rebuild`).
        self.slurmctld_instance: str | None = None
        for part_conf in conf.partitions:
            self.partitions[part_conf.name] = Partition(part_conf, PartitionState(part_conf.state))
        for node_conf in conf.nodes:
            node = SlurmNode(
                node_conf, partitions=[p.name for p in conf.partitions if node_conf.name in p.nodes]
            )
            if node_conf.state == "FUTURE":
                node.base = NodeBase.FUTURE
            elif node_conf.state == "DOWN":
                node.base = NodeBase.DOWN
                self._set_reason(node, "Set in slurm.conf", self.slurm_user)
            elif node_conf.state == "DRAIN":
                node.flags |= NodeFlag.DRAIN
                self._set_reason(node, "Set in slurm.conf", self.slurm_user)
            node.flags |= NodeFlag.NOT_RESPONDING
            self.nodes[node_conf.name] = node
            if slurmd_running:
                self.start_slurmd(node_conf.name)

    @property
    def now_s(self) -> int:
        return self.clock.now_s

    @property
    def default_partition(self) -> Partition | None:
        return next((p for p in self.partitions.values() if p.conf.default), None)

    # ---- slurmd (the service layer drives these) --------------------------------------------------

    def start_slurmd(self, name: str) -> None:
        """Slurmd starts on a node and registers with slurmctld."""
        node = self.nodes[name]
        node.slurmd_up = True
        # slurmctld learns when slurmd started from its registration; after a restart that waits
        # for the first ping round (SlurmdStartTime=None until then, as on Debian's 22.05.8).
        if self.now_s >= self.register_after_s:
            node.slurmd_start_s = self.now_s
            self._register(node)

    def stop_slurmd(self, name: str) -> None:
        """Slurmd stops (or loses its route to slurmctld); pings start failing from now."""
        self.nodes[name].slurmd_up = False

    def _register(self, node: SlurmNode) -> None:
        if node.name in self.reboot_unseen:
            self.reboot_unseen.discard(node.name)
            if self._rebooted_unexpectedly(node, self.host_boot_s[node.name]):
                return
        node.registered = True
        node.flags &= ~NodeFlag.NOT_RESPONDING
        node.last_response_s = self.now_s
        if node.boot_s is None:
            node.boot_s = self.host_boot_s.get(node.name, self.slurmctld_start_s)
        if node.last_busy_s is None:
            node.last_busy_s = self.now_s
        if node.base is NodeBase.UNKNOWN:
            node.base = NodeBase.IDLE
        elif node.base is NodeBase.DOWN and self._returns_to_service(node):
            node.base = NodeBase.IDLE
            # A drained or failed node comes back as such, with its admin's reason (validate_node_specs
            # keeps the state flags; seen on Debian's 22.05.8: DOWN+DRAIN+NOT_RESPONDING -> IDLE+DRAIN).
            if not node.has(NodeFlag.DRAIN | NodeFlag.FAIL):
                self._clear_reason(node)
        self.validate_node_specs(node)

    def validate_node_specs(self, node: SlurmNode) -> None:
        # _validate_node_specs(): a registration that reports less than configured marks the node
        # INVALID_REG and drains it (as SlurmUser) unless it is already down, drained or failed; a
        # good one clears the mark and leaves any drain to the admin.
        reason = self.node_specs_check(node) if self.node_specs_check is not None else None
        was_invalid = node.has(NodeFlag.INVALID_REG)
        node.flags &= ~NodeFlag.INVALID_REG
        if reason is None:
            return
        node.flags |= NodeFlag.INVALID_REG
        if not was_invalid:
            text = f"error: Setting node {node.name} state to INVAL with reason:{reason}"
            self.log_lines.append((self.now_s, text))
        if node.base is not NodeBase.DOWN and not node.has(NodeFlag.DRAIN | NodeFlag.FAIL):
            self.drain(node, reason, self.slurm_user)

    def _rebooted_unexpectedly(self, node: SlurmNode, booted_s: int) -> bool:
        # validate_node_specs(): a node that booted after its last answer, unless ReturnToService=2
        # (or slurmctld asked for the reboot), goes DOWN and its jobs are killed; the reason is set
        # only over none or "Not responding". With 1, a node DOWN for not responding does not come
        # back either: its boot time is after its last response.
        node.boot_s = booted_s
        node.registered = True
        node.flags &= ~NodeFlag.NOT_RESPONDING
        last = node.last_response_s
        node.last_response_s = self.now_s
        if self.conf.return_to_service == 2 or last is None or booted_s <= last:
            return False
        keep = node.reason is not None and node.reason != "Not responding"
        self._set_down(node, UNEXPECTED_REBOOT_REASON, self.slurm_user, keep_reason=keep)
        self.schedule()
        return True

    def reboot_host(self, name: str, boot_s: int | None = None) -> None:
        """The node's host restarted on its own (a panic, a power blip) at `boot_s` (default now).

        Slurmd's next registration, when it starts again or at once if it runs, tells slurmctld the
        new boot time (`_rebooted_unexpectedly`).
        """
        node = self.nodes[name]
        self.host_boot_s[name] = self.now_s if boot_s is None else boot_s
        self.reboot_unseen.add(name)
        if node.slurmd_up and self.now_s >= self.register_after_s:
            node.slurmd_start_s = self.now_s
            self._register(node)

    def _returns_to_service(self, node: SlurmNode) -> bool:
        # ReturnToService=1 revives nodes that went DOWN only for not responding; 2 revives any.
        if self.conf.return_to_service == 2:
            return True
        return self.conf.return_to_service == 1 and node.reason == "Not responding"

    def reconfigure(self, conf: SlurmConf) -> list[str]:
        """`scontrol reconfigure`: adopt a new slurm.conf, keeping node and job state.

        Partitions take their configured State again; nodes keep their state and reasons; new nodes
        start UNKNOWN until their slurmd registers; removed nodes without jobs disappear.

        Returns:
            slurmctld's errors for nodes whose configured CPU count changed (read_config.c,
            `_restore_node_state`): the new file is in force, but each such node keeps the record
            slurmctld started with, the request fails with ESLURM_NEED_RESTART and no slurmd is
            told to read the file again (none registers anew).
        """
        changed = [
            f"Configured cpu count change on {new.name} ({self.nodes[new.name].conf.cpus} to {new.cpus})"
            for new in conf.nodes
            if new.name in self.nodes and self.nodes[new.name].conf.cpus != new.cpus
        ]
        self._adopt(conf)
        self.log_lines.extend((self.now_s, f"error: {text}") for text in changed)
        if not changed:
            # Every slurmd reads the new configuration and registers again.
            self._validate_registered()
        self.schedule()
        return changed

    def rebuild(self, conf: SlurmConf) -> None:
        """A starting slurmctld builds its tables from `conf`: every node record takes its CPUs.

        Node and job state are what it recovered (see `set_slurmctld`); partitions take their
        configured State, as after a reconfigure.
        """
        self._adopt(conf)
        for node in self.nodes.values():
            node.record_cpus = node.conf.cpus
        self._validate_registered()
        self.schedule()

    def _validate_registered(self) -> None:
        for node in self.nodes.values():
            if node.slurmd_up and node.registered:
                self.validate_node_specs(node)

    def _adopt(self, conf: SlurmConf) -> None:
        self.conf = conf
        self.slurm_user = conf.options.get("slurmuser", "root")
        self.partitions = {p.name: Partition(p, PartitionState(p.state)) for p in conf.partitions}
        busy = {name for job in self.jobs.values() if job.allocated for name in job.nodes}
        old = self.nodes
        self.nodes = {}
        for node_conf in conf.nodes:
            node = old.get(node_conf.name) or SlurmNode(node_conf, flags=NodeFlag.NOT_RESPONDING)
            node.conf = node_conf
            node.partitions = [p.name for p in conf.partitions if node_conf.name in p.nodes]
            self.nodes[node_conf.name] = node
        for name in busy - set(self.nodes):
            self.nodes[name] = old[name]
        for job in list(self.jobs.values()):
            if not job.state.is_finished() and job.partition not in self.partitions:
                # slurmctld's _sync_jobs_to_conf: "Invalid partition (P) for JobId=N", and the job
                # fails as on a lost node (NODE_FAIL, exit code 1), pending or running.
                if job.state is JobState.PENDING:
                    job.start_s = self.now_s
                self._end_job(job, JobState.NODE_FAIL, self.now_s, exit_code=1, reason=Reason.NODE_DOWN)
                self._finish_completing(job)

    # ---- time ------------------------------------------------------------------------------------

    def set_slurmctld(self, up: bool) -> None:
        """Slurmctld stops or starts; on start it recovers its state and waits a full SlurmdTimeout."""
        if up and not self.slurmctld_up:
            self._restart(clean=self.clean_start_pending)
            for node in self.nodes.values():
                node.last_response_s = self.now_s
            self.sched_start_s = self.advanced_to_s = self.now_s
            self.last_ping_s = self.prev_ping_s = self.ping_busy_until_s = self.now_s
            self.pinged_until_s = self.now_s
            self.ping_failed = set()
        if up:
            self.clean_start_pending = False
        self.slurmctld_up = up

    def _restart(self, *, clean: bool) -> None:
        # A restarted slurmctld recovers its saved state, but until a node registers again its
        # state is unknown: idle nodes show `unk` (nodes with jobs keep their allocation, drained ones
        # their drain). `slurmctld -c` recovers nothing: no jobs, every node UNKNOWN with no flags
        # or reason (%u then reads root). Seen on Debian's 22.05.8, 3 s after each kind of start.
        if clean:
            self.jobs.clear()
            self.next_job_id, self.next_priority = 1, FIRST_PRIORITY
            self.accounting.drop_queue()
        busy = {name for job in self.jobs.values() if job.allocated for name in job.nodes}
        for node in self.nodes.values():
            if node.base is NodeBase.FUTURE:
                continue
            node.registered = False
            node.boot_s = node.slurmd_start_s = None
            # Its last busy time is not saved: every node shows the restart (Debian's 22.05.8, 3 s
            # after a restart), or Unknown after `slurmctld -c`, until it registers.
            node.last_busy_s = None if clean else self.now_s
            if clean:
                node.base, node.flags, node.cpus_alloc = NodeBase.UNKNOWN, NodeFlag.NONE, 0
                node.reason, node.reason_user, node.reason_s = None, "root", None
            elif node.base is NodeBase.IDLE and node.name not in busy:
                node.base = NodeBase.UNKNOWN
        interval = max(1, self.conf.slurmd_timeout_s // PING_INTERVAL_DIVISOR)
        self.register_after_s = self.now_s + interval + 1

    def advance(self) -> None:
        """Apply everything due at the clock's current time, then run the scheduler.

        A jump over a batch job's first pass plays that instant first, so the job starts when the
        pass ran, not at the end of the jump.
        """
        if not self.slurmctld_up:
            return
        now = self.now_s
        # Played one at a time, each found again after the one before: a job that a played pass
        # starts has its end played too.
        while True:
            due = [t for t in self._due_instants() if self.advanced_to_s < t < now]
            if not due:
                break
            self.clock.now_s = min(due)
            try:
                self._apply_due()
            finally:
                self.advanced_to_s = self.clock.now_s
                self.clock.now_s = now
        self._apply_due()
        self.advanced_to_s = now

    def _due_instants(self) -> set[int]:
        waiting = {
            self.first_pass_s(j) for j in self.jobs.values() if j.batch and j.state is JobState.PENDING
        }
        # A job's end, and a second later (its epilog done, the scheduler looks again), are played
        # too: jobs waiting on it then start when they did on the real cluster, not at the jump's end.
        for job in self.jobs.values():
            if job.state is JobState.RUNNING and job.start_s is not None and job.run_for_s is not None:
                end = job.start_s + job.run_for_s
                waiting |= {end, end + 1}
        return waiting

    def _apply_due(self) -> None:
        now = self.now_s
        for job in self.jobs.values():
            # The epilog takes a moment, well under a second on an idle host: a job seen completing
            # at one request is done by the next advance. (On a loaded host Debian's 22.05.8 showed
            # `comp` nodes right after srun returned; held for a whole second here, those CPUs sent
            # the next srun elsewhere, which the real cluster seldom did.)
            if job.completing and job.job_id not in self.unkillable:
                self._finish_completing(job)
        for job in list(self.jobs.values()):
            if job.state is JobState.RUNNING:
                self._check_job_end(job, now)
                if (
                    job.completing
                    and job.end_s is not None
                    and job.end_s < now
                    and job.job_id not in self.unkillable
                ):
                    self._finish_completing(job)
        self._ping_nodes(now)
        self._check_reservations(now)
        for job_id in [j.job_id for j in self.jobs.values() if self._is_purgeable(j, now)]:
            del self.jobs[job_id]
        self.schedule()

    def _check_job_end(self, job: Job, now: int) -> None:
        assert job.start_s is not None
        limit_end = (
            None if job.time_limit_min is None else self._limit_seen_s(job.start_s + job.time_limit_min * 60)
        )
        run_end = None if job.run_for_s is None else job.start_s + job.run_for_s
        if run_end is not None and run_end <= now and (limit_end is None or run_end <= limit_end):
            state = JobState.COMPLETED if job.run_exit_code == 0 else JobState.FAILED
            reason = Reason.NONE if job.run_exit_code == 0 else Reason.NON_ZERO_EXIT
            self._end_job(job, state, run_end, exit_code=job.run_exit_code, reason=reason)
        elif limit_end is not None and limit_end <= now:
            # slurmstepd ends a step at its time limit with SIGTERM: an srun task that dies of it
            # leaves ExitCode=0:15 (Debian's 22.05.8, `srun -t 1 sleep 600`), and so did a batch
            # job's `--wrap 'sleep 300'` in the fidelity harness (an earlier capture saw 143:0).
            self._end_job(
                job, JobState.TIMEOUT, limit_end, signal=TIME_LIMIT_SIGNAL, reason=Reason.TIME_LIMIT
            )

    def _limit_seen_s(self, limit_s: int) -> int:
        # The first periodic pass after the moment the limit passed (a job starts a fraction of a
        # second after slurmctld's own second, so a pass in that very second comes too early).
        passes = max(0, (limit_s - self.sched_start_s) // TIME_LIMIT_CHECK_S + 1)
        return self.sched_start_s + passes * TIME_LIMIT_CHECK_S

    def _ping_nodes(self, now: int) -> None:
        # Registered slurmd answer at once; the agent's rounds are played second by second so that a
        # long `advance` gives the same result as many short ones.
        for node in self.nodes.values():
            if node.base is NodeBase.FUTURE or not self._answers(node) or now < self.register_after_s:
                continue
            resumed = self.resumed_at.get(node.name)
            if resumed is not None and now - resumed < REREGISTER_AFTER_S:
                continue
            self.resumed_at.pop(node.name, None)
            if node.boot_s is None:
                node.slurmd_start_s = now
            if (
                node.has(NodeFlag.NOT_RESPONDING)
                or node.base in (NodeBase.UNKNOWN, NodeBase.DOWN)
                or (node.boot_s is None or node.last_response_s is None)
            ):
                self._register(node)
        start = max(self.pinged_until_s + 1, now - 4 * max(self.conf.slurmd_timeout_s, 1))
        # Each round happens at its own second: a node set DOWN, and the jobs ended or requeued
        # with it, carry that time, not the end of a long jump of the clock.
        for second in range(start, now + 1):
            self.clock.now_s = second
            try:
                self._ping_round(second)
            finally:
                self.clock.now_s = now
        self.pinged_until_s = max(self.pinged_until_s, now)

    def _answers(self, node: SlurmNode) -> bool:
        # A ping needs a credential from the controller's munged and its check by the node's: with
        # either munged stopped the node does not answer (Debian's 22.05.8 with munged stopped: every
        # node down* after SlurmdTimeout).
        return node.slurmd_up and not ({node.name, self.conf.controller_host} & self.munge_down)

    def _ping_round(self, t: int) -> None:
        interval = max(1, self.conf.slurmd_timeout_s // PING_INTERVAL_DIVISOR)
        if t >= self.ping_busy_until_s and self.ping_failed:
            for name in sorted(self.ping_failed):
                node = self.nodes.get(name)
                if node is not None and not self._answers(node):
                    node.flags |= NodeFlag.NOT_RESPONDING
            self.ping_failed = set()
        if t - self.last_ping_s < interval or t < self.ping_busy_until_s:
            return
        dead_before = self.last_ping_s - self.conf.slurmd_timeout_s
        still_live = t - interval
        self.prev_ping_s, self.last_ping_s = self.last_ping_s, t
        failed = set()
        for node in self.nodes.values():
            if node.base is NodeBase.FUTURE:
                continue
            if self._answers(node):
                # Only a ping's answer tells slurmctld a quiet node still lives.
                if node.last_response_s is None or node.last_response_s < still_live:
                    node.last_response_s = t
                continue
            last = node.last_response_s if node.last_response_s is not None else self.slurmctld_start_s
            if last <= dead_before and node.base is not NodeBase.DOWN:
                # A reason someone already gave stays: set_node_down_ptr() writes "Not responding"
                # only over no reason or an earlier "Not responding" (a drained node becomes
                # DOWN+DRAIN+NOT_RESPONDING, `drained*`, with its admin's reason, user and time).
                node.flags |= NodeFlag.NOT_RESPONDING
                self._set_down(node, "Not responding", self.slurm_user, keep_reason=True)
                continue
            if last >= still_live or (node.has(NodeFlag.NOT_RESPONDING) and node.base is NodeBase.DOWN):
                continue
            failed.add(node.name)
        # A ping that cannot be signed or checked (a munged stopped) fails at once; only one to a
        # dead slurmd waits for the agent to give up connecting (Debian's 22.05.8 with munged
        # stopped: every node down* within 18 s at SlurmdTimeout=10).
        for name in sorted(failed):
            if self.nodes[name].slurmd_up:
                self.nodes[name].flags |= NodeFlag.NOT_RESPONDING
        failed = {name for name in failed if not self.nodes[name].slurmd_up}
        if failed:
            self.ping_failed = failed
            message_timeout = to_int(self.conf.options.get("messagetimeout", ""))
            self.ping_busy_until_s = t + (message_timeout or DEFAULT_MESSAGE_TIMEOUT_S)

    def _is_purgeable(self, job: Job, now: int) -> bool:
        return (
            job.state.is_finished()
            and not job.completing
            and job.end_s is not None
            and now - job.end_s >= self.conf.min_job_age_s
        )

    # ---- jobs ------------------------------------------------------------------------------------

    def submit(self, request: JobRequest) -> Job:
        """Validate and queue a job, then try to start it at once as slurmctld does.

        Raises:
            SlurmError: slurmctld would refuse the request; the message is Slurm's error text.
        """
        array = self._parse_array(request)
        part = self._submit_partition(request)
        self._check_placement(request, part)
        license_counts = self._check_licenses(request.licenses)
        self._check_reservation_access(request)
        # A dependency on a job slurmctld does not know is accepted and counts as satisfied, as for
        # a purged one (Debian's 22.05.8 ran `sbatch -d afterok:99` with no job 99).
        now = self.now_s
        job = self._job_record(request, part, now)
        job.license_counts = license_counts
        self.next_job_id += 1
        job.seq = self._take_seq()
        if array is not None:
            _make_array_record(job, array, request)
        self._hold_or_queue(job, request, now)
        self.jobs[job.job_id] = job
        if job.batch:
            self._first_reason(job, part, now)
        self.schedule()
        return job

    def _parse_array(self, request: JobRequest) -> tuple[list[int], int] | None:
        if request.array_spec is None:
            return None
        max_size = to_int(self.conf.options.get("maxarraysize", "")) or DEFAULT_MAX_ARRAY_SIZE
        array = parse_array_spec(request.array_spec, max_size)
        if array is None or not array[0]:
            raise SlurmError("Invalid job array specification")
        return array

    def _submit_partition(self, request: JobRequest) -> Partition:
        """The job's partition, after the account and node-name checks slurmctld makes before the rest."""
        part = self.partitions.get(request.partition) if request.partition else self.default_partition
        if part is None:
            raise SlurmError("Invalid partition name specified")
        self.accounting.check_submit(self.conf.options, request.user.name)
        for name in request.req_nodes + request.exc_nodes:
            if name not in self.nodes:
                raise SlurmError("Invalid node name specified")
        if not request.time_limit_set and part.conf.default_time_min == 0:
            # _valid_job_part(): "job's default time is 0", before the job record exists.
            raise SlurmError("Requested time limit is invalid (missing or exceeds some limit)")
        return part

    def _check_placement(self, request: JobRequest, part: Partition) -> None:
        """Refuse a job the partition's nodes could never hold: named nodes, CPUs, memory, gres."""
        if any(name not in part.nodes for name in request.req_nodes):
            raise SlurmError("Requested node configuration is not available")
        min_nodes = _min_nodes(request)
        cpus_needed = (request.num_tasks or min_nodes) * request.cpus_per_task
        biggest = max((self.nodes[n].conf.cpus for n in part.nodes), default=0)
        if cpus_needed > biggest * max(min_nodes, request.max_nodes or min_nodes, len(part.nodes)):
            raise SlurmError("Requested node configuration is not available")
        part_nodes = [self.nodes[n] for n in part.nodes]
        if request.mem_mb and request.mem_mb > max((n.conf.real_memory_mb for n in part_nodes), default=0):
            # This check comes after the job record exists: the refused job still used up its id
            # (Debian's 22.05.8: `sbatch --mem=99999` refused, the next job got the id after it).
            self.next_job_id += 1
            raise SlurmError(
                "Requested node configuration is not available", "Memory specification can not be satisfied"
            )
        if request.gres and not any(_has_gres(n.conf.gres, request.gres) for n in part_nodes):
            raise SlurmError("Invalid generic resource (gres) specification")

    def _check_reservation_access(self, request: JobRequest) -> None:
        if request.reservation is None:
            return
        resv = self.reservations.get(request.reservation)
        # Checked once the job record exists: a refused job uses up its id (22.05.8).
        if resv is None or request.user.name not in resv.users:
            self.next_job_id += 1
        if resv is None:
            raise SlurmError("Requested reservation is invalid")
        if request.user.name not in resv.users:
            raise SlurmError("Access denied to requested reservation")

    def _job_record(self, request: JobRequest, part: Partition, now: int) -> Job:
        """The new job as the request describes it, under the next job id."""
        time_limit, source = _time_limit(request, part)
        job = Job(
            job_id=self.next_job_id,
            name=request.name,
            user=request.user.name,
            uid=request.user.uid,
            group=request.user.group,
            gid=request.user.gid,
            partition=part.name,
            priority=0,
            submit_s=now,
            work_dir=request.work_dir,
            batch=request.batch,
            command=request.command,
            time_limit_min=time_limit,
            time_limit_source=source,
            min_nodes=_min_nodes(request),
            max_nodes=request.max_nodes,
            num_tasks=request.num_tasks,
            cpus_per_task=request.cpus_per_task,
            req_nodes=list(request.req_nodes),
            exc_nodes=list(request.exc_nodes),
            begin_s=request.begin_s,
            last_sched_eval_s=now,
            run_for_s=request.run_for_s,
            run_exit_code=request.exit_code,
            alloc_sid=request.alloc_sid,
        )
        job.min_mem_mb = request.mem_mb or 0
        job.licenses = request.licenses
        job.reservation = request.reservation
        job.gres, job.exclusive, job.dependency = request.gres, request.exclusive, list(request.dependency)
        out, err, work_dir = request.stdout_path, request.stderr_path, request.work_dir
        job.stdout_path = expand_output(out, job.job_id, work_dir) if out is not None else None
        job.stderr_path = expand_output(err, job.job_id, work_dir) if err is not None else job.stdout_path
        return job

    def _hold_or_queue(self, job: Job, request: JobRequest, now: int) -> None:
        """Hold the job (-H) or give it a priority; one free to run at once is eligible from now."""
        if request.hold:
            job.held = Reason.HELD_USER
        else:
            self._assign_priority(job)
        if job.held is None and not job.dependency and job.array_job_id is None:
            job.eligible_s = max(now, job.begin_s or now)
            if request.batch:
                job.accrue_s = job.eligible_s

    def _first_reason(self, job: Job, part: Partition, now: int) -> None:
        """The reason a batch job shows before the scheduler's first pass over it."""
        # Until its first pass, a job outside its partition's limits shows PartitionConfig, one
        # behind another pending job in its partition Priority, the first None (22.05.8).
        ahead = any(
            other.state is JobState.PENDING
            and other.partition == job.partition
            and other.priority > job.priority
            for other in self.jobs.values()
            if other is not job
        )
        resv = self.reservations.get(job.reservation or "")
        if job.held is None and part_limit_reason(job, part) is not None:
            job.reason = Reason.PARTITION_CONFIG
        elif job.held is None and resv is not None and not resv.start_s <= now < resv.end_s:
            # Tested against its reservation in the submit RPC already (22.05.8: Reservation
            # at once for a reservation that starts later).
            job.reason = Reason.RESERVATION
        elif job.held is None and ahead:
            job.reason = Reason.PRIORITY

    def _check_licenses(self, text: str | None) -> tuple[tuple[str, int], ...]:
        # license_validate(): every name configured and no count above the cluster's total.
        if text is None:
            return ()
        counts = parse_licenses(text)
        total = dict(self.conf.licenses)
        if counts is None or any(name not in total or n > total[name] for name, n in counts):
            raise SlurmError("Invalid license specification")
        return counts

    def next_backfill_s(self) -> int:
        """When the backfill scheduler next runs: every bf_interval from slurmctld's start."""
        passes = (self.now_s - self.sched_start_s) // BACKFILL_INTERVAL_S + 1
        return self.sched_start_s + passes * BACKFILL_INTERVAL_S

    def _take_seq(self) -> int:
        self.next_seq += 1
        return self.next_seq

    def take_array_task(self, meta: Job) -> Job:
        """The record that runs the array's next task, split off `meta` unless it is the last one."""
        if len(meta.array_pending) == 1:
            return last_task(meta)
        task = split_task(meta, self.next_job_id, self._take_seq())
        self.next_job_id += 1
        # The task takes the array record's place in the job list; the record moves to its end.
        # In place: whoever holds the table keeps seeing it.
        ordered = sorted([*self.jobs.items(), (task.job_id, task)], key=lambda item: item[1].seq)
        self.jobs.clear()
        self.jobs.update(ordered)
        return task

    def drop_pending_task(self, meta: Job, task: int) -> None:
        """`scancel ID_TASK` of a task still in the array's record with others: it leaves the record."""
        meta.array_pending = [t for t in meta.array_pending if t != task]

    def first_pass_s(self, job: Job) -> int:
        """When the main scheduler first looks at a batch job.

        Not in its submit RPC but on the background pass (here the next second), and not before
        batch_sched_delay after slurmctld's start.
        """
        return max(job.submit_s + 1, self.sched_start_s + BATCH_SCHED_DELAY_S)

    def _assign_priority(self, job: Job) -> None:
        job.priority = self.next_priority
        self.next_priority -= 1

    def cancel(self, job: Job, signal: int = 15) -> None:
        """scancel: pending jobs end at once; running ones start completing.

        Raises:
            SlurmError: the job has already finished.
        """
        if job.state.is_finished() or job.completing:
            raise SlurmError("Job/step already completing or completed")
        if job.state is JobState.PENDING:
            job.state = JobState.CANCELLED
            job.start_s = job.end_s = self.now_s
            return
        # The step reports the signal before the batch shell reports its exit status, mostly:
        # Debian's 22.05.8 left a cancelled `--wrap 'sleep 120'` ExitCode=0:15 in five runs of five
        # here (one earlier, loaded run showed the shell's 143:0).
        self._end_job(job, JobState.CANCELLED, self.now_s, signal=signal)
        self.schedule()

    def hold(self, job: Job, reason: Reason) -> None:
        """Scontrol hold/uhold: priority 0 and a held reason.

        A running job may be held too: it keeps running, with priority 0 and the held reason
        (Debian's 22.05.8: `scontrol hold` of a running batch job exits 0, squeue shows JobHeldAdmin).
        """
        if job.state.is_finished():
            raise SlurmError("Job is no longer pending execution")
        job.priority = 0
        job.reason, job.reason_desc = reason, None
        # A held job is no longer eligible: EligibleTime=Unknown, even while it runs (22.05.8).
        job.eligible_s = None
        if job.state is JobState.PENDING:
            job.held = reason

    def release(self, job: Job) -> None:
        """Scontrol release: lift a hold; the job gets a fresh priority and is scheduled."""
        if job.state is not JobState.PENDING:
            raise SlurmError("Job is no longer pending execution")
        if job.held is None:
            return
        job.held = None
        self._assign_priority(job)
        job.eligible_s = max(self.now_s, job.begin_s or self.now_s)
        if job.batch and job.accrue_s is None:
            job.accrue_s = job.eligible_s
        job.reason = Reason.NONE
        self.schedule()

    def requeue(self, job: Job) -> None:
        """Scontrol requeue: a batch job goes back to pending and may restart after the credential expires."""
        if not job.batch:
            raise SlurmError("Only batch jobs are accepted or processed")
        if job.state is JobState.PENDING:
            raise SlurmError("Job is pending execution")
        if job.state is JobState.RUNNING:
            self._release_nodes(job)
        self._back_to_pending(job)
        self.schedule()

    def update_job(
        self, job: Job, *, name: str | None = None, partition: str | None = None, min_nodes: int | None = None
    ) -> None:
        """`scontrol update JobId=`: set the fields given (the command checks them, as scontrol does)."""
        if name is not None:
            job.name = name
        if partition is not None:
            job.partition = partition
        if min_nodes is not None:
            job.min_nodes = min_nodes

    def set_time_limit(self, job: Job, minutes: TimeLimit, source: TimeLimitSource) -> None:
        """`scontrol update TimeLimit=`: the job's limit (None: UNLIMITED), and who set it."""
        job.time_limit_min, job.time_limit_source = minutes, source

    def let_step_run(self, job: Job, run_for_s: int | None, exit_code: int) -> None:
        """An srun job's only step outlived srun: it ends `run_for_s` after the job's start.

        None runs it until the job's TimeLimit; either way the job then ends with `exit_code`.
        """
        job.run_for_s, job.run_exit_code = run_for_s, exit_code

    def _back_to_pending(self, job: Job) -> None:
        job.state = JobState.PENDING
        job.completing = False
        job.restarts += 1
        job.nodes, job.cpus_by_node, job.steps = [], {}, []
        job.batch_host = None
        job.begin_s = self.now_s + REQUEUE_HOLD_S
        job.eligible_s = job.begin_s
        # Its SubmitTime becomes the requeue and it accrues again from its new BeginTime (22.05.8).
        job.submit_s = self.now_s
        if job.batch:
            job.accrue_s = job.begin_s
        job.start_s = job.end_s = None
        job.reason, job.reason_desc = Reason.BEGIN_TIME, None
        job.unseen_until_s, job.kept_alloc = None, None

    def _end_job(
        self,
        job: Job,
        state: JobState,
        end_s: int,
        *,
        exit_code: int = 0,
        signal: int = 0,
        reason: Reason | None = None,
    ) -> None:
        job.state = state
        job.end_s = end_s
        job.exit_code, job.exit_signal = exit_code, signal
        if reason is not None:
            job.reason, job.reason_desc = reason, None
        job.completing = True
        for name in job.nodes:
            self.nodes[name].flags |= NodeFlag.COMPLETING

    def _finish_completing(self, job: Job) -> None:
        job.completing = False
        self._release_nodes(job)

    def _release_nodes(self, job: Job) -> None:
        if not job.allocated:
            return
        job.allocated = False
        for name, cpus in job.cpus_by_node.items():
            node = self.nodes[name]
            node.cpus_alloc = max(0, node.cpus_alloc - cpus)
            # The node was busy until the job ended (its epilog is a moment), even if this is seen
            # later in a jump of the clock.
            ended = job.end_s if job.end_s is not None else self.now_s
            node.last_busy_s = max(ended, node.last_busy_s or ended)
            still = any(
                other.completing and name in other.nodes for other in self.jobs.values() if other is not job
            )
            if not still:
                node.flags &= ~NodeFlag.COMPLETING

    def settle_completing(self) -> bool:
        """Let every completing job finish its epilog now; True if any did (srun waits for this)."""
        completing = [j for j in self.jobs.values() if j.completing and j.job_id not in self.unkillable]
        for job in completing:
            self._finish_completing(job)
        if completing:
            self.schedule()
        return bool(completing)

    def finish_step(self, job: Job, exit_code: int) -> None:
        """An srun job's only step ended: the job ends with its exit code and starts completing."""
        state = JobState.COMPLETED if exit_code == 0 else JobState.FAILED
        reason = Reason.NONE if exit_code == 0 else Reason.NON_ZERO_EXIT
        self._end_job(job, state, self.now_s, exit_code=exit_code, reason=reason)

    # ---- reservations and licenses ---------------------------------------------------------------

    def create_reservation(self, resv: Reservation) -> str:
        """`scontrol create reservation`: checked as create_resv() does; returns the name it got.

        Raises:
            SlurmError: a duplicate name, unknown nodes, another reservation or a job in the way.
        """
        if not resv.name:
            resv.name = f"{resv.users[0] if resv.users else 'root'}_{self.next_resv_id}"
        if resv.name in self.reservations:
            raise SlurmError("Duplicate reservation name")
        self._check_reservation(resv, None)
        self.next_resv_id += 1
        self.reservations[resv.name] = resv
        self.schedule()
        return resv.name

    def _check_reservation(self, resv: Reservation, old: Reservation | None) -> None:
        if not resv.nodes or any(name not in self.nodes for name in resv.nodes):
            raise SlurmError("Invalid node name specified")
        resv.flags |= ReservationFlag.SPEC_NODES
        resv.cores = sum(self.nodes[name].conf.cpus for name in resv.nodes)
        mine = set(resv.nodes)
        loose = ReservationFlag.MAINT | ReservationFlag.OVERLAP
        if not resv.flags & loose:
            for other in self.reservations.values():
                if other is old or other.flags & loose or not mine & set(other.nodes):
                    continue
                if other.overlaps(resv.start_s, resv.end_s):
                    raise SlurmError("Requested reservation overlaps with another reservation")
        if not resv.flags & ReservationFlag.IGNORE_JOBS:
            for job in self.jobs.values():
                if not job.allocated or not mine & set(job.nodes) or job.reservation == resv.name:
                    continue
                end = self._job_end_s(job)
                if end is None or end > resv.start_s:
                    raise SlurmError("Requested nodes are busy")

    def update_reservation(self, name: str, change: dict[str, object]) -> None:
        """`scontrol update reservation`: StartTime, EndTime, Duration, Nodes, Users or Flags anew.

        Raises:
            SlurmError: no such reservation, or the changed one fails create's checks.
        """
        old = self.reservations.get(name)
        if old is None:
            raise SlurmError("Requested reservation is invalid")
        if "start_s" in change and old.start_s <= self.now_s:
            # update_resv(): an active reservation keeps its start; delete and create it anew.
            raise SlurmError("Reservation already started")
        new = Reservation(**{**old.__dict__, **change})  # type: ignore[arg-type]
        moved = [change[key] for key in ("start_s", "end_s") if key in change]
        if new.end_s <= new.start_s or any(isinstance(t, int) and t < self.now_s - 60 for t in moved):
            raise SlurmError("Invalid time specified")
        self._check_reservation(new, old)
        new.node_flags_set = old.node_flags_set
        self.reservations[name] = new
        self._set_reservation_flags()
        self.schedule()

    def delete_reservation(self, name: str) -> None:
        """`scontrol delete reservation`: refused while a job of it is pending or running.

        Raises:
            SlurmError: no such reservation, or it is in use.
        """
        resv = self.reservations.get(name)
        if resv is None:
            raise SlurmError("Requested reservation is invalid")
        # Any job of the reservation not yet finished keeps it, a pending one too (22.05.8).
        if any(job.reservation == name and job.is_active() for job in self.jobs.values()):
            raise SlurmError("Requested reservation is in use")
        del self.reservations[name]
        # Its nodes lose RESERVED and MAINT at once (_delete_resv_internal), not at the next pass.
        self._set_reservation_flags()
        self.schedule()

    def _check_reservations(self, now: int) -> None:
        last_pass = self.sched_start_s + (now - self.sched_start_s) // RESV_CHECK_S * RESV_CHECK_S
        if last_pass <= self.resv_checked_s:
            return
        self.resv_checked_s = last_pass
        for name in [n for n, r in self.reservations.items() if now >= r.end_s]:
            # An ended reservation is purged by the same pass (no recurrence is simulated).
            del self.reservations[name]
        for resv in self.reservations.values():
            resv.node_flags_set = resv.start_s <= now
        self._set_reservation_flags()

    def _set_reservation_flags(self) -> None:
        # set_node_maint_mode(): RESERVED on every node of a reservation the pass saw active, MAINT
        # too for a MAINT one.
        for node in self.nodes.values():
            node.flags &= ~(NodeFlag.RESERVED | NodeFlag.MAINT)
        for resv in self.reservations.values():
            if not resv.node_flags_set or resv.state_at(self.now_s).value != "ACTIVE":
                continue
            flags = NodeFlag.RESERVED
            if resv.flags & ReservationFlag.MAINT:
                flags |= NodeFlag.MAINT
            for name in resv.nodes:
                if name in self.nodes:
                    self.nodes[name].flags |= flags

    def _job_end_s(self, job: Job) -> int | None:
        start = job.start_s if job.start_s is not None else self.now_s
        return None if job.time_limit_min is None else start + job.time_limit_min * 60

    def licenses_used(self) -> dict[str, int]:
        """How many of each configured license the jobs holding an allocation use."""
        used = {name: 0 for name, _ in self.conf.licenses}
        for job in self.jobs.values():
            if job.allocated:
                for name, count in job.license_counts:
                    if name in used:
                        used[name] += count
        return used

    # ---- partitions ------------------------------------------------------------------------------

    def set_partition_state(self, part: Partition, state: PartitionState) -> None:
        """`scontrol update PartitionName= State=`."""
        part.state = state

    def set_partition_max_time(self, part: Partition, minutes: TimeLimit) -> None:
        """`scontrol update PartitionName= MaxTime=` (None: UNLIMITED); slurm.conf is not rewritten."""
        part.conf = replace(part.conf, max_time_min=minutes)

    # ---- scheduling ------------------------------------------------------------------------------

    def schedule(self) -> None:
        """Run one pass of the main scheduler (see `scheduler.schedule`)."""
        schedule(self)

    # ---- nodes -----------------------------------------------------------------------------------

    def drain(self, node: SlurmNode, reason: str, user: str) -> None:
        node.flags |= NodeFlag.DRAIN
        self._set_reason(node, reason, user)

    def undrain(self, node: SlurmNode) -> None:
        node.flags &= ~NodeFlag.DRAIN
        if node.base is not NodeBase.DOWN and not node.has(NodeFlag.FAIL):
            self._clear_reason(node)

    def set_down(self, node: SlurmNode, reason: str, user: str) -> None:
        self._set_down(node, reason, user)
        self.schedule()

    def _set_down(self, node: SlurmNode, reason: str, user: str, *, keep_reason: bool = False) -> None:
        node.base = NodeBase.DOWN
        if not keep_reason or node.reason is None or node.reason.startswith("Not responding"):
            self._set_reason(node, reason, user)
        for job in list(self.jobs.values()):
            if job.state is JobState.RUNNING and node.name in job.nodes:
                if job.batch:
                    alloc = (job.cpus, len(job.nodes))
                    self._release_nodes(job)
                    self._back_to_pending(job)
                    # Unlike `scontrol requeue`, no scheduler pass follows: the job waits with
                    # Reason=None and no AccrueTime for the next backfill pass, and keeps its last
                    # allocation's TRES (Debian's 22.05.8, a batch job on a node whose slurmd died).
                    job.reason, job.accrue_s, job.kept_alloc = Reason.NONE, None, alloc
                    job.unseen_until_s = self.next_backfill_s()
                else:
                    self._end_job(job, JobState.NODE_FAIL, self.now_s, reason=Reason.NODE_DOWN)
                    self._finish_completing(job)
        node.cpus_alloc = 0
        node.flags &= ~NodeFlag.COMPLETING

    def mark_not_responding(self, node: SlurmNode) -> None:
        """State=NoResp: flag the node until its slurmd answers the next ping."""
        node.flags |= NodeFlag.NOT_RESPONDING

    def fail(self, node: SlurmNode, reason: str, user: str) -> None:
        node.flags |= NodeFlag.FAIL
        self._set_reason(node, reason, user)

    def resume(self, node: SlurmNode) -> None:
        """State=RESUME: only a drained, failed or down node may resume; it then re-registers.

        A node whose last registration did not fit its line (INVALID_REG) may not resume at all
        (node_mgr.c, `_valid_node_state_change`): only a registration that fits clears it.
        """
        if node.has(NodeFlag.INVALID_REG) or not (
            node.has(NodeFlag.DRAIN) or node.has(NodeFlag.FAIL) or node.base is NodeBase.DOWN
        ):
            raise SlurmError("Invalid node state specified")
        node.flags &= ~(NodeFlag.DRAIN | NodeFlag.FAIL)
        if node.base is NodeBase.DOWN:
            node.base = NodeBase.IDLE
        self._clear_reason(node)
        node.flags |= NodeFlag.NOT_RESPONDING
        node.boot_s = None
        node.last_busy_s = self.now_s
        # A full SlurmdTimeout starts again: a node whose slurmd is still dead goes DOWN* once more.
        node.last_response_s = self.now_s
        self.resumed_at[node.name] = self.now_s
        # A node back in service sends every pending job to the main scheduler, jobs requeued by a
        # node failure too (Debian's 22.05.8: after RESUME of a rebooted node its requeued jobs
        # showed BeginTime, not None, 4 s later).
        for job in self.jobs.values():
            if job.state is JobState.PENDING and job.unseen_until_s is not None:
                job.unseen_until_s = self.now_s

    def rewrite_reason(self, node: SlurmNode, reason: str) -> None:
        """`scontrol update NodeName= Reason=` alone: a new text for the node's reason.

        Its user and time stay; a node without a reason keeps none.
        """
        if node.reason is not None:
            node.reason = reason

    def _set_reason(self, node: SlurmNode, reason: str, user: str) -> None:
        node.reason, node.reason_user, node.reason_s = reason, user, self.now_s

    def _clear_reason(self, node: SlurmNode) -> None:
        node.reason = node.reason_user = None
        node.reason_s = None

    # ---- lookups ---------------------------------------------------------------------------------

    def job(self, job_id: int) -> Job:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise SlurmError("Invalid job id specified") from None

    def node(self, name: str) -> SlurmNode:
        try:
            return self.nodes[name]
        except KeyError:
            raise ControllerError(f"no node {name!r} in slurm.conf") from None


def _has_gres(node_gres: str, wanted: str) -> bool:
    # --gres=gpu:2 fits a node whose Gres= lists gpu (with or without a type) with at least 2.
    name, _, count = wanted.partition(":")
    count = count.rsplit(":", 1)[-1]
    for item in node_gres.split(","):
        parts = item.split(":")
        if parts[0] == name:
            if not is_digits(count):
                return True
            have, need = to_int(parts[-1]) if is_digits(parts[-1]) else 1, to_int(count)
            return have is not None and need is not None and have >= need
    return False


def _min_nodes(request: JobRequest) -> int:
    return max(request.min_nodes or 1, len(request.req_nodes))


def _time_limit(request: JobRequest, part: Partition) -> tuple[int | None, TimeLimitSource]:
    """The job's own limit: --time, else the partition's DefaultTime, else none until it starts."""
    # Without --time the partition's DefaultTime is the job's own limit; with none either the
    # job keeps no limit of its own (NO_VAL) until it starts (TimeLimitSource.PARTITION).
    time_limit, source = request.time_limit_min, TimeLimitSource.JOB
    if not request.time_limit_set:
        time_limit = part.conf.default_time_min
        if time_limit is None:
            time_limit, source = part.conf.max_time_min, TimeLimitSource.PARTITION
    return time_limit, source


def _make_array_record(job: Job, array: tuple[list[int], int], request: JobRequest) -> None:
    """Make the new job its array's record: no task of its own yet, not yet eligible."""
    # Eligible only once the scheduler has looked at it (EligibleTime=Unknown right after sbatch,
    # 22.05.8).
    job.array_job_id, job.array_pending, job.array_throttle = job.job_id, array[0], array[1]
    job.array_output, job.array_error = request.stdout_path, request.stderr_path
    set_outputs(job, NO_TASK)
    job.array_task_id = None
