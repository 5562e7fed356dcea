"""A node's files as the controller touches them: always relative to a descriptor of the node's root.

Everything in a node's tree is the agent's: file contents, types (symlinks, FIFOs, sparse files),
sizes, names, and the moment a directory is renamed under us. So no host path into a node is ever
opened, written, chowned or deleted. Each operation opens the node's root as an `O_PATH` descriptor
and resolves the node path with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`,
which makes the kernel treat that descriptor as "/" for every symlink and "..", in the same call that
opens the file: there is no window between checking a path and using it. What then changes the tree
works on descriptors or on single names inside an opened directory: a temp file made
`O_CREAT | O_EXCL | O_NOFOLLOW`, `fchown`/`fchmod` on its descriptor, `renameat`/`unlinkat` in the
same directory, and only regular files read, opened non-blocking so a FIFO cannot stall us.

The node's own conditions (a full tmpfs, a directory where a file should be, a symlink loop, a
rename racing a lookup once too often) are `NodeFileError`: the simulated daemon's problem, which it
logs and fails on as the real one would. Anything else is the runtime's, and raises.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import posixpath
import secrets
import shutil
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from hpcgym.controller.services.access import NodeFileError

# openat2(2), Linux >= 5.6; the same number on x86_64 and aarch64.
_SYS_OPENAT2 = 437
_RESOLVE_NO_XDEV = 0x01
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_IN_ROOT = 0x10
_RESOLVE = _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS | _RESOLVE_NO_XDEV
_AT_EMPTY_PATH = 0x1000
_libc = ctypes.CDLL(None, use_errno=True)

# A rename anywhere on the host can make a ".." lookup under RESOLVE_IN_ROOT return EAGAIN; it is
# safe to retry, but the agent could keep renaming, so only so often.
OPEN_ATTEMPTS = 16
# Nothing the controller reads from a node is bigger than this (configs, keys, pid files, fstab);
# a bigger file counts as unreadable, so a sparse 256 MiB slurm.conf costs us nothing.
MAX_READ_BYTES = 4 << 20
MAX_PATH_BYTES = 4096
# The kernel follows at most this many symlinks in one lookup (MAXSYMLINKS), then says ELOOP.
MAX_SYMLINKS = 40

# What a node can do to its own files; everything else is a bug of ours.
NODE_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EACCES,
        errno.EPERM,
        errno.ENXIO,
        errno.EXDEV,
        errno.EAGAIN,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.EFBIG,
        errno.EMLINK,
        errno.ENOTEMPTY,
        errno.EEXIST,
        errno.EBUSY,
        errno.ESTALE,
        errno.EIO,
        errno.ETXTBSY,
        errno.EOVERFLOW,
    }
)


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


def _node_error(e: OSError, path: str) -> OSError:
    if e.errno in NODE_ERRNOS:
        return NodeFileError(e.errno, os.strerror(e.errno or 0), path)
    return e


def openat2(dir_fd: int, path: str, flags: int, mode: int = 0, *, no_symlinks: bool = False) -> int:
    """Open `path` with `dir_fd` as the root for every symlink and "..", retrying EAGAIN a few times.

    `no_symlinks` refuses a symlink anywhere on the way (ELOOP); with `O_PATH | O_NOFOLLOW` a
    symlink at the end is opened itself.
    """
    raw = _encode(path)
    if len(raw) >= MAX_PATH_BYTES:
        raise NodeFileError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), path)
    how = _OpenHow(flags | os.O_CLOEXEC, mode, _RESOLVE | (_RESOLVE_NO_SYMLINKS if no_symlinks else 0))
    for _ in range(OPEN_ATTEMPTS):
        fd = _libc.syscall(_SYS_OPENAT2, dir_fd, raw, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err not in (errno.EAGAIN, errno.EINTR):
            raise _node_error(OSError(err, os.strerror(err), path), path)
    raise NodeFileError(errno.EAGAIN, "the path kept changing while it was resolved", path)


def _encode(path: str) -> bytes:
    # A NUL would cut the path short in C (ctypes passes it silently), and a lone surrogate from a
    # forged request has no bytes at all: both are paths no syscall could be given.
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:
        raw = b"\0"
    if b"\0" in raw:
        raise NodeFileError(errno.EINVAL, os.strerror(errno.EINVAL), path.encode(errors="replace").decode())
    return raw


def _split(path: str) -> tuple[str, str]:
    """(parent, name) of a node path; the name is one plain component, never "", "." or ".."."""
    _encode(path)
    norm = posixpath.normpath("/" + path)
    parent, name = posixpath.split(norm)
    if name in ("", ".", ".."):
        raise NodeFileError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    return parent, name


def _open_root(root: Path, path: str) -> int:
    # A share's mount point may be a stale handle or gone under an unmount: the node's problem.
    try:
        return os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise _node_error(e, path) from None


class NodeFS:
    """File operations inside one node's tree, given the host directory that is its "/".

    Owners are ids inside the node; `uid_base` is the host id that the node's root maps to. `mounts`
    are the top-level dirs the node's sandbox binds from elsewhere (its NFS shares), each with the
    host directory the node sees there: a path under one resolves inside that tree, as the node's own
    lookup would, and cannot climb out of it.
    """

    def __init__(
        self, root: Path, uid_base: int, id_range: int, mounts: Mapping[str, Path] | None = None
    ) -> None:
        self.root = root
        self.uid_base = uid_base
        self.id_range = id_range
        self.mounts = dict(mounts or {})

    def _locate(self, path: str) -> tuple[Path, str]:
        """The host dir to resolve `path` from, and the path relative to it."""
        _encode(path)
        parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
        if parts and parts[0] in self.mounts:
            return self.mounts[parts[0]], "/" + "/".join(parts[1:])
        return self.root, path

    @contextlib.contextmanager
    def _fd(self, path: str, flags: int, mode: int = 0, *, no_symlinks: bool = False) -> Iterator[int]:
        root, path = self._locate(path)
        root_fd = _open_root(root, path)
        try:
            fd = openat2(root_fd, path, flags, mode, no_symlinks=no_symlinks)
        finally:
            os.close(root_fd)
        try:
            yield fd
        finally:
            os.close(fd)

    def _host_id(self, node_id: int) -> int:
        if not 0 <= node_id < self.id_range:
            # What chown(2) says in a user namespace for an id it does not map.
            raise NodeFileError(errno.EINVAL, os.strerror(errno.EINVAL), str(node_id))
        return self.uid_base + node_id

    def node_id(self, host_id: int) -> int:
        inside = host_id - self.uid_base
        return inside if 0 <= inside < self.id_range else 65534

    def resolve(self, path: str) -> str:
        """The node path the kernel's lookup of `path` reaches, as `realpath` prints it.

        One component at a time from a descriptor of the directory reached so far, as the kernel
        walks: "." stays, ".." climbs (never above the root), a symlink's target is spliced in (an
        absolute one from the root), at most MAX_SYMLINKS of them. The last component need not
        exist; every one before it must be a directory. A directory is entered with
        `O_NOFOLLOW | O_DIRECTORY`, so one swapped for a symlink after we looked fails the lookup
        instead of leading anywhere.
        """
        if len(_encode(path)) >= MAX_PATH_BYTES:
            raise NodeFileError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), path[:200])
        pending = [part for part in reversed(path.split("/")) if part]
        done: list[str] = []
        # Descriptors of "/" and of each directory in `done`, so ".." is the one before.
        stack = [_open_root(self.root, path)]
        links = 0
        try:
            while pending:
                part = pending.pop()
                if part == ".":
                    continue
                if part == "..":
                    if done:
                        done.pop()
                        os.close(stack.pop())
                    continue
                share = self.mounts.get(part) if not done else None
                try:
                    if share is not None:
                        st = os.stat(share)
                    else:
                        st = os.stat(part, dir_fd=stack[-1], follow_symlinks=False)
                except OSError as e:
                    if e.errno == errno.ENOENT and not pending:
                        done.append(part)
                        break
                    raise _node_error(e, path) from None
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise NodeFileError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                    try:
                        target = os.readlink(part, dir_fd=stack[-1])
                    except OSError as e:
                        raise _node_error(e, path) from None
                    if target.startswith("/"):
                        while done:
                            done.pop()
                            os.close(stack.pop())
                    pending.extend(p for p in reversed(target.split("/")) if p)
                    continue
                done.append(part)
                if not pending:
                    break
                if not stat.S_ISDIR(st.st_mode):
                    raise NodeFileError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
                if share is not None:
                    stack.append(_open_root(share, path))
                    continue
                try:
                    flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                    stack.append(os.open(part, flags, dir_fd=stack[-1]))
                except OSError as e:
                    raise _node_error(e, path) from None
        finally:
            for fd in stack:
                os.close(fd)
        resolved = "/" + "/".join(done)
        if len(_encode(resolved)) >= MAX_PATH_BYTES:
            raise NodeFileError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), path[:200])
        return resolved

    # --- reading ------------------------------------------------------------------------------------

    def stat(self, path: str, *, follow_symlinks: bool = True) -> os.stat_result | None:
        """What `path` resolves to, or None.

        With `follow_symlinks=False`, the path itself (lstat), and None where a directory on the way
        is a symlink.
        """
        flags = os.O_PATH if follow_symlinks else os.O_PATH | os.O_NOFOLLOW
        try:
            with self._fd(path, flags, no_symlinks=not follow_symlinks) as fd:
                return os.fstat(fd)
        except NodeFileError:
            return None
        except OSError as e:
            if e.errno in NODE_ERRNOS:  # a stale share answers the open, then fails the stat
                return None
            raise

    def read(
        self, path: str, max_bytes: int = MAX_READ_BYTES, *, follow_symlinks: bool = True
    ) -> bytes | None:
        """A regular file's bytes; None if it is missing, not a regular file, unreadable or too big.

        With `follow_symlinks=False`, also None where any component of the path is a symlink.
        """
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | (0 if follow_symlinks else os.O_NOFOLLOW)
        try:
            with self._fd(path, flags, no_symlinks=not follow_symlinks) as fd:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_size > max_bytes:
                    return None
                chunks: list[bytes] = []
                size = 0
                while size <= max_bytes:
                    chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
                    if not chunk:
                        return b"".join(chunks)
                    chunks.append(chunk)
                    size += len(chunk)
                return None  # it grew past the cap while we read
        except NodeFileError:
            return None
        except OSError as e:
            if e.errno in NODE_ERRNOS:
                return None
            raise

    def walk(self, path: str, *, max_entries: int, max_depth: int) -> list[tuple[str, os.stat_result]]:
        """What lies under the directory `path`, depth first in name order: (node path, lstat) pairs.

        Nothing is followed: a symlink is listed as itself, a directory is entered by a descriptor
        opened `O_NOFOLLOW` from its parent's, and only if it is still the one just listed and on the
        same filesystem. A directory the node makes unreadable is listed without its contents. At
        most `max_entries` entries, and `max_depth` levels below `path`.
        """
        found: list[tuple[str, os.stat_result]] = []
        try:
            with self._fd(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK, no_symlinks=True) as fd:
                top = os.fstat(fd)
                self._walk_at(
                    fd, posixpath.normpath("/" + path.lstrip("/")), top.st_dev, max_depth, max_entries, found
                )
        except NodeFileError:
            pass
        except OSError as e:
            if e.errno not in NODE_ERRNOS:
                raise
        return found

    def _walk_at(
        self,
        dir_fd: int,
        prefix: str,
        dev: int,
        depth: int,
        max_entries: int,
        found: list[tuple[str, os.stat_result]],
    ) -> None:
        try:
            names = sorted(os.listdir(dir_fd))
        except OSError as e:
            if e.errno in NODE_ERRNOS:
                return
            raise
        for name in names:
            if len(found) >= max_entries:
                return
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError as e:
                if e.errno in NODE_ERRNOS:
                    continue  # gone, or renamed, since the listing
                raise
            child = posixpath.join(prefix, name)
            found.append((child, st))
            if not stat.S_ISDIR(st.st_mode) or depth <= 0 or st.st_dev != dev:
                continue
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            try:
                fd = os.open(name, flags, dir_fd=dir_fd)
            except OSError as e:
                if e.errno in NODE_ERRNOS:
                    continue
                raise
            try:
                now = os.fstat(fd)
                if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    self._walk_at(fd, child, dev, depth - 1, max_entries, found)
            finally:
                os.close(fd)

    # --- changing -----------------------------------------------------------------------------------

    def _parent(self, path: str, *, create: bool, mtime_ns: int | None = None) -> tuple[int, str]:
        """An O_PATH descriptor of the parent directory of `path` (made if missing), and the name."""
        parent, name = _split(path)
        return self._dir_fd(parent, create=create, mtime_ns=mtime_ns), name

    def _dir_fd(
        self,
        path: str,
        *,
        create: bool,
        mode: int = 0o755,
        uid: int = 0,
        gid: int = 0,
        mtime_ns: int | None = None,
    ) -> int:
        root, path = self._locate(path)
        root_fd = _open_root(root, path)
        try:
            try:
                return openat2(root_fd, path, os.O_PATH | os.O_DIRECTORY)
            except NodeFileError as e:
                if not create or e.errno != errno.ENOENT:
                    raise
            # Make the missing components one at a time; each prefix resolves from the node's root,
            # so a symlinked directory on the way means what it means inside the node.
            parts = [p for p in posixpath.normpath("/" + path).split("/") if p]
            for i in range(1, len(parts) + 1):
                prefix = "/".join(parts[:i])
                try:
                    os.close(openat2(root_fd, prefix, os.O_PATH | os.O_DIRECTORY))
                    continue
                except NodeFileError as e:
                    if e.errno != errno.ENOENT:
                        raise
                parent_fd = openat2(root_fd, "/".join(parts[: i - 1]) or "/", os.O_PATH | os.O_DIRECTORY)
                try:
                    self._mkdir_at(parent_fd, parts[i - 1], mode, uid, gid)
                    if mtime_ns is not None:
                        # Directories made for a file carry the episode's time, as the file does
                        # (the next one made inside stamps this one again, the write its parent).
                        _stamp(parent_fd, mtime_ns)
                finally:
                    os.close(parent_fd)
            return openat2(root_fd, path, os.O_PATH | os.O_DIRECTORY)
        finally:
            os.close(root_fd)

    def _mkdir_at(self, dir_fd: int, name: str, mode: int, uid: int, gid: int) -> None:
        # Ids first: a directory made and then left owned by host root is worse than none.
        owners = self._host_id(uid), self._host_id(gid)
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            return
        except OSError as e:
            raise _node_error(e, name) from None
        # Owned as the node would own it, through a descriptor of the new directory itself.
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as e:
            raise _node_error(e, name) from None
        try:
            os.fchown(fd, *owners)
            os.fchmod(fd, mode)
        except OSError as e:
            raise _node_error(e, name) from None
        finally:
            os.close(fd)

    def write(
        self, path: str, data: bytes, *, mode: int, uid: int, gid: int, mtime_ns: int | None = None
    ) -> None:
        """Replace `path` with a new regular file, atomically (a temp file renamed over it)."""
        owners = self._host_id(uid), self._host_id(gid)
        dir_fd, name = self._parent(path, create=True, mtime_ns=mtime_ns)
        tmp = f".{name[:200]}.{secrets.token_hex(6)}.hpcgym-tmp"
        try:
            try:
                fd = os.open(
                    tmp,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=dir_fd,
                )
            except OSError as e:
                raise _node_error(e, path) from None
            try:
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fchown(fd, *owners)
                    os.fchmod(fd, mode)
                    if mtime_ns is not None:
                        os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                if mtime_ns is not None:
                    _stamp(dir_fd, mtime_ns)  # the rename changed the directory, at this moment
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise _node_error(e, path) from None
        finally:
            os.close(dir_fd)

    def append(
        self, path: str, data: bytes, *, mode: int, uid: int, gid: int, mtime_ns: int | None = None
    ) -> None:
        """Append to a log the way a daemon does (O_APPEND, created if missing), never into a FIFO."""
        owners = self._host_id(uid), self._host_id(gid)
        parent, _ = _split(path)
        parent_fd = self._dir_fd(parent, create=True)
        try:
            self._append(path, data, mode, owners, mtime_ns, parent_fd)
        finally:
            os.close(parent_fd)

    def _append(
        self, path: str, data: bytes, mode: int, owners: tuple[int, int], mtime_ns: int | None, parent_fd: int
    ) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY
        # Following a symlinked log is what the daemon would do; openat2 keeps it inside the node.
        with self._fd(path, flags, 0o600) as fd:
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise NodeFileError(errno.EINVAL, "not a regular file", path)
                # Only we create files as host root: a new log gets the daemon's owners.
                if st.st_uid == 0 and st.st_size == 0:
                    os.fchown(fd, *owners)
                    os.fchmod(fd, mode)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if mtime_ns is not None:
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                    if st.st_size == 0:
                        _stamp(parent_fd, mtime_ns)  # a new log: a new entry in its directory
            except NodeFileError:
                raise
            except OSError as e:
                raise _node_error(e, path) from None

    def rewrite(self, path: str, mtime_ns: int) -> bool:
        """Write a regular file anew with its own bytes, mode and owners; False if there is none."""
        st, data = self.stat(path), self.read(path)
        if st is None or data is None or not stat.S_ISREG(st.st_mode):
            return False
        uid, gid = self.node_id(st.st_uid), self.node_id(st.st_gid)
        self.write(path, data, mode=stat.S_IMODE(st.st_mode), uid=uid, gid=gid, mtime_ns=mtime_ns)
        return True

    def touch_dir(self, path: str, mtime_ns: int | None = None) -> None:
        """Change a directory's entries and put them back (its mtime and ctime become now).

        With `mtime_ns`, the mtime then shows that instant (the episode's clock); ctime stays now.
        """
        try:
            dir_fd = self._dir_fd(path, create=False)
        except NodeFileError:
            return
        try:
            tmp = f".{secrets.token_hex(6)}.hpcgym-tmp"
            with contextlib.suppress(OSError):
                os.close(
                    os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
                )
                os.unlink(tmp, dir_fd=dir_fd)
            if mtime_ns is not None:
                _stamp(dir_fd, mtime_ns)
        finally:
            os.close(dir_fd)

    def _existing_parent(self, path: str) -> tuple[int, str] | None:
        """Like `_parent`, but None where there is no such directory (nothing to remove)."""
        try:
            return self._parent(path, create=False)
        except NodeFileError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise

    def symlink(self, path: str, target: str, *, uid: int = 0, gid: int = 0) -> None:
        """Replace `path` with a symlink to `target` (a package's soname link).

        Made by name inside its directory and renamed over the old entry, never following one.
        """
        owners = self._host_id(uid), self._host_id(gid)
        dir_fd, name = self._parent(path, create=True)
        tmp = f".{name[:200]}.{secrets.token_hex(6)}.hpcgym-tmp"
        try:
            os.symlink(target, tmp, dir_fd=dir_fd)
            try:
                os.chown(tmp, *owners, dir_fd=dir_fd, follow_symlinks=False)
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dir_fd)
                raise
        except OSError as e:
            raise _node_error(e, path) from None
        finally:
            os.close(dir_fd)

    def remove(self, path: str) -> None:
        """Unlink a file (or symlink) by name inside its directory; missing is fine."""
        if (found := self._existing_parent(path)) is None:
            return
        dir_fd, name = found
        try:
            os.unlink(name, dir_fd=dir_fd)
        except (FileNotFoundError, IsADirectoryError):
            pass
        except OSError as e:
            raise _node_error(e, path) from None
        finally:
            os.close(dir_fd)

    def remove_tree(self, path: str) -> None:
        """Delete a file or a whole directory; shutil walks it by descriptors, never following links."""
        if (found := self._existing_parent(path)) is None:
            return
        dir_fd, name = found
        try:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=dir_fd)
            else:
                os.unlink(name, dir_fd=dir_fd)
        except OSError as e:
            raise _node_error(e, path) from None
        finally:
            os.close(dir_fd)

    def mkdir(self, path: str, *, mode: int, uid: int, gid: int) -> None:
        """Create a directory and its missing parents; the last one gets `mode` and owners."""
        parent, name = _split(path)
        dir_fd = self._dir_fd(parent, create=True)
        try:
            self._mkdir_at(dir_fd, name, mode, uid, gid)
            fd = openat2(dir_fd, name, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fchown(fd, self._host_id(uid), self._host_id(gid))
                os.fchmod(fd, mode)
            except OSError as e:
                raise _node_error(e, path) from None
            finally:
                os.close(fd)
        finally:
            os.close(dir_fd)

    def chmod(self, path: str, mode: int) -> None:
        """Permission bits of what `path` resolves to (inside the root)."""
        with self._fd(path, os.O_PATH) as fd:
            # fchmod refuses O_PATH descriptors; the /proc magic link of our own descriptor does not.
            try:
                os.chmod(f"/proc/self/fd/{fd}", mode)
            except OSError as e:
                raise _node_error(e, path) from None

    def chown(self, path: str, uid: int, gid: int) -> None:
        """Owners of `path` itself (a symlink is changed, not followed), as ids inside the node."""
        parent, name = _split(path)
        dir_fd = self._dir_fd(parent, create=False)
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as e:
            os.close(dir_fd)
            raise _node_error(e, path) from None
        try:
            rc = _libc.fchownat(fd, b"", self._host_id(uid), self._host_id(gid), _AT_EMPTY_PATH)
            if rc != 0:
                err = ctypes.get_errno()
                raise _node_error(OSError(err, os.strerror(err), path), path)
        finally:
            os.close(fd)
            os.close(dir_fd)


def _stamp(dir_fd: int, mtime_ns: int) -> None:
    """Set the times of the directory behind an O_PATH descriptor (futimens takes no O_PATH fd)."""
    with contextlib.suppress(OSError):
        os.utime(f"/proc/self/fd/{dir_fd}", ns=(mtime_ns, mtime_ns))
