"""How the service layer touches a node: its files and its processes, behind one small interface.

The controller runs outside the sandboxes, so it never opens a node's files or spawns its processes
itself. It asks a `NodeAccess`, which the runtime implements over the node's overlay (real files the
agent can `ls -l` and `chmod`) and the node's sandbox (real processes that `ps`, `pgrep` and `pidof`
find, and that the agent can kill). `MemoryNodeAccess` is the in-memory stand-in for tests and for
controller-only runs; it hands out pids deterministically.
"""

from __future__ import annotations

import posixpath
import stat as statmod
from dataclasses import dataclass, field
from typing import Protocol

ROOT_UID = 0


class NodeFileError(OSError):
    """A node's own file condition (a full disk, a directory where a file goes, a symlink loop).

    The simulated daemon's problem, logged and failed on as the real one would; never the episode's.
    """


@dataclass(frozen=True)
class FileStat:
    """What `stat(2)` says about a path: the full `st_mode` (type and permission bits) and owners."""

    mode: int
    uid: int
    gid: int

    @property
    def perms(self) -> int:
        """Permission bits with setuid/setgid/sticky (`st_mode & ~S_IFMT`), as munged prints them."""
        return statmod.S_IMODE(self.mode)

    def is_dir(self) -> bool:
        return statmod.S_ISDIR(self.mode)

    def is_file(self) -> bool:
        return statmod.S_ISREG(self.mode)


class NodeAccess(Protocol):
    """A node's filesystem and process table, as the simulated daemons need them.

    Paths are absolute paths inside the node. Every method may be called for a node whose sandbox
    has not started yet; the runtime decides whether that starts it or defers the work.
    """

    def stat(self, node: str, path: str) -> FileStat | None:
        """Follow symlinks and stat `path`; None if it does not exist."""
        ...

    def resolve(self, node: str, path: str) -> str:
        """The path the node's kernel reaches through `path`, as `realpath` prints it.

        Repeated slashes, `.`, `..` and every symlink are resolved inside the node's own root. The
        last component need not exist (`execve` then fails with ENOENT); every one before it must be
        a directory. Raises NodeFileError (ENOENT, ENOTDIR, ELOOP, ...) where the lookup fails.
        """
        ...

    def read(self, node: str, path: str) -> bytes | None:
        """The file's bytes; None if it does not exist or is not a regular file."""
        ...

    def list_dir(self, node: str, path: str, *, max_entries: int) -> list[str]:
        """The names in directory `path`, sorted, at most `max_entries`; [] if it is no directory.

        Nothing is followed past `path` itself, and a name is listed whatever it is (a file, a
        directory, a symlink): the caller stats what it means to read.
        """
        ...

    def write(
        self, node: str, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        """Create or replace a regular file (pid files, `curl -o`); raises NodeFileError on a node fault."""
        ...

    def append(
        self, node: str, path: str, data: bytes, *, mode: int = 0o640, uid: int = 0, gid: int = 0
    ) -> None:
        """Append to a log, creating it with these owners if missing; raises NodeFileError on a node fault."""
        ...

    def remove(self, node: str, path: str) -> None:
        """Delete a file if it exists (a pid file on a clean stop); raises NodeFileError on a node fault."""
        ...

    def version(self, node: str, path: str) -> tuple[int, ...] | None:
        """A token that changes whenever the regular file at `path` may have changed, or None.

        None where it cannot be told cheaply (missing, not a regular file, a symlink on the way): a
        caller that caches what it parsed of the file must read it again then.
        """
        ...

    def start_process(self, node: str, comm: str, argv: list[str], *, uid: int = 0, program: str = "") -> int:
        """Start a long-lived stand-in process named `comm` with this argv; return its pid in the node.

        With `program` (a node path), that program itself runs with this argv instead of the stand-in:
        a unit whose ExecStart names something other than a simulated daemon runs what it names.
        Raises NodeFileError when the node's own programs cannot start it (the agent broke them).
        """
        ...

    def is_alive(self, node: str, pid: int) -> bool:
        """Whether the process still runs (a killed or exited daemon is not alive)."""
        ...

    def kill(self, node: str, pid: int, signal: int = 15) -> None:
        """Send a signal; a process that is already gone is not an error."""
        ...

    def exit_status(self, node: str, pid: int) -> int | None:
        """How a process that is gone ended (its raw wait(2) status); None while it runs or if unknown."""
        ...


def is_symlink(access: NodeAccess, node: str, path: str) -> bool:
    """Whether `path`'s own last component is a symlink (lstat's S_ISLNK), even one leading nowhere.

    Told by the lookup: where the directory resolves, only a symlink at the end can lead the path
    off its own name, or make its lookup fail (a loop, a target under missing directories).
    """
    try:
        parent = access.resolve(node, posixpath.dirname(path))
    except NodeFileError:
        return False
    try:
        return access.resolve(node, path) != posixpath.join(parent, posixpath.basename(path))
    except NodeFileError:
        return True


@dataclass
class _Process:
    comm: str
    argv: list[str]
    uid: int
    program: str = ""


@dataclass
class _MemoryNode:
    files: dict[str, tuple[bytes, FileStat]] = field(default_factory=dict)
    dirs: dict[str, FileStat] = field(default_factory=dict)
    processes: dict[int, _Process] = field(default_factory=dict)
    # pid -> raw wait(2) status of each process that ended (a signal, or an exit code << 8).
    exits: dict[int, int] = field(default_factory=dict)
    next_pid: int = 0


class MemoryNodeAccess:
    """An in-memory `NodeAccess`: files and processes live in dicts, pids count up per node.

    Example:
        >>> access = MemoryNodeAccess()
        >>> access.put("n1", "/etc/munge/munge.key", b"k" * 32, mode=0o400, uid=981, gid=981)
        >>> oct(access.stat("n1", "/etc/munge/munge.key").perms)
        '0o400'
    """

    def __init__(self, first_pid: int = 100) -> None:
        self.first_pid = first_pid
        self.nodes: dict[str, _MemoryNode] = {}
        # NFS mounts (the mount and umount tools): node -> its share points, and those unmounted.
        self.shares: dict[str, tuple[str, ...]] = {}
        self.unmounted_shares: set[tuple[str, str]] = set()

    def _node(self, node: str) -> _MemoryNode:
        if node not in self.nodes:
            self.nodes[node] = _MemoryNode(next_pid=self.first_pid)
        return self.nodes[node]

    # ---- set-up helpers (tests, scenarios) -------------------------------------------------------

    def put(
        self, node: str, path: str, data: bytes | str, *, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        """Create a file and its parent directories (root-owned, 0755)."""
        raw = data.encode() if isinstance(data, str) else data
        self.write(node, path, raw, mode=mode, uid=uid, gid=gid)

    def mkdir(self, node: str, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self._node(node).dirs[posixpath.normpath(path)] = FileStat(statmod.S_IFDIR | mode, uid, gid)

    def chmod(self, node: str, path: str, mode: int) -> None:
        data, old = self._node(node).files[path]
        self._node(node).files[path] = (data, FileStat(statmod.S_IFREG | mode, old.uid, old.gid))

    def chown(self, node: str, path: str, uid: int, gid: int) -> None:
        data, old = self._node(node).files[path]
        self._node(node).files[path] = (data, FileStat(old.mode, uid, gid))

    def processes(self, node: str) -> dict[int, str]:
        """Pid -> comm of the node's live processes (what `pidof` would see)."""
        return {pid: proc.comm for pid, proc in self._node(node).processes.items()}

    # ---- NodeAccess ------------------------------------------------------------------------------

    def stat(self, node: str, path: str) -> FileStat | None:
        state = self._node(node)
        path = posixpath.normpath(path)
        if path in state.files:
            return state.files[path][1]
        if path in state.dirs:
            return state.dirs[path]
        if path == "/" or any(name.startswith(path + "/") for name in (*state.files, *state.dirs)):
            return FileStat(statmod.S_IFDIR | 0o755, ROOT_UID, ROOT_UID)
        return None

    def resolve(self, node: str, path: str) -> str:
        parts: list[str] = []
        for part in path.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part not in ("", "."):
                parts.append(part)
        return "/" + "/".join(parts)

    def read(self, node: str, path: str) -> bytes | None:
        entry = self._node(node).files.get(posixpath.normpath(path))
        return None if entry is None else entry[0]

    def write(
        self, node: str, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        state = self._node(node)
        path = posixpath.normpath(path)
        old = state.files.get(path)
        # Like open(O_TRUNC): an existing file keeps its mode and owner.
        meta = old[1] if old is not None else FileStat(statmod.S_IFREG | mode, uid, gid)
        state.files[path] = (data, meta)

    def list_dir(self, node: str, path: str, *, max_entries: int) -> list[str]:
        state = self._node(node)
        top = posixpath.normpath(path)
        names = {
            name[len(top) + 1 :].split("/", 1)[0]
            for name in (*state.files, *state.dirs)
            if name.startswith(top + "/")
        }
        return sorted(names)[:max_entries]

    def append(
        self, node: str, path: str, data: bytes, *, mode: int = 0o640, uid: int = 0, gid: int = 0
    ) -> None:
        old = self.read(node, path) or b""
        self.write(node, path, old + data, mode=mode, uid=uid, gid=gid)

    def remove(self, node: str, path: str) -> None:
        self._node(node).files.pop(posixpath.normpath(path), None)

    def version(self, node: str, path: str) -> tuple[int, ...] | None:
        return None  # nothing here is cached across requests: every question reads the dicts

    def start_process(self, node: str, comm: str, argv: list[str], *, uid: int = 0, program: str = "") -> int:
        state = self._node(node)
        pid = state.next_pid
        state.next_pid += 1
        state.processes[pid] = _Process(comm, list(argv), uid, program)
        return pid

    def is_alive(self, node: str, pid: int) -> bool:
        return pid in self._node(node).processes

    def kill(self, node: str, pid: int, signal: int = 15) -> None:
        # Our stand-in daemons catch nothing: every signal but 0 ends them, and reads as that signal.
        state = self._node(node)
        if signal != 0 and state.processes.pop(pid, None) is not None:
            state.exits[pid] = signal & 0x7F

    def exit_process(self, node: str, pid: int, code: int) -> None:
        """A process ends on its own with exit code `code` (a test's daemon that exits)."""
        state = self._node(node)
        if state.processes.pop(pid, None) is not None:
            state.exits[pid] = (code & 0xFF) << 8

    def exit_status(self, node: str, pid: int) -> int | None:
        state = self._node(node)
        return None if pid in state.processes else state.exits.get(pid)

    # ---- NFS shares (see commands/mountcmds.py) ----------------------------------------------------

    def share_points(self, node: str) -> tuple[str, ...]:
        return self.shares.get(node, ())

    def is_share_mounted(self, node: str, point: str) -> bool:
        return (node, point) not in self.unmounted_shares

    def mount_share(self, node: str, point: str) -> None:
        self.unmounted_shares.discard((node, point))

    def unmount_share(self, node: str, point: str) -> None:
        self.unmounted_shares.add((node, point))
