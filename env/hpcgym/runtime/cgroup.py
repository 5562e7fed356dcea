"""Per-episode cgroups: one memory and process budget for all the nodes of a cluster.

RLIMIT_AS bounds one process and RLIMIT_NPROC one node, but only a cgroup bounds the sum, so that
a cluster whose processes each stay under their limits still cannot take the host's memory. Where
the host lets us create cgroups (cgroup v2 with the memory and pids controllers, or the v1 memory
and pids hierarchies), every sandbox process joins its cluster's cgroup before it becomes an
unprivileged uid; elsewhere hpcgym logs that only rlimits apply. Cgroups are named like the
cluster's scratch dir, so the start-up sweep recognises a dead owner's leftovers.

The parent that holds every cluster's cgroup is capped too (`ParentLimits`): per-cluster caps alone
do not add up to a bound, and 64 clusters of 1,024 processes each outnumber a default pid_max.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from hpcgym.runtime.sweep import PREFIX, is_owner_alive

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT_NAME = "hpcgym"


@dataclass(frozen=True)
class EpisodeCgroup:
    dirs: tuple[Path, ...]

    @property
    def procs_files(self) -> tuple[Path, ...]:
        return tuple(d / "cgroup.procs" for d in self.dirs)

    def remove(self) -> None:
        for d in self.dirs:
            _rmdir_when_empty(d)


def _rmdir_when_empty(path: Path, wait_s: float = 2.0) -> None:
    # The kernel frees a cgroup only once its last process is reaped, a moment after SIGKILL.
    deadline = time.monotonic() + wait_s
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                log.warning("cgroup %s not removed: %s", path, e)
                return
            time.sleep(0.01)


def _kill_members(cgroup: Path) -> None:
    try:
        members = [int(pid) for pid in (cgroup / "cgroup.procs").read_text().split()]
    except OSError:
        return
    for pid in members:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if members:
        log.info("swept %d leftover processes from %s", len(members), cgroup)


def remove_cgroup_tree(cgroup: Path) -> None:
    """End every process in a cgroup and its children (a runtime's holds its clusters'), then remove it."""
    for child in cgroup.iterdir():
        if child.is_dir():
            remove_cgroup_tree(child)
    _kill_members(cgroup)
    _rmdir_when_empty(cgroup, wait_s=2.0)


def join_cgroup(procs_files: tuple[Path, ...]) -> None:
    """Move the calling process into a cgroup (called in a child before it drops root)."""
    pid = str(os.getpid()).encode()
    for procs in procs_files:
        fd = os.open(procs, os.O_WRONLY)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)


# Shares of the host that all hpcgym clusters on it may take together. The rest stays the host's
# own: however many clusters run, the controller can still fork and the host keeps memory for itself.
HOST_PIDS_SHARE = 0.5
HOST_MEMORY_SHARE = 0.75


@dataclass(frozen=True)
class ParentLimits:
    """Caps on the parent cgroup: every cluster of every hpcgym process on the host, together."""

    max_pids: int
    memory_bytes: int

    @classmethod
    def from_host(cls) -> ParentLimits:
        """Half the host's pids (pid_max or threads-max, whichever is lower), three quarters of its RAM."""
        pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
        threads_max = int(Path("/proc/sys/kernel/threads-max").read_text())
        mem_kib = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        page = os.sysconf("SC_PAGE_SIZE")  # the kernel rounds a memory limit down to whole pages
        memory_bytes = int((mem_kib << 10) * HOST_MEMORY_SHARE) // page * page
        return cls(int(min(pid_max, threads_max) * HOST_PIDS_SHARE), memory_bytes)


def _lower_cap(path: Path, value: int) -> None:
    # The parent is shared (and may be an admin's): a tighter cap already there stands.
    current = path.read_text().strip()
    if current == "max" or int(current) > value:
        path.write_text(str(value))


@dataclass(frozen=True)
class Cgroups:
    """The parent cgroups under which each cluster gets its own (one per controller hierarchy)."""

    version: int
    parents: tuple[Path, ...]

    @classmethod
    def detect(cls, parent_limits: ParentLimits | None = None) -> Cgroups | None:
        try:
            limits = parent_limits or ParentLimits.from_host()
            return _detect_v2(limits) or _detect_v1(limits)
        except OSError as e:
            log.warning("cannot use cgroups (%s); clusters are bounded by rlimits only", e)
            return None

    def nested(self, name: str, memory_bytes: int, max_pids: int) -> Cgroups:
        """A capped cgroup inside these parents that is the parent of one runtime's clusters.

        A runtime that knows how many clusters it may hold at once (a server's session limit) keeps
        them all under that many clusters' worth of memory and processes, whatever the host allows.
        """
        made = self.create(name, memory_bytes, max_pids)
        if self.version == 2:
            (made.dirs[0] / "cgroup.subtree_control").write_text("+memory +pids")
        return Cgroups(self.version, made.dirs)

    def create(self, name: str, memory_bytes: int, max_pids: int) -> EpisodeCgroup:
        dirs = []
        for parent in self.parents:
            d = parent / name
            d.mkdir()
            dirs.append(d)
            if self.version == 2:
                (d / "memory.max").write_text(str(memory_bytes))
                (d / "pids.max").write_text(str(max_pids))
                if (d / "memory.swap.max").exists():
                    (d / "memory.swap.max").write_text("0")
            elif (d / "memory.limit_in_bytes").exists():
                (d / "memory.limit_in_bytes").write_text(str(memory_bytes))
            else:
                (d / "pids.max").write_text(str(max_pids))
        return EpisodeCgroup(tuple(dirs))

    def sweep_stale(self) -> None:
        for parent in self.parents:
            for child in parent.iterdir():
                if child.is_dir() and child.name.startswith(PREFIX) and not is_owner_alive(child.name):
                    # A sandbox whose death signal never came (its owner died in a way that skipped
                    # it) still sits in its cluster's cgroup: everything in there is ours to end.
                    remove_cgroup_tree(child)


def _own_cgroup(controller: str) -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return None


def _detect_v2(limits: ParentLimits) -> Cgroups | None:
    if not (CGROUP_ROOT / "cgroup.controllers").exists():
        return None
    available = (CGROUP_ROOT / "cgroup.controllers").read_text().split()
    if not {"memory", "pids"} <= set(available):
        return None
    # A child of the (namespace) root: a cgroup holding processes cannot delegate controllers.
    parent = CGROUP_ROOT / PARENT_NAME
    parent.mkdir(exist_ok=True)
    (parent / "cgroup.subtree_control").write_text("+memory +pids")
    _lower_cap(parent / "pids.max", limits.max_pids)
    _lower_cap(parent / "memory.max", limits.memory_bytes)
    return Cgroups(2, (parent,))


def _detect_v1(limits: ParentLimits) -> Cgroups | None:
    parents = []
    caps = {"memory": ("memory.limit_in_bytes", limits.memory_bytes), "pids": ("pids.max", limits.max_pids)}
    for controller, (cap_file, cap) in caps.items():
        mount = CGROUP_ROOT / controller
        own = _own_cgroup(controller)
        if own is None or not (mount / "cgroup.procs").exists():
            return None
        # v1 allows processes and children side by side, so nest under our own cgroup.
        parent = mount / own.lstrip("/") / PARENT_NAME
        parent.mkdir(exist_ok=True)
        # v1 memory limits are hierarchical on every kernel since 5.16 (use_hierarchy is always 1).
        _lower_cap(parent / cap_file, cap)
        parents.append(parent)
    return Cgroups(1, tuple(parents))
