"""A filesystem whose every answer is ESTALE: what a stale NFS handle looks like to a node.

When an NFS server re-exports a filesystem (a restore, a failover, a new inode generation) the
handles its clients hold go stale, and every access through that mount fails with ESTALE, which
coreutils print as "Stale file handle". We cannot run an NFS server here, so the kernel's FUSE layer
plays the stale mount: a tiny daemon (one thread per mount, raw /dev/fuse protocol) answers
FUSE_INIT and then -ESTALE to every request. The errors the agent sees are the kernel's own
(`ls: cannot access '/apps': Stale file handle`, `df: /apps: Stale file handle`,
`bash: cd: /apps: Stale file handle`), never text we wrote.

One caller is answered: the host's bubblewrap, which stats a bind source before binding it, sees the
mount point as a directory (never cached), so `ssh NODE ls /apps` starts and then meets the stale
handle as the shell does. Processes inside a node cannot run the host's bwrap binary.

Mounting needs host root; where the mount sits and how nodes see it is `cluster.py`'s business.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from hpcgym.errors import SandboxError
from hpcgym.runtime.overlay import MNT_DETACH, MS_NODEV, MS_NOSUID, libc

log = logging.getLogger(__name__)

# <linux/fuse.h>: the headers of every request and reply, and the opcodes that matter here.
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, extlen, pad
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
INIT_IN = struct.Struct("<IIII")  # major, minor, max_readahead, flags (the rest is not needed)
# major, minor, max_readahead, flags, max_background, congestion_threshold, max_write, time_gran,
# max_pages, map_alignment, flags2, max_stack_depth, unused[6]: 64 bytes as of protocol 7.40.
INIT_OUT = struct.Struct("<IIIIHHIIHHII24x")
# attr_valid, attr_valid_nsec, dummy, then fuse_attr: ino, size, blocks, atime, mtime, ctime,
# atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags.
ATTR_OUT = struct.Struct("<QII QQQQQQ IIIIIIIIII")
FUSE_GETATTR = 3
FUSE_FORGET = 2
ROOT_NODEID = 1
FUSE_INIT = 26
FUSE_INTERRUPT = 36
FUSE_DESTROY = 38
FUSE_BATCH_FORGET = 42
NO_REPLY = (FUSE_FORGET, FUSE_BATCH_FORGET, FUSE_INTERRUPT)
PROTOCOL = (7, 31)
# The kernel refuses reads shorter than FUSE_MIN_READ_BUFFER (8 KiB); writes are never accepted
# here, so one page of payload beyond the largest header is plenty.
READ_BUFFER = 1 << 17
FUSE_DEV = "/dev/fuse"


class StaleMount:
    """One mounted ESTALE filesystem and the thread that answers for it.

    Example:
        >>> with StaleMount(Path("/mnt/x"), source="login01:/export/apps") as stale:  # doctest: +SKIP
        ...     os.stat("/mnt/x")  # OSError: [Errno 116] Stale file handle

    Args:
        target: an existing directory on the host to mount over.
        source: what the mount table names as the device (`server:/export`).
        fstype: the subtype shown after `fuse.` in the mount table.
        binder: a host program (bwrap) whose processes may stat the mount point, to bind it.
    """

    def __init__(
        self,
        target: Path,
        *,
        source: str,
        fstype: str = "nfs4",
        binder: Path | None = None,
        in_namespace: Callable[[Callable[[], int]], int] | None = None,
    ) -> None:
        self.target = target
        # Where the mount(2) and umount2(2) calls run (a cluster's mount namespace); the thread
        # that answers stays one of ours, since a thread born there would share that one's fs.
        self._in_namespace = in_namespace or (lambda call: call())
        self.source = source
        self.fstype = fstype
        self._binder = _file_id(binder) if binder is not None else None
        self.requests = 0
        self._fd = -1
        self._wake_r, self._wake_w = -1, -1
        self._thread: threading.Thread | None = None
        self._mounted = False

    def mount(self) -> StaleMount:
        """Mount over `target` and start answering; the mount is stale from its first access."""
        if self._mounted:
            return self
        try:
            self._fd = os.open(FUSE_DEV, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise SandboxError(
                f"cannot open {FUSE_DEV}: {exc.strerror}", hint="load the fuse module (modprobe fuse)"
            ) from exc
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC)
        options = f"fd={self._fd},rootmode=40000,user_id=0,group_id=0,allow_other"
        # The thread must run before mount(2) returns: the kernel sends FUSE_INIT at once, and the
        # first access waits for its answer.
        self._thread = threading.Thread(target=self._serve, name=f"stalefs:{self.target}", daemon=True)
        self._thread.start()

        def attach() -> int:
            rc = libc.mount(
                self.source.encode(),
                os.fsencode(self.target),
                f"fuse.{self.fstype}".encode(),
                MS_NOSUID | MS_NODEV,
                options.encode(),
            )
            return 0 if rc == 0 else ctypes.get_errno()

        err = self._in_namespace(attach)
        if err:
            self.close()
            raise SandboxError(
                f"mount -t fuse.{self.fstype} {self.source} {self.target}: {os.strerror(err)}",
                hint="a stale mount needs host root and FUSE (/dev/fuse)",
            )
        self._mounted = True
        return self

    @property
    def is_mounted(self) -> bool:
        return self._mounted

    def unmount(self) -> None:
        """Take the mount away (lazily, so a process still inside cannot block it); the daemon stays."""
        if self._mounted:
            path = os.fsencode(self.target)

            def detach() -> int:
                if libc.umount2(path, 0) != 0 and libc.umount2(path, MNT_DETACH) != 0:
                    return ctypes.get_errno()
                return 0

            err = self._in_namespace(detach)
            if err and err != errno.EINVAL:  # EINVAL: nothing mounted there any more
                raise SandboxError(f"umount {self.target}: {os.strerror(err)}")
            self._mounted = False

    def close(self) -> None:
        """Unmount, stop the thread and close the FUSE connection (every copy of the mount dies)."""
        with contextlib.suppress(SandboxError):
            self.unmount()
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                log.warning("stalefs thread for %s did not stop", self.target)
            self._thread = None
        for fd in (self._fd, self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._fd = self._wake_r = self._wake_w = -1

    def __enter__(self) -> StaleMount:
        return self.mount()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the daemon ---------------------------------------------------------------------------

    def _serve(self) -> None:
        fd, wake = self._fd, self._wake_r
        # poll, not select: in a process holding many episodes these descriptors pass 1023.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        poller.register(wake, select.POLLIN)
        while True:
            ready = {ready_fd for ready_fd, _ in poller.poll()}
            if wake in ready:
                return
            try:
                request = os.read(fd, READ_BUFFER)
            except OSError as exc:
                # ENODEV: unmounted and the connection gone; EINTR/EAGAIN/ENOENT: an interrupted request.
                if exc.errno == errno.ENODEV:
                    return
                continue
            if len(request) < IN_HEADER.size:
                continue
            self.requests += 1
            with contextlib.suppress(OSError):
                self._answer(fd, request)

    def _answer(self, fd: int, request: bytes) -> None:
        _, opcode, unique, nodeid, _, _, pid, _, _ = IN_HEADER.unpack_from(request)
        if opcode in NO_REPLY:
            return
        if opcode == FUSE_INIT:
            _, _, max_readahead, _ = INIT_IN.unpack_from(request, IN_HEADER.size)
            body = INIT_OUT.pack(*PROTOCOL, max_readahead, 0, 16, 12, 4096, 1, 1, 0, 0, 0)
            os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), 0, unique) + body)
            return
        if opcode == FUSE_GETATTR and nodeid == ROOT_NODEID and self._is_binder(pid):
            body = ATTR_OUT.pack(0, 0, 0, ROOT_NODEID, 0, 0, 0, 0, 0, 0, 0, 0, 0o40755, 2, 0, 0, 0, 4096, 0)
            os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), 0, unique) + body)
            return
        error = 0 if opcode == FUSE_DESTROY else -errno.ESTALE
        os.write(fd, OUT_HEADER.pack(OUT_HEADER.size, error, unique))

    def _is_binder(self, pid: int) -> bool:
        # The header's pid is in the host's pid namespace (the mount's); its executable is compared by
        # file identity, so a copy or a same-named program inside a node does not pass.
        return self._binder is not None and pid > 0 and _file_id(Path(f"/proc/{pid}/exe")) == self._binder


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
