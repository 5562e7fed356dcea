"""Lower dir -> one writable root per node: kernel overlayfs, fuse-overlayfs, or a plain copy.

The lower dir is shared by every episode and never written; each node gets an upper and a work dir
inside its episode's private tmpfs. Mounts are made with the `mount(2)` syscall directly: a `mount`
subprocess costs about 1.7 ms, the syscall a few microseconds. Which mode works is detected once per
host (`detect_overlay_mode`) and can be forced.

What a node may read of its mounts names no host path: kernel overlays name their layers by
descriptor, fuse-overlayfs shows no layers at all, and binds from the episode's tmpfs show paths
relative to it. Copy mode is the exception: it is for hosts that refuse us mounts, so the episode
has no tmpfs of its own, and a node's mountinfo shows where its root sits in the host's scratch
filesystem (the cluster dir's name, which carries the owner's pid for the sweep).
"""

from __future__ import annotations

import ctypes
import enum
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from hpcgym.errors import SandboxError
from hpcgym.run import require_tool, run

# The C library with mount(2) and umount2(2) typed; stalefs.py mounts and unmounts through it too.
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MS_NOSUID = 2
MS_NODEV = 4
MS_BIND = 4096
MS_SHARED = 1 << 20
MNT_DETACH = 2


class OverlayMode(enum.StrEnum):
    """How a node's writable root is made; the value is the spelling users type."""

    KERNEL = "kernel"
    FUSE = "fuse-overlayfs"
    COPY = "copy"

    def is_mount(self) -> bool:
        return self is not OverlayMode.COPY


def mount_fs(
    source: str | Path, target: Path, fstype: str, options: str, flags: int = MS_NOSUID | MS_NODEV
) -> None:
    if libc.mount(os.fsencode(source), os.fsencode(target), fstype.encode(), flags, options.encode()) != 0:
        errno = ctypes.get_errno()
        raise SandboxError(
            f"mount -t {fstype} -o {options} {source} {target}: {os.strerror(errno)}",
            hint="hpcgym mounts as root; run it as root or force --overlay-mode copy",
        )


def unmount(target: Path) -> bool:
    """Unmount `target`; returns False where nothing was mounted there."""
    path = os.fsencode(target)
    # A plain unmount also ends a FUSE daemon; a lazy detach (for a mount still busy while the
    # sandbox holding it dies) never blocks.
    return libc.umount2(path, 0) == 0 or libc.umount2(path, MNT_DETACH) == 0


def bind_mount(source: Path, target: Path) -> None:
    """Show `source` at `target` (what `mount --bind` does)."""
    mount_fs(source, target, "", "", MS_BIND)


def make_shared(target: Path) -> None:
    """Mark a mount shared: mounts made on it later propagate to its copies in other namespaces."""
    mount_fs("none", target, "", "", MS_SHARED)


def mount_tmpfs(target: Path, size_bytes: int, mode: int = 0o755) -> None:
    mount_fs("tmpfs", target, "tmpfs", f"size={size_bytes},mode={mode:o}")


def mount_overlay(mode: OverlayMode, lower: Path, upper: Path, work: Path, merged: Path) -> None:
    """Make `merged` a writable view of `lower` whose changes land in `upper`."""
    if mode is OverlayMode.KERNEL:
        # The kernel shows these options as given, in every mount namespace that sees the mount: host
        # paths here would tell a node where the image cache is (with the image digest) and name the
        # scratch dir (with our pid). Each layer goes by a descriptor instead, which shows as
        # `/proc/self/fd/N`; relative names would do too, but need a process-wide chdir.
        fds: list[int] = []
        try:
            for layer in (lower, upper, work):
                fds.append(os.open(layer, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
            lowerdir, upperdir, workdir = (f"/proc/self/fd/{fd}" for fd in fds)
            options = f"lowerdir={lowerdir},upperdir={upperdir},workdir={workdir}"
            mount_fs("overlay", merged, "overlay", options)
        finally:
            for fd in fds:
                os.close(fd)
    elif mode is OverlayMode.FUSE:
        # allow_other: the mount is made by root, but the sandbox's processes run as other host uids.
        options = f"lowerdir={lower},upperdir={upper},workdir={work},allow_other"
        run([require_tool("fuse-overlayfs"), "-o", options, merged])
    else:
        # The baseline of the original project: copy the whole tree (hard links and modes kept).
        merged.rmdir()
        run(["cp", "-a", "--reflink=auto", f"{lower}/.", merged])
        st = lower.stat()
        os.chown(merged, st.st_uid, st.st_gid)


def remove_overlay(mode: OverlayMode, merged: Path) -> None:
    if mode.is_mount():
        unmount(merged)


def detect_overlay_mode(scratch_dir: Path) -> OverlayMode:
    """Return the best mode this host permits, by trying each one on a throw-away tree."""
    with tempfile.TemporaryDirectory(dir=scratch_dir, prefix="hpcgym-probe-") as tmp:
        base = Path(tmp)
        for name in ("lower", "upper", "work", "merged"):
            (base / name).mkdir()
        (base / "lower" / "probe").write_text("ok")
        try:
            mount_overlay(OverlayMode.KERNEL, base / "lower", base / "upper", base / "work", base / "merged")
            unmount(base / "merged")
            return OverlayMode.KERNEL
        except SandboxError:
            pass
        if shutil.which("fuse-overlayfs"):
            try:
                mount_overlay(
                    OverlayMode.FUSE, base / "lower", base / "upper", base / "work", base / "merged"
                )
                ok = (base / "merged" / "probe").read_text() == "ok"
                subprocess.run(["fusermount", "-u", base / "merged"], check=False, capture_output=True)
                unmount(base / "merged")
                if ok:
                    return OverlayMode.FUSE
            except (SandboxError, OSError):
                unmount(base / "merged")
    return OverlayMode.COPY
