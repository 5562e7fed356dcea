"""What a server process and its episodes hold on the host, read from /proc, /sys and /dev/shm.

A snapshot counts what belongs to one hpcgym process (named by its owner tag, `hpcgym-PID-START`,
which every scratch dir, mount point and cgroup of its clusters carries): mount points in the host's
table and in every mount namespace on the host, processes whose command line or cgroup carries the
tag, cgroups and /dev/shm dirs of that name, and the process's own descriptors, threads, unix sockets
and RSS. `find_leaks` compares two snapshots; `find_remains` says what is left once the process is
gone (everything must be). Reading only: nothing here changes the host.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hpcgym.runtime.cgroup import CGROUP_ROOT
from hpcgym.runtime.hostids import LOCK_DIR, MAX_SLOTS
from hpcgym.runtime.sweep import owner_tag

SHM_DIR = Path("/dev/shm")
CGROUP_DEPTH = 4  # the runtime's cgroups sit at most this far below the hierarchy's root


@dataclass(frozen=True)
class Snapshot:
    """What one hpcgym process holds at one moment (counts, and a few names for the report)."""

    tag: str
    mounts: int  # mount points of the tag in the host's table
    namespace_mounts: int  # the same, summed over every other mount namespace on the host
    mount_namespaces: int  # namespaces (other than ours) that show any mount of the tag
    processes: int  # processes other than the owner whose command line or cgroup has the tag
    cgroups: int
    shm_dirs: int
    fds: int  # the owner's open descriptors (0 once it is gone), less the user namespaces below
    userns_fds: int  # user namespaces kept open, one per uid slot ever used (hostids.py): bounded
    threads: int
    unix_sockets: int
    rss_bytes: int
    # The owner's children that exited and were never waited for: each keeps a pid for good.
    zombies: int = 0
    closed: list[str] = field(default_factory=list)  # what still refers to a cluster already closed
    examples: dict[str, list[str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if isinstance(v, int)}


def _unescape(raw: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), raw)


def _mount_points(mountinfo: Path, tag: str) -> list[str]:
    try:
        text = mountinfo.read_text(errors="replace")
    except OSError:  # the process went away while we looked
        return []
    return [p for p in (_unescape(line.split()[4]) for line in text.splitlines() if line) if tag in p]


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _other_namespaces(tag: str, own_ns: str) -> Iterator[tuple[int, list[str]]]:
    """For each mount namespace but `own_ns`: a process in it, and the mount points of the tag there."""
    seen: set[str] = {own_ns}
    for pid in _pids():
        try:
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            continue
        if ns not in seen:
            seen.add(ns)
            yield pid, _mount_points(Path(f"/proc/{pid}/mountinfo"), tag)


def _namespace_mounts(tag: str, own_ns: str) -> tuple[int, int, list[str]]:
    total = namespaces = 0
    examples: list[str] = []
    for _, points in _other_namespaces(tag, own_ns):
        if points:
            namespaces += 1
            total += len(points)
            examples += points[:2]
    return total, namespaces, examples


def _processes(tag: str, owner: int | None) -> list[str]:
    found = []
    for pid in _pids():
        if pid == owner or pid == os.getpid():
            continue
        cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ")
        if tag in cmdline or tag in _read(f"/proc/{pid}/cgroup"):
            found.append(f"{pid} {cmdline[:120]}")
    return found


def _zombies(owner: int) -> list[str]:
    """The owner's children that have exited and wait to be reaped (state Z in /proc/PID/stat)."""
    found = []
    for pid in _pids():
        stat = _read(f"/proc/{pid}/stat")
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat.rpartition(")")[2].split()
        if len(fields) >= 2 and fields[0] == "Z" and fields[1] == str(owner):
            found.append(f"{pid} {stat.partition(' ')[2].rpartition(')')[0]})")
    return found


def _cgroups(tag: str) -> list[str]:
    found = []

    def walk(path: Path, depth: int) -> None:
        try:
            children = [c for c in path.iterdir() if c.is_dir() and not c.is_symlink()]
        except OSError:
            return
        for child in children:
            if tag in child.name:
                found.append(str(child))
            elif depth < CGROUP_DEPTH:
                walk(child, depth + 1)

    walk(CGROUP_ROOT, 0)
    return found


def _unix_inodes() -> set[str]:
    inodes = set()
    for line in _read("/proc/net/unix").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 7:
            inodes.add(parts[6])
    return inodes


def _cluster_of(text: str, tag: str) -> str | None:
    match = re.search(rf"{re.escape(tag)}-(\d+)(?![\d])", text)
    return match.group(1) if match else None


def _process_cluster(pid: int, tag: str) -> str | None:
    """The cluster (its sequence number) that process `pid` belongs to, "" for none, None if gone."""
    cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ")
    cgroup = _read(f"/proc/{pid}/cgroup")
    if not cmdline and not cgroup:
        return None
    return _cluster_of(cgroup, tag) or _cluster_of(cmdline, tag) or ""


def _fd_targets(pid: int) -> list[str]:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    targets = []
    for name in names:
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
    return targets


def _fd_facts(pid: int) -> tuple[int, int, int, list[str]]:
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0, 0, 0, []
    unix = _unix_inodes()
    sockets = 0
    kinds: Counter[str] = Counter()
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        is_unix = target.startswith("socket:[") and target[8:-1] in unix
        sockets += is_unix
        # Kinds, not names: a node's paths and inode numbers would make every snapshot differ.
        kind = (
            "unix socket"
            if is_unix
            else target.split(":", 1)[0]
            if ":" in target
            else target.rsplit("/", 1)[0]
        )
        kinds[re.sub(r"/proc/\d+(/task/\d+)?", "/proc/PID", kind)] += 1
    userns = kinds.pop("user", 0)
    return len(names) - userns, sockets, userns, [f"{kind}: {n}" for kind, n in sorted(kinds.items())]


def _status(pid: int) -> dict[str, str]:
    return dict(line.split(":", 1) for line in _read(f"/proc/{pid}/status").splitlines() if ":" in line)


def take_snapshot(pid: int, tag: str | None = None) -> Snapshot:
    """Count what process `pid` (alive, or gone with `tag` given) and its episodes hold now."""
    alive = tag is None or Path(f"/proc/{pid}").exists()
    tag = tag or owner_tag(pid)
    own_ns = os.readlink("/proc/self/ns/mnt")
    host_points = _mount_points(Path("/proc/self/mountinfo"), tag)
    ns_total, namespaces, ns_examples = _namespace_mounts(tag, own_ns)
    processes = _processes(tag, pid if alive else None)
    zombies = _zombies(pid) if alive else []
    cgroups = _cgroups(tag)
    shm = sorted(p.name for p in SHM_DIR.iterdir() if p.name.startswith(tag)) if SHM_DIR.is_dir() else []
    fds, sockets, userns, fd_kinds = _fd_facts(pid) if alive else (0, 0, 0, [])
    status = _status(pid) if alive else {}
    live = {m.group(1) for name in shm if (m := re.match(rf"{re.escape(tag)}-(\d+)$", name))}
    closed = _closed_references(pid if alive else None, tag, live, host_points + ns_examples_all(tag, own_ns))
    threads = int(status.get("Threads", "0").strip() or 0)
    rss = int(status.get("VmRSS", "0 kB").split()[0]) * 1024 if "VmRSS" in status else 0
    return Snapshot(
        tag=tag,
        mounts=len(host_points),
        namespace_mounts=ns_total,
        mount_namespaces=namespaces,
        processes=len(processes),
        cgroups=len(cgroups),
        shm_dirs=len(shm),
        fds=fds,
        userns_fds=userns,
        threads=threads,
        unix_sockets=sockets,
        rss_bytes=rss,
        zombies=len(zombies),
        closed=closed,
        examples={
            "mounts": host_points[:3] + ns_examples[:3],
            "processes": processes[:3],
            "zombies": zombies[:3],
            "cgroups": cgroups[:3],
            "shm_dirs": shm[:3],
            "fd_kinds": fd_kinds,
        },
    )


def ns_examples_all(tag: str, own_ns: str) -> list[str]:
    """Every mount point of the tag in every other mount namespace (one entry per namespace and point)."""
    return [
        f"{p} (in the mount namespace of pid {pid})"
        for pid, points in _other_namespaces(tag, own_ns)
        for p in points
    ]


def _closed_references(owner: int | None, tag: str, live: set[str], mounts: list[str]) -> list[str]:
    # What names a cluster that is no longer live (its scratch dir is gone): a mount under its dir,
    # a process in its cgroup or with its paths on the command line, its cgroup, or a descriptor
    # of the owner that points into its dir or at the /proc entry of a process that is gone or
    # belongs to it. Live clusters (the ready pool) may hold all of these.
    closed = []
    for point in mounts:
        seq = _cluster_of(point, tag)
        if seq is not None and seq not in live:
            closed.append(f"mount {point}")
    for pid in _pids():
        if pid in (owner, os.getpid()):
            continue
        seq = _process_cluster(pid, tag)
        if seq and seq not in live:
            closed.append(f"process {pid} {_read(f'/proc/{pid}/cmdline').replace(chr(0), ' ')[:100]}")
    for path in _cgroups(tag):
        seq = _cluster_of(Path(path).name, tag)
        if seq is not None and seq not in live:
            closed.append(f"cgroup {path}")
    if owner is not None:
        for target in _fd_targets(owner):
            seq = _cluster_of(target, tag)
            proc = re.match(r"/proc/(\d+)(/|$)", target)
            if proc and int(proc.group(1)) != owner:
                seq = _process_cluster(int(proc.group(1)), tag)
                if seq is None:
                    closed.append(f"descriptor {target} (the process is gone)")
                    continue
            if seq and seq not in live:
                closed.append(f"descriptor {target}")
    return closed


# Counts compared between two quiet moments with the same ready pool. Other mount namespaces are
# judged by what they name (`closed`) alone: a sandbox being set up holds a copy of the host's
# table for a moment, live clusters included.
HELD = ("mounts", "processes", "zombies", "cgroups", "shm_dirs", "fds", "threads", "unix_sockets")


def find_leaks(baseline: Snapshot, now: Snapshot) -> list[str]:
    """What `now` holds beyond `baseline`, both taken with the same ready pool and no session open."""
    leaks = list(now.closed)
    if now.userns_fds > MAX_SLOTS:
        leaks.append(f"userns_fds: {now.userns_fds}, more than the {MAX_SLOTS} uid slots there are")
    for name in HELD:
        before, after = getattr(baseline, name), getattr(now, name)
        if after > before:
            example = now.examples.get(name, [])
            if name == "fds":
                grown = sorted(set(now.examples["fd_kinds"]) - set(baseline.examples["fd_kinds"]))
                was = "; ".join(sorted(set(baseline.examples["fd_kinds"]) - set(now.examples["fd_kinds"])))
                example = [f"now {'; '.join(grown)}, was {was}"] if grown else []
            leaks.append(
                f"{name}: {before} at the start, {after} at the end" + (f" ({example[0]})" if example else "")
            )
    return leaks


def find_remains(gone: Snapshot) -> list[str]:
    """What is left of a process that has exited: anything at all is a leak."""
    leaks = list(gone.closed)
    for name in ("mounts", "namespace_mounts", "processes", "cgroups", "shm_dirs"):
        count = getattr(gone, name)
        if count:
            example = gone.examples.get(name, [])
            leaks.append(
                f"{name}: {count} left after the server exited" + (f" ({example[0]})" if example else "")
            )
    return leaks


def held_uid_slots(lock_dir: Path = LOCK_DIR) -> list[str]:
    """Uid slot locks that some process still holds (by /proc/locks; a dead holder holds none)."""
    if not lock_dir.is_dir():
        return []
    inodes = {}
    for path in lock_dir.glob("*.lock"):
        try:
            inodes[path.stat().st_ino] = path.name
        except OSError:
            continue
    held = []
    for line in _read("/proc/locks").splitlines():
        parts = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF": field 5 is maj:min:inode.
        if len(parts) > 5 and parts[1] == "FLOCK":
            inode = int(parts[5].rsplit(":", 1)[1])
            if inode in inodes:
                held.append(f"{inodes[inode]} (pid {parts[4]})")
    return sorted(held)
