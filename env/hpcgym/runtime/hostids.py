"""Host identity per cluster: a host uid/gid range of its own, over the one unpacked image.

The lower dirs are unpacked once, owned by the image range `uid_base..uid_base+65535` (`unpack.py`).
If every sandbox mapped that same range, the kernel's per-user budgets (inotify instances and
watches, POSIX mqueue bytes, pending signals, RLIMIT_NPROC) would be one pool for every episode on
the host, and one episode could exhaust another's. So each live cluster holds a slot: the range
`SLOT_BASE + n * 65536` that its sandboxes map to 0..65535, and a read-only idmapped view of each
lower dir that shows the image range as that slot's range. Overlay copy-ups and new files then land
in the slot's range too, and the image stays one tree on disk.

A slot is held by an flock on `/run/hpcgym-uid-slots/<first uid>.lock`: another hpcgym process on
this host skips it, and the kernel drops the lock when its holder dies, so a crash leaks no slot.
Ranges that touch the image range, /etc/subuid, /etc/subgid or an id in /etc/passwd or /etc/group
are never handed out.

Python has no wrappers for the mount API (open_tree, mount_setattr, move_mount), so they go through
ctypes; where the kernel or the filesystem refuses, `Runtime` logs it and falls back to the image
range for every cluster.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from hpcgym.errors import SandboxError
from hpcgym.run import require_tool
from hpcgym.runtime import overlay
from hpcgym.runtime.overlay import OverlayMode
from hpcgym.runtime.unpack import ID_RANGE

log = logging.getLogger(__name__)

SLOT_BASE = 200_000
MAX_SLOTS = 4096
LOCK_DIR = Path("/run/hpcgym-uid-slots")
USERNS_CACHE = 64  # user namespaces kept open for reuse, beyond those of the slots held now

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.unshare.argtypes = [ctypes.c_int]

# The generic syscall numbers, the same on x86_64 and aarch64 (every architecture but alpha).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x100000
MS_PRIVATE = 1 << 18
CLONE_NEWUSER = 0x10000000


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result


def _unshare_user() -> None:
    _check(_libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")


def new_userns(inside: int, outside: int, count: int) -> int:
    """Return an fd of a fresh user namespace whose uid and gid maps send `inside..` to `outside..`.

    An idmapped mount shows a file owned by `inside + k` on disk as owned by `outside + k`.
    """
    # The namespace lives only while a process or an fd holds it: a `cat` that unshared before its
    # exec waits on a pipe while we write its maps and open the fd, and exits at EOF (or with us).
    try:
        with subprocess.Popen(
            [require_tool("cat")],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            preexec_fn=_unshare_user,
        ) as holder:
            try:
                mapping = f"{inside} {outside} {count}\n"
                Path(f"/proc/{holder.pid}/uid_map").write_text(mapping)
                Path(f"/proc/{holder.pid}/gid_map").write_text(mapping)
                return os.open(f"/proc/{holder.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            finally:
                assert holder.stdin is not None
                holder.stdin.close()
    except (OSError, subprocess.SubprocessError) as e:
        raise SandboxError(
            f"cannot make a user namespace mapping {inside}.. to {outside}..: {e}",
            hint="hpcgym must run as root on a kernel with user namespaces (user.max_user_namespaces > 0)",
        ) from e


def mount_idmapped(source: Path, target: Path, userns_fd: int) -> None:
    """Attach at `target` a read-only copy of the mount of `source`, owners shifted by `userns_fd`'s map.

    Read-only, so that nothing writes the shared image through it, even a `rm -r` that fails to
    unmount it first.
    """
    try:
        tree = _check(
            _libc.syscall(
                ctypes.c_long(SYS_OPEN_TREE),
                ctypes.c_long(AT_FDCWD),
                os.fsencode(source),
                ctypes.c_long(OPEN_TREE_CLONE | os.O_CLOEXEC),
            ),
            f"open_tree({source})",
        )
    except OSError as e:
        raise SandboxError(str(e), hint="idmapped mounts need Linux 5.12 or later") from e
    try:
        attr = _MountAttr(
            attr_set=MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            propagation=MS_PRIVATE,
            userns_fd=userns_fd,
        )
        _check(
            _libc.syscall(
                ctypes.c_long(SYS_MOUNT_SETATTR),
                ctypes.c_long(tree),
                b"",
                ctypes.c_long(AT_EMPTY_PATH),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            ),
            f"mount_setattr(MOUNT_ATTR_IDMAP) on {source}",
        )
        _check(
            _libc.syscall(
                ctypes.c_long(SYS_MOVE_MOUNT),
                ctypes.c_long(tree),
                b"",
                ctypes.c_long(AT_FDCWD),
                os.fsencode(target),
                ctypes.c_long(MOVE_MOUNT_F_EMPTY_PATH),
            ),
            f"move_mount to {target}",
        )
    except OSError as e:
        raise SandboxError(
            str(e), hint="the filesystem of the image cache must support idmapped mounts"
        ) from e
    finally:
        # A detached tree that was never attached goes away with its last fd.
        os.close(tree)


def idmap_unsupported_reason(
    lower: Path, scratch_dir: Path, image_uid_base: int, mode: OverlayMode
) -> str | None:
    """Why this host cannot give clusters idmapped views of `lower` in `mode`, or None if it can.

    Tried once per runtime on a throw-away mount point: the view must show the shifted owner, and in
    the kernel mode an overlay must accept it as its lower layer.
    """
    shifted = image_uid_base + ID_RANGE
    try:
        userns = new_userns(image_uid_base, shifted, ID_RANGE)
    except SandboxError as e:
        return e.message
    try:
        with tempfile.TemporaryDirectory(dir=scratch_dir, prefix="hpcgym-probe-") as tmp:
            base = Path(tmp)
            for name in ("view", "upper", "work", "merged"):
                (base / name).mkdir()
            try:
                mount_idmapped(lower, base / "view", userns)
            except SandboxError as e:
                return e.message
            try:
                owner = (base / "view").stat().st_uid
                if owner != lower.stat().st_uid - image_uid_base + shifted:
                    return f"the idmapped view shows owner {owner}, not the shifted one"
                if mode is OverlayMode.KERNEL:
                    try:
                        overlay.mount_overlay(
                            mode, base / "view", base / "upper", base / "work", base / "merged"
                        )
                    except SandboxError as e:
                        return f"overlayfs refuses an idmapped lower layer: {e.message}"
                    overlay.unmount(base / "merged")
            finally:
                overlay.unmount(base / "view")
    finally:
        os.close(userns)
    return None


def reserved_id_ranges(etc_dir: Path = Path("/etc")) -> list[range]:
    """Host ids that belong to someone else: subordinate ranges and every user's and group's id."""
    found: list[range] = []
    for name in ("subuid", "subgid"):
        for fields in _colon_lines(etc_dir / name):
            with contextlib.suppress(IndexError, ValueError):
                start, count = int(fields[1]), int(fields[2])
                found.append(range(start, start + count))
    for name in ("passwd", "group"):
        for fields in _colon_lines(etc_dir / name):
            with contextlib.suppress(IndexError, ValueError):
                found.append(range(int(fields[2]), int(fields[2]) + 1))
    return found


def _colon_lines(path: Path) -> Iterable[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


class HostIdSlot:
    """One cluster's host id range, held until `release` (or until this process dies)."""

    def __init__(self, owner: HostIds, uid_base: int, lock_fd: int) -> None:
        self.owner = owner
        self.uid_base = uid_base
        self._lock_fd: int | None = lock_fd

    def idmap_fd(self) -> int:
        """A user namespace fd whose map shifts the image range onto this slot's (for `mount_idmapped`)."""
        return self.owner.userns_fd(self.uid_base)

    def release(self) -> None:
        if self._lock_fd is not None:
            self.owner.forget(self.uid_base)
            os.close(self._lock_fd)  # closing the only fd drops the flock
            self._lock_fd = None


class HostIds:
    """Hands out slots of host ids to the clusters of one runtime.

    Args:
        image_uid_base: the host uid the unpacked images' root maps to (never handed out).
        lock_dir: where the per-slot lock files live; shared by every hpcgym process on the host.
        reserved: host ids that no slot may touch (default: `reserved_id_ranges()`).
    """

    def __init__(
        self,
        image_uid_base: int,
        lock_dir: Path = LOCK_DIR,
        reserved: Sequence[range] | None = None,
        first_base: int = SLOT_BASE,
        max_slots: int = MAX_SLOTS,
    ) -> None:
        self.image_uid_base = image_uid_base
        self.lock_dir = lock_dir
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        taken = [
            range(image_uid_base, image_uid_base + ID_RANGE),
            *(reserved_id_ranges() if reserved is None else reserved),
        ]
        self.bases = [
            base
            for base in (first_base + n * ID_RANGE for n in range(max_slots))
            if not any(r.start < base + ID_RANGE and base < r.stop for r in taken)
        ]
        self._held: set[int] = set()
        self._userns: dict[int, int] = {}
        self._lock = threading.Lock()

    def take(self) -> HostIdSlot:
        """Return a slot that no live cluster on this host holds.

        Raises:
            SandboxError: every slot is held.
        """
        with self._lock:
            for base in self.bases:
                if base in self._held:
                    continue
                fd = os.open(self.lock_dir / f"{base}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)  # another process (or another runtime of ours) has it
                    continue
                self._held.add(base)
                return HostIdSlot(self, base, fd)
        raise SandboxError(
            f"all {len(self.bases)} host uid slots are in use",
            hint=f"close clusters, or look for processes holding locks in {self.lock_dir}",
        )

    def userns_fd(self, uid_base: int) -> int:
        # One namespace per slot, made on first use and kept: the map never changes. Slots other
        # processes hold come and go, so the slots one long-lived server uses drift upwards (a soak
        # kept 145 after 600 episodes with at most 16 clusters at once); past USERNS_CACHE, the
        # namespaces of slots not held now are closed (a mount made with one keeps its own reference).
        with self._lock:
            if uid_base not in self._userns:
                if len(self._userns) >= USERNS_CACHE:
                    for base in [b for b in self._userns if b not in self._held]:
                        os.close(self._userns.pop(base))
                self._userns[uid_base] = new_userns(self.image_uid_base, uid_base, ID_RANGE)
            return self._userns[uid_base]

    @property
    def cached_namespaces(self) -> int:
        return len(self._userns)

    def forget(self, uid_base: int) -> None:
        with self._lock:
            self._held.discard(uid_base)

    def close(self) -> None:
        with self._lock:
            for fd in self._userns.values():
                os.close(fd)
            self._userns.clear()
