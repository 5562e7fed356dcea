"""The simulated systemd of every node: unit states, jobs (start/stop/restart/reload), the journal.

One `ServiceManager` per episode. Everything it prints or decides comes from the node's own files
(through `NodeAccess`), the virtual clock, and the state it keeps; nothing from the host. Each public
call first brings the cluster up to date (`sync`): it boots nodes not yet booted, notices daemons that
died (a killed process makes its unit fail, and `Restart=` may start it again), and lets each slurmd
log why its registration fails when that changes. The Slurm side asks `is_slurmd_registered(node)`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

from hpcgym.controller.clock import VirtualClock
from hpcgym.controller.services import httpd, munged, slurm
from hpcgym.controller.services.access import NodeAccess
from hpcgym.controller.services.daemon import Launch, Line, append_log, fill_pid
from hpcgym.controller.services.gpu import Gpu, gpu_count, make_gpus
from hpcgym.controller.services.journal import Catalog, Entry, Journal, Priority, pid1_priority
from hpcgym.controller.services.network import Network
from hpcgym.controller.services.slurm import MUNGE, SLURMCTLD, SLURMD, RegistrationProblem
from hpcgym.controller.services.units import (
    UNIT_DIRS,
    ActiveState,
    JobResult,
    Result,
    ServiceType,
    SubState,
    UnitFile,
    UnitFileState,
    UnitRuntime,
    parse_unit_file,
    unmet_condition,
    unset_variables,
)
from hpcgym.controller.slurmconf import SlurmConf

HTTPD = "httpd.service"
# The units each node may have, in boot order; a node has those whose unit file it holds.
BOOT_ORDER = (MUNGE, SLURMCTLD, SLURMD, HTTPD)
# ExecStart program -> the module that simulates it. A unit whose program is not here starts a
# plain stand-in process that never fails.
Launcher = Callable[["ServiceManager", str, UnitFile], Launch]
DAEMONS: dict[str, Launcher] = {
    "/usr/sbin/munged": munged.launch,
    "/usr/sbin/slurmd": slurm.launch_slurmd,
    "/usr/sbin/slurmctld": slurm.launch_slurmctld,
    "/usr/sbin/httpd": httpd.launch,
}
SIGNAL_NAMES = {1: "HUP", 2: "INT", 9: "KILL", 15: "TERM"}


@dataclass
class NodeServices:
    """One node's systemd: loaded units, journal, job ids."""

    journal: Journal
    units: dict[str, UnitRuntime] = field(default_factory=dict)
    booted: bool = False
    next_job_id: int = 100


class ServiceManager:
    """Every node's services, on one virtual clock.

    Example:
        >>> from hpcgym.controller.services.access import MemoryNodeAccess
        >>> manager = ServiceManager(MemoryNodeAccess(), VirtualClock(), nodes=["login01"],
        ...                          controller_host="login01")
        >>> manager.is_active("login01", "munge.service")
        False

    Args:
        access: the nodes' files and processes.
        clock: the episode's clock; every journal line is stamped from it.
        nodes: every node name (the login/controller host included).
        controller_host: SlurmctldHost; where slurmctld and the portal run.
        controller_addr: how nodes name the controller (resolved through each node's /etc/hosts).
        disabled: node -> units that are disabled at boot (scenario set-up; `systemctl enable` undoes it).
    """

    def __init__(
        self,
        access: NodeAccess,
        clock: VirtualClock,
        *,
        nodes: Sequence[str],
        controller_host: str,
        controller_addr: str | None = None,
        disabled: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        self.access = access
        # Scenario set-up: units (per node) that are disabled, so that boot does not start them.
        self.disabled = {node: set(units) for node, units in (disabled or {}).items()}
        self.clock = clock
        self.network = Network(access)
        self._controller_host = controller_host
        self._controller_addr = controller_addr or controller_host
        names = list(nodes) if controller_host in nodes else [controller_host, *nodes]
        self.nodes: dict[str, NodeServices] = {name: NodeServices(Journal(name)) for name in names}
        self._syncing = False
        # The GPUs of each GPU node (nvidia-smi's state); scenarios set their counters.
        self.gpus: dict[str, list[Gpu]] = {}
        # munge credentials: a serial that makes each one unique, and those each node has decoded
        # (munged refuses a replay).
        self.munge_serial = 0
        self.munge_seen: dict[str, set[str]] = {}

    @classmethod
    def from_slurm_conf(
        cls,
        conf: SlurmConf,
        access: NodeAccess,
        clock: VirtualClock,
        *,
        disabled: Mapping[str, Collection[str]] | None = None,
    ) -> ServiceManager:
        """A manager for slurm.conf's controller host and compute nodes, GPUs included."""
        manager = cls(
            access,
            clock,
            nodes=[conf.controller_host, *(node.name for node in conf.nodes)],
            controller_host=conf.controller_host,
            controller_addr=conf.controller_addr,
            disabled=disabled,
        )
        for node in conf.nodes:
            count = gpu_count(conf, node.name)
            if count:
                manager.gpus[node.name] = make_gpus(node.name, count)
        return manager

    # ---- what daemons and the Slurm side ask ------------------------------------------------------

    @property
    def now_s(self) -> int:
        return self.clock.now_s

    @property
    def controller_host(self) -> str:
        return self._controller_host

    def controller_addr(self, node: str) -> IPv4Address | None:
        return self.network.resolve(node, self._controller_addr)

    def is_active(self, node: str, unit: str) -> bool:
        """Whether `unit` runs on `node` as far as systemd knows (no sync: daemons call this mid-sync)."""
        state = self.nodes.get(node)
        runtime = state.units.get(unit) if state is not None else None
        return runtime is not None and runtime.active is ActiveState.ACTIVE

    def memo(self, node: str, unit: str) -> dict[str, str]:
        runtime = self.nodes[node].units.get(unit) if node in self.nodes else None
        return runtime.memo if runtime is not None else {}

    def is_slurmd_registered(self, node: str, *, sync: bool = True) -> bool:
        """Whether `node`'s slurmd runs and can talk to slurmctld now (what node state should follow).

        `sync=False` skips bringing the cluster up to date first, for a caller that just did.
        """
        if sync:
            self.sync()
        return self.is_active(node, SLURMD) and slurm.registration_problem(self, node) is None

    def registration_problem(self, node: str) -> RegistrationProblem | None:
        """Why `node`'s slurmd (or a Slurm client there) cannot talk to slurmctld now, or None."""
        self.sync()
        return slurm.registration_problem(self, node)

    def is_portal_upstream_healthy(self) -> bool:
        """The portal's dashboard can reach Slurm: slurmctld and munged run on the controller host."""
        self.sync()
        ctl = self._controller_host
        return self.is_active(ctl, SLURMCTLD) and self.is_active(ctl, MUNGE)

    # ---- time --------------------------------------------------------------------------------------

    def sync(self) -> None:
        """Boot what has not booted, reap dead daemons, and log registration changes, at the clock's now."""
        if self._syncing:
            return
        self._syncing = True
        try:
            for node in self.nodes:
                if not self.nodes[node].booted:
                    self.boot(node)
            for node in self.nodes:
                self._reap(node)
            for node in self.nodes:
                self._check_registration(node)
        finally:
            self._syncing = False

    def boot(self, node: str) -> None:
        """Bring the node up: eth0, then every enabled unit it has, in boot order."""
        state = self._state(node)
        state.booted = True
        self.network.boot(node)
        for name in BOOT_ORDER:
            runtime = self.unit(node, name)
            if runtime is not None and runtime.enabled is UnitFileState.ENABLED:
                self._start(node, runtime)

    def _reap(self, node: str) -> None:
        for runtime in list(self._state(node).units.values()):
            pid = runtime.main_pid
            if runtime.active is not ActiveState.ACTIVE or pid is None or self.access.is_alive(node, pid):
                continue
            # We cannot tell which signal ended it; a kill from outside systemd reads as SIGKILL.
            self._main_exited(node, runtime, pid, "killed", 9, Result.SIGNAL)
            if runtime.file.restart.restarts_after_signal():
                runtime.n_restarts += 1
                self._log_systemd(
                    node,
                    runtime,
                    f"{runtime.name}: Scheduled restart job, restart counter is at {runtime.n_restarts}.",
                )
                self._log_systemd(
                    node, runtime, f"Stopped {runtime.file.description}.", Catalog.JOB_STOP_DONE
                )
                self._start(node, runtime)

    def _check_registration(self, node: str) -> None:
        runtime = self._state(node).units.get(SLURMD)
        if runtime is None or runtime.active is not ActiveState.ACTIVE or runtime.main_pid is None:
            return
        problem = slurm.registration_problem(self, node)
        name = problem.name if problem is not None else ""
        if runtime.memo.get("registration", "") == name:
            return
        runtime.memo["registration"] = name
        if problem is not None:
            for line in slurm.log_registration_failure(self, node, problem):
                self._log(node, runtime, "slurmd", runtime.main_pid, line)

    # ---- units -------------------------------------------------------------------------------------

    def unit(self, node: str, name: str) -> UnitRuntime | None:
        """The loaded unit, loading it from the node's unit dirs on first use; None if it has no file."""
        state = self._state(node)
        if name in state.units:
            return state.units[name]
        file = self._read_unit_file(node, name)
        if file is None:
            return None
        enabled = _initial_file_state(file)
        if name in self.disabled.get(node, ()) and enabled is UnitFileState.ENABLED:
            enabled = UnitFileState.DISABLED
        runtime = UnitRuntime(file=file, enabled=enabled)
        state.units[name] = runtime
        return runtime

    def _read_unit_file(self, node: str, name: str) -> UnitFile | None:
        for directory in UNIT_DIRS:
            path = posixpath.join(directory, name)
            raw = self.access.read(node, path)
            if raw is not None:
                return parse_unit_file(name, path, raw)
        return None

    def _state(self, node: str) -> NodeServices:
        # A node slurm.conf does not name (a login node that runs no slurmctld, say) still has a
        # systemd; it boots the first time anyone asks about it.
        if node not in self.nodes:
            self.nodes[node] = NodeServices(Journal(node))
            if not self._syncing:
                self.boot(node)
        return self.nodes[node]

    def loaded_units(self, node: str) -> list[UnitRuntime]:
        """Units systemd has loaded on the node, sorted by name (what list-units walks)."""
        self.sync()
        for name in BOOT_ORDER:
            self.unit(node, name)
        return sorted(self._state(node).units.values(), key=lambda unit: unit.name)

    def changed_on_disk(self, node: str, runtime: UnitRuntime) -> bool:
        return self.access.read(node, runtime.file.path) != runtime.file.raw

    def daemon_reload(self, node: str) -> None:
        for runtime in self._state(node).units.values():
            file = self._read_unit_file(node, runtime.name)
            if file is not None:
                runtime.file = file

    def journal(self, node: str) -> Journal:
        self.sync()
        return self._state(node).journal

    # ---- jobs --------------------------------------------------------------------------------------

    def start(self, node: str, name: str) -> JobResult:
        self.sync()
        runtime = self.unit(node, name)
        if runtime is None:
            return JobResult.NOT_FOUND
        if runtime.active is ActiveState.ACTIVE:
            return JobResult.DONE
        return self._start(node, runtime)

    def stop(self, node: str, name: str) -> JobResult:
        self.sync()
        runtime = self.unit(node, name)
        if runtime is None:
            return JobResult.NOT_FOUND
        self._stop(node, runtime)
        return JobResult.DONE

    def restart(self, node: str, name: str) -> JobResult:
        self.sync()
        runtime = self.unit(node, name)
        if runtime is None:
            return JobResult.NOT_FOUND
        self._stop(node, runtime)
        return self._start(node, runtime)

    def reload(self, node: str, name: str) -> JobResult:
        self.sync()
        runtime = self.unit(node, name)
        if runtime is None:
            return JobResult.NOT_FOUND
        if not runtime.file.exec_reload:
            return JobResult.NOT_RELOADABLE
        if runtime.active is not ActiveState.ACTIVE:
            return JobResult.INACTIVE
        self._log_systemd(node, runtime, f"Reloading {runtime.file.description}...")
        self._log_systemd(node, runtime, f"Reloaded {runtime.file.description}.")
        return JobResult.DONE

    def kill_main_process(self, node: str, name: str, signal: int = 9) -> int | None:
        """Scenario hook: kill a unit's main process from outside systemd, as `kill -9 PID` would.

        The unit notices at the next sync (failed, or restarted where its Restart= says so).
        Returns the pid killed, or None if the unit had no running main process.
        """
        runtime = self.unit(node, name)
        pid = runtime.main_pid if runtime is not None else None
        if pid is not None:
            self.access.kill(node, pid, signal)
        return pid

    def set_enabled(self, node: str, name: str, enabled: bool) -> JobResult:
        self.sync()
        runtime = self.unit(node, name)
        if runtime is None:
            return JobResult.NOT_FOUND
        if runtime.enabled is not UnitFileState.STATIC:
            runtime.enabled = UnitFileState.ENABLED if enabled else UnitFileState.DISABLED
        return JobResult.DONE

    def _next_job(self, node: str) -> str:
        state = self._state(node)
        state.next_job_id += 1
        return str(state.next_job_id)

    def _start(self, node: str, runtime: UnitRuntime) -> JobResult:
        file, now = runtime.file, self.now_s
        desc = file.description
        job = self._next_job(node)
        condition = unmet_condition(file, lambda path: self.access.stat(node, path) is not None)
        if condition is not None:
            self._log_systemd(
                node, runtime, f"{desc} was skipped because of an unmet condition check ({condition})."
            )
            runtime.memo = {"condition": condition, "condition_s": str(now)}
            return JobResult.DONE
        launcher = DAEMONS.get(file.binary)
        launch = (
            launcher(self, node, file)
            if launcher is not None
            else Launch(ok=True, comm=posixpath.basename(file.binary) or "sh", argv=file.exec_start.split())
        )
        simple = file.service_type is ServiceType.SIMPLE
        if simple:
            self._log_systemd(node, runtime, f"Started {desc}.", Catalog.JOB_START_DONE, job=job)
        else:
            self._log_systemd(node, runtime, f"Starting {desc}...", Catalog.JOB_START_BEGUN, job=job)
        forking = file.service_type is ServiceType.FORKING
        if not launch.ok:
            # The process that failed its checks did run: give it a pid from the node's own sequence.
            failed_pid = self.access.start_process(node, launch.comm, launch.argv, uid=launch.uid)
            self.access.kill(node, failed_pid, 9)
            self._log_unset_variables(node, runtime, launch.comm, failed_pid)
            for line in launch.stderr:
                self._log(node, runtime, launch.comm, failed_pid, line)
            append_log(
                self.access,
                node,
                launch.log_file,
                fill_pid(launch.log_lines, failed_pid),
                launch.uid,
                launch.gid,
            )
            status = f"{launch.exit_status}/FAILURE"
            kind = "Control" if forking else "Main"
            self._log_systemd(
                node, runtime, f"{runtime.name}: {kind} process exited, code=exited, status={status}",
                Catalog.PROCESS_EXITED, code="exited", status=str(launch.exit_status),
            )  # fmt: skip
            self._set_failed(node, runtime, Result.EXIT_CODE)
            if forking:
                runtime.control_exit, runtime.main_exit = (failed_pid, "exited", status), None
            else:
                runtime.control_exit, runtime.main_exit = None, (failed_pid, "exited", status)
            if simple:
                return JobResult.DONE
            self._log_systemd(node, runtime, f"Failed to start {desc}.", Catalog.JOB_START_FAILED, job=job)
            return JobResult.FAILED
        pid = self.access.start_process(node, launch.comm, launch.argv, uid=launch.uid)
        # A forking daemon's parent ran just before it and exited once the child was up.
        parent = pid - 1 if forking else None
        self._log_unset_variables(node, runtime, launch.comm, parent if parent is not None else pid)
        if launch.pid_file:
            self.access.write(
                node, launch.pid_file, f"{pid}\n".encode(), mode=0o644, uid=launch.uid, gid=launch.gid
            )
        append_log(
            self.access, node, launch.log_file, fill_pid(launch.log_lines, pid), launch.uid, launch.gid
        )
        for line in launch.stderr:
            self._log(node, runtime, launch.comm, parent if forking and parent is not None else pid, line)
        runtime.active, runtime.sub, runtime.result = ActiveState.ACTIVE, SubState.RUNNING, Result.SUCCESS
        runtime.main_pid, runtime.main_exit = pid, None
        runtime.control_exit = (parent, "exited", "0/SUCCESS") if forking and parent is not None else None
        runtime.state_since_s = runtime.active_enter_s = now
        runtime.memo = {
            **launch.memo,
            "comm": launch.comm,
            "cmdline": " ".join(launch.argv),
            "pid_file": launch.pid_file,
        }
        if not simple:
            self._log_systemd(node, runtime, f"Started {desc}.", Catalog.JOB_START_DONE, job=job)
        return JobResult.DONE

    def _log_unset_variables(self, node: str, runtime: UnitRuntime, comm: str, pid: int) -> None:
        missing = unset_variables(runtime.file, lambda path: self.access.read(node, path))
        if missing:
            text = f"{runtime.name}: Referenced but unset environment variable evaluates to an empty string: "
            self._log(node, runtime, f"({comm})", pid, Line(text + ", ".join(missing), Priority.WARNING))

    def _stop(self, node: str, runtime: UnitRuntime) -> None:
        if runtime.active is not ActiveState.ACTIVE or runtime.main_pid is None:
            return
        desc, job, pid = runtime.file.description, self._next_job(node), runtime.main_pid
        self._log_systemd(node, runtime, f"Stopping {desc}...", Catalog.JOB_STOP_BEGUN, job=job)
        self.access.kill(node, pid, 15)
        # The daemons we simulate remove their pid file on a clean exit.
        pid_file = runtime.file.pid_file or runtime.memo.get("pid_file", "")
        if pid_file:
            self.access.remove(node, pid_file)
        self._log_systemd(node, runtime, f"{runtime.name}: Deactivated successfully.", Catalog.UNIT_SUCCEEDED)
        self._log_systemd(node, runtime, f"Stopped {desc}.", Catalog.JOB_STOP_DONE, job=job)
        runtime.active, runtime.sub, runtime.result = ActiveState.INACTIVE, SubState.DEAD, Result.SUCCESS
        runtime.main_pid, runtime.main_exit = None, (pid, "exited", "0/SUCCESS")
        runtime.state_since_s = self.now_s
        runtime.memo = {}

    def _main_exited(
        self, node: str, runtime: UnitRuntime, pid: int, code: str, status: int, result: Result
    ) -> None:
        text = (
            f"{status}/{SIGNAL_NAMES.get(status, str(status))}" if code == "killed" else f"{status}/FAILURE"
        )
        self._log_systemd(
            node, runtime, f"{runtime.name}: Main process exited, code={code}, status={text}",
            Catalog.PROCESS_EXITED, code=code, status=str(status),
        )  # fmt: skip
        runtime.main_pid, runtime.main_exit = None, (pid, code, text)
        self._set_failed(node, runtime, result)

    def _set_failed(self, node: str, runtime: UnitRuntime, result: Result) -> None:
        self._log_systemd(
            node, runtime, f"{runtime.name}: Failed with result '{result.value}'.", Catalog.UNIT_FAILED,
            result=result.value,
        )  # fmt: skip
        runtime.active, runtime.sub, runtime.result = ActiveState.FAILED, SubState.FAILED, result
        runtime.main_pid = None
        runtime.state_since_s = self.now_s
        runtime.memo = {}

    # ---- journal -----------------------------------------------------------------------------------

    def _log_systemd(
        self, node: str, runtime: UnitRuntime, text: str, catalog: Catalog | None = None, **fields: str
    ) -> None:
        self._state(node).journal.add(
            Entry(self.now_s, "systemd", 1, runtime.name, text, pid1_priority(text), catalog, dict(fields))
        )

    def _log(self, node: str, runtime: UnitRuntime, comm: str, pid: int, line: Line) -> None:
        # A daemon's stderr reaches the journal at SyslogLevel= (info), whatever the text says: only
        # systemd's own lines carry their real priority, as `journalctl -p err` shows.
        priority = line.priority if comm.startswith("(") else Priority.INFO
        self._state(node).journal.add(Entry(self.now_s, comm, pid, runtime.name, line.text, priority))


def _initial_file_state(file: UnitFile) -> UnitFileState:
    # The images ship every service meant to run as enabled (a provisioned node), so a unit with an
    # [Install] section starts enabled; scenarios disable what they want off at boot.
    return UnitFileState.ENABLED if file.wanted_by else UnitFileState.STATIC
