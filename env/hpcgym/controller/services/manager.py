"""The episode's services as peers (`ServiceManager`), and the simulated systemd of every node (`Systemd`).

One `ServiceManager` per episode, built with the controller: it holds each peer once (`systemd`,
`network`, `clocks`, `hardware`, `munge`, `packages`, `users`; peers.py) and answers what spans them.
`Systemd` keeps the loaded units, their states and the journals; the transitions a job makes (and
the lines they log) are in lifecycle.py. Everything it prints or decides comes from the node's own
files (through `NodeAccess`), the virtual clock, and the state it keeps; nothing from the host. Each
public call first brings the cluster up to date (`Systemd.sync`): it boots nodes not yet booted,
notices daemons that died (a killed process makes its unit fail, and `Restart=` may start it again),
and lets each slurmd log why its registration fails when that changes. The Slurm side asks
`is_slurmd_registered(node)`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address

from hpcgym.controller.clock import VirtualClock
from hpcgym.controller.hardware import NodeHardware
from hpcgym.controller.services import lifecycle, slurm, slurmdbd
from hpcgym.controller.services.access import NodeAccess, is_symlink
from hpcgym.controller.services.daemon import append_log, iso_time
from hpcgym.controller.services.facts import Facts
from hpcgym.controller.services.gpu import gpu_count, make_gpus
from hpcgym.controller.services.journal import Catalog, Entry, Journal
from hpcgym.controller.services.mariadb import MARIADB
from hpcgym.controller.services.network import Network
from hpcgym.controller.services.packages import PackageDB
from hpcgym.controller.services.peers import Hardware, MungeCredentials, NodeClocks
from hpcgym.controller.services.slurm import MUNGE, SLURMCTLD, SLURMD, RegistrationProblem, SlurmdFacts
from hpcgym.controller.services.slurmdbd import SLURMDBD, SlurmdbdFacts
from hpcgym.controller.services.syslog import MessagesSink
from hpcgym.controller.services.units import (
    UNIT_DIRS,
    ActiveState,
    JobResult,
    Result,
    SubState,
    UnitFile,
    UnitFileState,
    UnitRuntime,
    parse_unit_file,
)
from hpcgym.controller.services.users import LaunchChecks
from hpcgym.controller.slurmconf import SlurmConf

HTTPD = "httpd.service"
CHRONYD = "chronyd.service"
# The units each node may have, in boot order; a node has those whose unit file it holds.
BOOT_ORDER = (MUNGE, MARIADB, SLURMDBD, SLURMCTLD, SLURMD, HTTPD, CHRONYD)
# The simulated daemon each of those units is there to run: what serves the cluster.
UNIT_DAEMONS = {
    MUNGE: "munged",
    SLURMCTLD: "slurmctld",
    SLURMD: "slurmd",
    HTTPD: "httpd",
    CHRONYD: "chronyd",
    MARIADB: "mariadbd",
    SLURMDBD: "slurmdbd",
}


@dataclass
class NodeServices:
    """One node's systemd: loaded units, journal, job ids."""

    journal: Journal
    units: dict[str, UnitRuntime] = field(default_factory=dict)
    booted: bool = False
    next_job_id: int = 100


class ServiceManager:
    """The episode's services, as peers: each node's systemd, the network, clocks, hardware, munge.

    One per episode, built once and passed explicitly; callers reach the peer they need
    (`services.systemd.start(node, unit)`, `services.network`, `services.clocks.node_now_s(node)`).
    What it answers itself are the questions that span peers: whether a node's slurmd is registered,
    whether a node reaches SlurmctldHost, whether the portal's upstream runs.

    Example:
        >>> from hpcgym.controller.services.access import MemoryNodeAccess
        >>> services = ServiceManager(MemoryNodeAccess(), VirtualClock(), nodes=["login01"],
        ...                           controller_host="login01")
        >>> services.systemd.is_active("login01", "munge.service")
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
        self.clocks = NodeClocks(clock)
        self.network = Network(access)
        self._controller_host = controller_host
        self._controller_addr = controller_addr or controller_host
        # What each compute node physically has and its GPUs; from_slurm_conf fills it from slurm.conf.
        self.hardware = Hardware()
        # When each node's health check (HealthCheckProgram, services/nhc.py) last ran.
        self.health_runs: dict[str, int] = {}
        self.munge = MungeCredentials()
        # Each node's RPM database and the site repository (packages.py); the episode sets it up.
        self.packages: PackageDB | None = None
        # What a user's job may run on each node (users.py); the episode sets it up.
        self.users: LaunchChecks | None = None
        names = list(nodes) if controller_host in nodes else [controller_host, *nodes]
        self.systemd = Systemd(self, names, disabled or {})

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
                manager.hardware.gpus[node.name] = make_gpus(node.name, count)
            manager.hardware.nodes[node.name] = NodeHardware.from_node_conf(node, gpus=count)
        return manager

    # ---- questions that span peers ------------------------------------------------------------------

    @property
    def controller_host(self) -> str:
        return self._controller_host

    def node_at(self, addr: IPv4Address) -> str | None:
        """The node whose eth0 holds `addr` (by its own /etc/hosts), if any: who answers a packet."""
        return next((name for name in self.systemd.nodes if self.network.address(name) == addr), None)

    def controller_addr(self, node: str) -> IPv4Address | None:
        return self.network.resolve(node, self._controller_addr)

    def can_reach_controller(self, node: str) -> bool:
        """Whether `node` has a network path to SlurmctldHost (its routes and /etc/hosts)."""
        addr = self.controller_addr(node)
        return node == self._controller_host or (addr is not None and self.network.can_reach(node, addr))

    def is_slurmd_registered(self, node: str, *, sync: bool = True) -> bool:
        """Whether `node`'s slurmd runs and can talk to slurmctld now (what node state should follow).

        `sync=False` skips bringing the cluster up to date first, for a caller that just did.
        """
        if sync:
            self.systemd.sync()
        return self.systemd.is_active(node, SLURMD) and slurm.registration_problem(self, node) is None

    def registration_problem(self, node: str) -> RegistrationProblem | None:
        """Why `node`'s slurmd (or a Slurm client there) cannot talk to slurmctld now, or None."""
        self.systemd.sync()
        return slurm.registration_problem(self, node)

    def is_portal_upstream_healthy(self) -> bool:
        """The portal's dashboard can reach Slurm: slurmctld and munged run on the controller host."""
        self.systemd.sync()
        ctl = self._controller_host
        return self.systemd.is_active(ctl, SLURMCTLD) and self.systemd.is_active(ctl, MUNGE)


class Systemd:
    """Every node's systemd: its loaded units and their states, its journal, and the jobs it runs.

    Each public call first brings the cluster up to date (`sync`). A unit's daemon starts against
    `services` (the episode's other peers: files, network, clocks, hardware), as lifecycle.py does it.

    Args:
        services: the episode's services, which this systemd is one of.
        names: every node name (the login/controller host included).
        disabled: node -> units that are disabled at boot (scenario set-up; `systemctl enable` undoes it).
    """

    def __init__(
        self, services: ServiceManager, names: Sequence[str], disabled: Mapping[str, Collection[str]]
    ) -> None:
        self.services = services
        # The peers systemd itself reads: the nodes' files and processes, and their clocks.
        self._access, self._clocks = services.access, services.clocks
        # Scenario set-up: units (per node) that are disabled, so that boot does not start them.
        self.disabled = {node: set(units) for node, units in disabled.items()}
        self.nodes: dict[str, NodeServices] = {
            name: NodeServices(Journal(name, sink=MessagesSink(self._access, name))) for name in names
        }
        self._syncing = False
        # What the last sync judged of each node whose slurmd runs (`is_registered_as_synced`).
        self._judged: dict[str, RegistrationProblem | None] = {}

    # ---- what daemons and the Slurm side ask ------------------------------------------------------

    def is_active(self, node: str, unit: str) -> bool:
        """Whether `unit` serves on `node` (no sync: daemons call this mid-sync).

        systemd has it active, and for one of the cluster's units (`UNIT_DAEMONS`) its main process is
        the daemon the unit is for: a slurmd.service whose ExecStart became `/bin/sleep infinity` is
        active to systemctl, but no slurmd registers, and a munge.service running sleep has no socket.
        """
        state = self.nodes.get(node)
        runtime = state.units.get(unit) if state is not None else None
        if runtime is None or runtime.active is not ActiveState.ACTIVE:
            return False
        wanted = UNIT_DAEMONS.get(unit)
        return wanted is None or (runtime.process is not None and runtime.process.daemon == wanted)

    def daemon_of(self, node: str, unit: str) -> str | None:
        """The simulated daemon (`munged`, `slurmd`, ...) that `unit`'s live main process is, or None.

        None where the unit is not running, or runs some other program its ExecStart names (a
        stand-in that makes no daemon's checks). A grader asks `daemon_of(node, "munge.service") ==
        "munged"` for "munge.service runs the real munged".
        """
        self.sync()
        runtime = self.unit(node, unit)
        if runtime is None or runtime.active is not ActiveState.ACTIVE or runtime.main_pid is None:
            return None
        if not self._access.is_alive(node, runtime.main_pid):
            return None
        return (runtime.process.daemon if runtime.process is not None else "") or None

    def facts(self, node: str, unit: str, kind: type[Facts]) -> Facts | None:
        """The facts of `kind` that `unit`'s running daemon on `node` left (no sync), or None."""
        runtime = self.nodes[node].units.get(unit) if node in self.nodes else None
        return runtime.facts(kind) if runtime is not None else None

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
                self._follow_slurmdbd(node)
            self._judged = {}
            for node in self.nodes:
                self._check_registration(node)
        finally:
            self._syncing = False

    def is_registered_as_synced(self, node: str) -> bool:
        """`is_slurmd_registered(node, sync=False)` right after `sync()`, from what that sync judged.

        The Slurm side asks this of every node after every request and tick; judging each node a
        second time, with nothing changed in between, was a quarter of a tick.
        """
        if node in self._judged:
            return self._judged[node] is None
        return self.services.is_slurmd_registered(node, sync=False)

    def boot(self, node: str) -> None:
        """Bring the node up: eth0, then every enabled unit it has, in boot order."""
        state = self.node_state(node)
        state.booted = True
        self.services.network.boot(node)
        for name in BOOT_ORDER:
            runtime = self.unit(node, name)
            if runtime is not None and runtime.enabled is UnitFileState.ENABLED:
                lifecycle.start_unit(self.services, node, runtime)

    def _reap(self, node: str) -> None:
        for runtime in list(self.node_state(node).units.values()):
            pid = runtime.main_pid
            if runtime.active is not ActiveState.ACTIVE or pid is None or self._access.is_alive(node, pid):
                continue
            # The node's init says how it ended; the host has already seen that it did.
            code, status = lifecycle.decode_wait_status(self._access.exit_status(node, pid))
            result = lifecycle.main_ended(self.services, node, runtime, pid, code, status)
            if runtime.file.restart.restarts_after(result):
                runtime.n_restarts += 1
                lifecycle.log_systemd(
                    self.services,
                    node,
                    runtime,
                    f"{runtime.name}: Scheduled restart job, restart counter is at {runtime.n_restarts}.",
                )
                lifecycle.log_systemd(
                    self.services,
                    node,
                    runtime,
                    f"Stopped {runtime.file.description}.",
                    Catalog.JOB_STOP_DONE,
                )
                lifecycle.start_unit(self.services, node, runtime)

    def _follow_slurmdbd(self, node: str) -> None:
        # A slurmdbd in its start-up loop tries its database every 5 s, logging each try.
        runtime = self.node_state(node).units.get(SLURMDBD)
        if runtime is None or runtime.main_pid is None or not self.is_active(node, SLURMDBD):
            return
        facts = runtime.facts(SlurmdbdFacts)
        if facts is None:
            return
        facts, lines = slurmdbd.follow_database(self.services, node, facts)
        runtime.set_facts(facts)
        if not lines:
            return
        journal, pid, skew = self.node_state(node).journal, runtime.main_pid, self._clocks.offset(node)
        for when, text in lines:
            journal.add(Entry(when + skew, "slurmdbd", pid, SLURMDBD, f"slurmdbd: {text}"))
        log_file = (slurmdbd.read_dbd_conf(self.services, node) or {}).get("logfile", "")
        uid, gid = slurmdbd.lookup_ids(self._access, node, runtime.file.user or "slurm")
        append_log(self._access, node, log_file, [f"[{iso_time(t)}.000] {x}" for t, x in lines], uid, gid)

    def _check_registration(self, node: str) -> None:
        runtime = self.node_state(node).units.get(SLURMD)
        if runtime is None or not self.is_active(node, SLURMD) or runtime.main_pid is None:
            return
        problem = slurm.registration_problem(self.services, node)
        self._judged[node] = problem
        facts = runtime.facts(SlurmdFacts) or SlurmdFacts()
        if facts.registration is problem:
            return
        runtime.set_facts(replace(facts, registration=problem))
        if problem is not None:
            for line in slurm.log_registration_failure(self.services, node, problem):
                lifecycle.log_line(self.services, node, runtime, "slurmd", runtime.main_pid, line)
        if problem in (RegistrationProblem.CLOCK_REWOUND, RegistrationProblem.CLOCK_EXPIRED):
            self._log_decode_failure(node, problem)

    def _log_decode_failure(self, node: str, problem: RegistrationProblem) -> None:
        # The other side of a skewed registration: slurmctld's munged rejects the node's credential.
        ctl_host = self.services.controller_host
        ctl = self.node_state(ctl_host).units.get(SLURMCTLD)
        if ctl is None or ctl.main_pid is None or not self.is_active(ctl_host, SLURMCTLD):
            return
        encoded, decoded = self._clocks.node_now_s(node), self._clocks.node_now_s(ctl_host)
        texts = slurm.slurmctld_decode_errors(problem, encoded, decoded)
        for line in slurm.daemon_lines("slurmctld", texts):
            lifecycle.log_line(self.services, ctl_host, ctl, "slurmctld", ctl.main_pid, line)

    # ---- units -------------------------------------------------------------------------------------

    def unit(self, node: str, name: str) -> UnitRuntime | None:
        """The loaded unit, loading it from the node's unit dirs on first use; None if it has no file."""
        state = self.node_state(node)
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
        # systemd's unit name map (unit-file.c) takes a regular file or a symlink under a unit's name,
        # the first directory first; a directory or FIFO there is skipped. A symlink that leads to
        # anything but a unit file (a device, a FIFO, a loop, nothing) gives a unit with no command,
        # and so does a file too big for us to read.
        for directory in UNIT_DIRS:
            path = posixpath.join(directory, name)
            info = self._access.stat(node, path)
            if info is not None and info.is_file():
                return parse_unit_file(name, path, self._access.read(node, path) or b"")
            if is_symlink(self._access, node, path):
                return parse_unit_file(name, path, b"")
        return None

    def node_state(self, node: str) -> NodeServices:
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
        return sorted(self.node_state(node).units.values(), key=lambda unit: unit.name)

    def changed_on_disk(self, node: str, runtime: UnitRuntime) -> bool:
        return (self._access.read(node, runtime.file.path) or b"") != runtime.file.raw

    def daemon_reload(self, node: str) -> None:
        for runtime in self.node_state(node).units.values():
            file = self._read_unit_file(node, runtime.name)
            if file is not None:
                runtime.file = file

    def journal(self, node: str) -> Journal:
        self.sync()
        return self.node_state(node).journal

    # ---- jobs --------------------------------------------------------------------------------------

    def start(self, node: str, name: str) -> JobResult:
        self.sync()
        runtime = self.unit(node, name)
        if runtime is None:
            return JobResult.NOT_FOUND
        if runtime.active is ActiveState.ACTIVE:
            return JobResult.DONE
        return lifecycle.start_unit(self.services, node, runtime)

    def stop(self, node: str, name: str) -> JobResult:
        self.sync()
        runtime = self.unit(node, name)
        if runtime is None:
            return JobResult.NOT_FOUND
        lifecycle.stop_unit(self.services, node, runtime)
        return JobResult.DONE

    def restart(self, node: str, name: str) -> JobResult:
        self.sync()
        runtime = self.unit(node, name)
        if runtime is None:
            return JobResult.NOT_FOUND
        lifecycle.stop_unit(self.services, node, runtime)
        return lifecycle.start_unit(self.services, node, runtime)

    def reload(self, node: str, name: str) -> JobResult:
        self.sync()
        runtime = self.unit(node, name)
        if runtime is None:
            return JobResult.NOT_FOUND
        if not runtime.file.exec_reload:
            return JobResult.NOT_RELOADABLE
        if runtime.active is not ActiveState.ACTIVE:
            return JobResult.INACTIVE
        lifecycle.log_systemd(self.services, node, runtime, f"Reloading {runtime.file.description}...")
        lifecycle.log_systemd(self.services, node, runtime, f"Reloaded {runtime.file.description}.")
        return JobResult.DONE

    def reset_failed(self, node: str, name: str | None = None) -> None:
        """`systemctl reset-failed [UNIT]`: failed units become inactive and their start counts reset."""
        self.sync()
        for runtime in self.node_state(node).units.values():
            if name is None or runtime.name == name:
                runtime.start_times_s = []
                if runtime.active is ActiveState.FAILED:
                    runtime.active, runtime.sub, runtime.result = (
                        ActiveState.INACTIVE,
                        SubState.DEAD,
                        Result.SUCCESS,
                    )

    def kill_main_process(self, node: str, name: str, signal: int = 9) -> int | None:
        """Scenario hook: kill a unit's main process from outside systemd, as `kill -9 PID` would.

        The unit notices at the next sync (failed, or restarted where its Restart= says so).
        Returns the pid killed, or None if the unit had no running main process.
        """
        runtime = self.unit(node, name)
        pid = runtime.main_pid if runtime is not None else None
        if pid is not None:
            self._access.kill(node, pid, signal)
        return pid

    def set_enabled(self, node: str, name: str, enabled: bool) -> JobResult:
        self.sync()
        runtime = self.unit(node, name)
        if runtime is None:
            return JobResult.NOT_FOUND
        if runtime.enabled is not UnitFileState.STATIC:
            runtime.enabled = UnitFileState.ENABLED if enabled else UnitFileState.DISABLED
        return JobResult.DONE


def _initial_file_state(file: UnitFile) -> UnitFileState:
    # The images ship every service meant to run as enabled (a provisioned node), so a unit with an
    # [Install] section starts enabled; scenarios disable what they want off at boot.
    return UnitFileState.ENABLED if file.wanted_by else UnitFileState.STATIC
