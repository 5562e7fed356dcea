"""One mount namespace per cluster, so that no mount table holds every episode's mounts.

Each bwrap start copies its parent's mount table and, after pivot_root, takes the old root's
mounts away: both cost time in the number of mounts in that table. With every episode's tmpfs,
overlays and share points in the host's table (20 an episode), a sandbox's start grew with the
episodes alive: on this kind of machine a bare bwrap took 4 ms beside 22 mounts and 215 ms beside
4,022, so holding a thousand episodes was quadratic. So a cluster's mounts live in a namespace of
its own, held by a `cat` that waits on a pipe (it exits at EOF: at `close`, or with its owner).

The host's code reaches the cluster's files through that process's root, `/proc/PID/root/...`
(`view`), from any thread. What resolves a path inside the namespace (mount targets, bwrap's
binds) is given the plain path (`inner`): a mount can only be attached in its caller's namespace,
so mounts are made on one thread of ours that joins the namespace for each call (`run`), and each
sandbox's bwrap joins it before it starts (`sandbox.drop_to_host_range`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from hpcgym.errors import SandboxError
from hpcgym.run import require_tool

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
MS_REC = 16384
MS_PRIVATE = 1 << 18

T = TypeVar("T")
log = logging.getLogger(__name__)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _new_private_namespace() -> None:
    # Runs in the holder between fork and exec: its own copy of the host's table, sharing no
    # mount events with it either way (a private tree: nothing propagates in or out).
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _check(_libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")


def enter(ns_path: str) -> None:
    """Join the mount namespace at `ns_path` (a forked child, or a thread that owns its fs state)."""
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNS), f"setns({ns_path})")
    finally:
        os.close(fd)


class _MountThread:
    """The one thread that makes mounts in clusters' namespaces (setns moves only the caller)."""

    def __init__(self) -> None:
        self._home = -1
        self._executor = ThreadPoolExecutor(1, "hpcgym-mounts", initializer=self._own_fs_state)

    def _own_fs_state(self) -> None:
        # A thread shares its root and cwd with the rest of the process, and the kernel lets only
        # a task that shares them with no one change its mount namespace: unshare them first.
        _check(_libc.unshare(CLONE_FS), "unshare(CLONE_FS)")
        self._home = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)

    def call(self, ns_path: str, action: Callable[[], T]) -> T:
        """Run `action` here, in `ns_path`'s namespace; it must start no thread (it would share our fs)."""

        def joined() -> T:
            enter(ns_path)
            try:
                return action()
            finally:
                # Back home, so that a closed cluster's namespace is not kept alive by this thread.
                if _libc.setns(self._home, CLONE_NEWNS) != 0:
                    log.warning(
                        "the mount thread could not return to its namespace: %s",
                        os.strerror(ctypes.get_errno()),
                    )

        return self._executor.submit(joined).result()


_thread: _MountThread | None = None
_thread_lock = threading.Lock()


def _mount_thread() -> _MountThread:
    global _thread
    with _thread_lock:
        if _thread is None:
            _thread = _MountThread()
        return _thread


class MountNamespace:
    """A private mount namespace for one cluster's mounts, and the paths that reach into it."""

    def __init__(self, spawner: Executor) -> None:
        # Started from the long-lived spawner thread like every sandbox (see ClusterConfig.spawner).
        self._holder = spawner.submit(self._start_holder).result()
        self.pid = self._holder.pid
        self.ns_path = f"/proc/{self.pid}/ns/mnt"
        self._prefix = f"/proc/{self.pid}/root"

    @staticmethod
    def _start_holder() -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                [require_tool("cat")],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_new_private_namespace,
            )
        except (OSError, subprocess.SubprocessError) as e:
            raise SandboxError(
                f"cannot make a mount namespace for a cluster: {e}",
                hint="hpcgym mounts as root; run it as root or force --overlay-mode copy",
            ) from e

    def view(self, inner: Path) -> Path:
        """The host's way to `inner` (an absolute path as the namespace sees it)."""
        return Path(self._prefix + str(inner))

    def inner(self, path: Path) -> Path:
        """`path` as the namespace sees it: a `view` path loses its prefix, another is unchanged."""
        text = str(path)
        if text == self._prefix or text.startswith(self._prefix + "/"):
            return Path(text[len(self._prefix) :] or "/")
        return path

    def run(self, action: Callable[[], T]) -> T:
        """Call `action` on the mount thread, joined to this namespace (where its mounts land)."""
        if self._holder.poll() is not None:
            raise SandboxError("this cluster's mount namespace is gone (its holder exited)")
        return _mount_thread().call(self.ns_path, action)

    def close(self) -> None:
        """Let the holder go; the namespace and every mount in it end with its last process."""
        if self._holder.stdin is not None and not self._holder.stdin.closed:
            self._holder.stdin.close()
        try:
            self._holder.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._holder.kill()
            self._holder.wait()
