"""The controller's hands inside a cluster: node files and daemon processes, through the runtime.

The controller runs outside every sandbox, so when munged checks its key or systemctl starts slurmd it
works on the node's real files (the merged overlay, or the image's lower dir for a node not started
yet) and real processes in the node's PID namespace. Files are touched only through `nodefs.NodeFS`,
relative to a descriptor of the node's root, so nothing the agent plants can point the controller at
a host file.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import posixpath
import select
import shlex
import stat as stat_module
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hpcgym.controller.services.access import FileStat, NodeFileError
from hpcgym.episode.nodefs import MAX_READ_BYTES, NodeFS
from hpcgym.errors import SandboxError
from hpcgym.runtime.cluster import SHARED_DIRS, Cluster, Node, ShareState
from hpcgym.runtime.init import IO_NULL, IO_PIPE, InitError, SpawnFailed, Stdio
from hpcgym.runtime.sandbox import children_of
from hpcgym.runtime.unpack import ID_RANGE

log = logging.getLogger(__name__)

# How long after its last change a file's ctime stops being able to hide a later change (well past
# the kernel's coarse timestamp tick, 1-10 ms) and `ClusterNodes.version` gives one.
VERSION_SETTLE_NS = 1_000_000_000

DAEMON_DIR = "/usr/libexec/hpcgym/daemons"
START_TIMEOUT_S = 3.0
# What one control request (one `systemctl restart a b c`) may spend starting processes in nodes,
# all together: the episode's lock is held meanwhile, so a node whose bash the agent made slow costs
# its step this much past the step's own limit, and no more.
REQUEST_WORK_S = 5.0
# How long the host waits for init's word on a daemon it started and already found dead
# (`exit_status`): init reaps at once, unless the host is starved or init is gone. At a load of 15
# on 2 cores (a soak beside four test runs) 1 s was sometimes too short, and a SIGTERM read as KILL.
EXIT_WORD_TIMEOUT_S = 3.0
# The least time init is given to answer a start, however little of its request is left.
SPAWN_FLOOR_S = 1.0

# What systemd gives a service's process (systemd.exec(5): "Environment variables in spawned
# processes"; PATH as systemd 252 on Rocky 9 sets it), and its default WorkingDirectory, the root.
SERVICE_ENV = {"LANG": "C.UTF-8", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"}
SERVICE_CWD = "/"


@dataclass(frozen=True)
class NodeStat:
    """What lstat(2) says of a node path, owners as ids inside the node.

    `version` changes whenever the file's contents or metadata may have: its inode, size and
    modification and change times (ctime cannot be set back from inside the node).
    """

    mode: int
    uid: int
    gid: int
    size: int
    ino: int
    mtime_ns: int
    ctime_ns: int

    @property
    def version(self) -> tuple[int, int, int, int]:
        return self.ino, self.size, self.mtime_ns, self.ctime_ns


def _node_stat(fs: NodeFS, st: os.stat_result) -> NodeStat:
    return NodeStat(
        mode=st.st_mode,
        uid=fs.node_id(st.st_uid),
        gid=fs.node_id(st.st_gid),
        size=st.st_size,
        ino=st.st_ino,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
    )


class NodeAccessError(SandboxError):
    """The controller could not reach into a node (an infrastructure failure, never the agent's)."""


class ClusterNodes:
    """`NodeAccess` over one runtime cluster."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.uid_base = cluster.uid_base
        # The episode's virtual time (epoch seconds), once it has a clock: what the files the
        # simulated daemons write are stamped with, so `ls -l` shows the same bytes every run.
        self.now_s: Callable[[], int] | None = None
        self._host_pids: dict[tuple[str, int], tuple[int, int]] = {}
        self._fs_cache: dict[str, tuple[bool, NodeFS]] = {}
        self._request = threading.local()

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Bound the node work of one control request handled on this thread (REQUEST_WORK_S)."""
        self._request.deadline = time.monotonic() + REQUEST_WORK_S
        try:
            yield
        finally:
            self._request.deadline = None

    def _time_left(self) -> float:
        deadline = getattr(self._request, "deadline", None)
        return START_TIMEOUT_S if deadline is None else min(START_TIMEOUT_S, deadline - time.monotonic())

    # --- files ------------------------------------------------------------------------------

    def _node(self, name: str) -> Node:
        try:
            return self.cluster.nodes[name]
        except KeyError:
            raise NodeAccessError(f"no node {name!r} in this cluster") from None

    def _root(self, node: Node) -> Path:
        # A node that never started has exactly its image's files.
        return node.root if node.is_mounted() else self.cluster.lowers[node.role]

    def _fs(self, name: str, *, start: bool = False) -> NodeFS:
        node = self._node(name)
        if start:
            node.ensure_started()
        # Which host dirs a node's tree is made of changes only when its overlay comes up, and
        # building them anew cost half of every file read the per-step tick makes.
        mounted = node.is_mounted()
        cached = self._fs_cache.get(name)
        if cached is not None and cached[0] == mounted:
            return cached[1]
        # /home and /apps are binds in the node's sandbox: what it writes there is the share's.
        mounts = {d: node.shared_view(d) for d in SHARED_DIRS}
        fs = NodeFS(self._root(node), self.uid_base, ID_RANGE, mounts)
        self._fs_cache[name] = (mounted, fs)
        return fs

    def stat(self, node: str, path: str) -> FileStat | None:
        fs = self._fs(node)
        st = fs.stat(path)
        if st is None:
            return None
        return FileStat(mode=st.st_mode, uid=fs.node_id(st.st_uid), gid=fs.node_id(st.st_gid))

    def resolve(self, node: str, path: str) -> str:
        """Where the node's kernel's lookup of `path` leads (see `NodeFS.resolve`)."""
        return self._fs(node).resolve(path)

    def read(
        self, node: str, path: str, *, max_bytes: int = MAX_READ_BYTES, follow_symlinks: bool = True
    ) -> bytes | None:
        """A regular file's bytes; None if missing, not a regular file, unreadable or over `max_bytes`.

        With `follow_symlinks=False`, None too where any component of the path is a symlink.
        """
        return self._fs(node).read(path, max_bytes, follow_symlinks=follow_symlinks)

    def lstat(self, node: str, path: str) -> NodeStat | None:
        """The path itself, not followed; None if missing or if a directory on the way is a symlink."""
        fs = self._fs(node)
        st = fs.stat(path, follow_symlinks=False)
        return None if st is None else _node_stat(fs, st)

    def version(self, node: str, path: str) -> tuple[int, ...] | None:
        """The file's device, inode, size, mtime and ctime; None but for a regular file, no symlinks.

        The node cannot change a file's contents without changing its ctime, nor set a ctime back.
        Two writes of one size within one tick of a kernel's coarse clock (before 6.13's fine-grained
        timestamps) could still share one, so a file changed less than `VERSION_SETTLE_NS` ago has no
        version yet: its readers read it again until its ctime is past any tick a later write shares.
        """
        fs = self._fs(node)
        st = fs.stat(path, follow_symlinks=False)
        if st is None or not stat_module.S_ISREG(st.st_mode):
            return None
        if time.time_ns() - st.st_ctime_ns < VERSION_SETTLE_NS:
            return None
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns

    def walk(self, node: str, path: str, *, max_entries: int, max_depth: int) -> list[tuple[str, NodeStat]]:
        """Everything under a node directory, nothing followed (see `NodeFS.walk`)."""
        fs = self._fs(node)
        return [
            (child, _node_stat(fs, st))
            for child, st in fs.walk(path, max_entries=max_entries, max_depth=max_depth)
        ]

    def list_dir(self, node: str, path: str, *, max_entries: int) -> list[str]:
        """The names in a node directory, sorted (see `NodeFS.walk`; a symlinked `path` lists nothing)."""
        fs = self._fs(node)
        return [posixpath.basename(child) for child, _ in fs.walk(path, max_entries=max_entries, max_depth=0)]

    def write(
        self, node: str, path: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0
    ) -> None:
        self._fs(node, start=True).write(path, data, mode=mode, uid=uid, gid=gid, mtime_ns=self._stamp())

    def append(
        self, node: str, path: str, data: bytes, *, mode: int = 0o640, uid: int = 0, gid: int = 0
    ) -> None:
        self._fs(node, start=True).append(path, data, mode=mode, uid=uid, gid=gid, mtime_ns=self._stamp())

    def _stamp(self) -> int | None:
        return None if self.now_s is None else self.now_s() * 1_000_000_000

    def remove(self, node: str, path: str) -> None:
        self._fs(node, start=True).remove(path)

    def symlink(self, node: str, path: str, target: str) -> None:
        """Make `path` a symlink to `target` (root-owned), as a package's soname link is."""
        self._fs(node, start=True).symlink(path, target)

    # Scenario injects (added for scenarios/faults.py): change what the agent will find, in place.

    def rewrite(self, node: str, path: str, mtime_s: int) -> bool:
        """Write a file anew with its own contents, mode and owners, stamped `mtime_s`; False if none."""
        return self._fs(node, start=True).rewrite(path, mtime_s * 1_000_000_000)

    def touch_dir(self, node: str, path: str) -> None:
        """Give a directory a fresh mtime and ctime by adding and removing an entry."""
        self._fs(node, start=True).touch_dir(path, self._stamp())

    def chmod(self, node: str, path: str, mode: int) -> None:
        """Set a node file's permission bits (follows symlinks inside the node's root)."""
        self._fs(node, start=True).chmod(path, mode)

    def chown(self, node: str, path: str, uid: int, gid: int) -> None:
        """Set a node file's owners, as ids inside the node."""
        self._fs(node, start=True).chown(path, uid, gid)

    def mkdir(self, node: str, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        """Create a directory (and missing parents) with the given mode and owners."""
        self._fs(node, start=True).mkdir(path, mode=mode, uid=uid, gid=gid)

    def remove_tree(self, node: str, path: str) -> None:
        """Delete a file or a whole directory; a missing path is not an error."""
        self._fs(node, start=True).remove_tree(path)

    # --- NFS shares: what `mount`/`umount` change, a scenario makes stale, and grading asks ----------

    def share_points(self, node: str) -> tuple[str, ...]:
        """The shared dirs a node mounts from the login node (none on the login node: it exports them)."""
        target = self._node(node)
        if target.role != self.cluster.config.compute_role:
            return ()
        return tuple(f"/{name}" for name in SHARED_DIRS)

    def _share(self, node: str, point: str) -> tuple[Node, str]:
        if point not in self.share_points(node):
            raise NodeAccessError(f"{point} is not a shared mount of {node}")
        return self._node(node), point.strip("/")

    def is_share_mounted(self, node: str, point: str) -> bool:
        """Mounted, healthy or stale (a stale mount is still in the mount table)."""
        target, name = self._share(node, point)
        return target.share_state(name) is not ShareState.UNMOUNTED

    def mount_share(self, node: str, point: str) -> None:
        target, name = self._share(node, point)
        target.mount_share(name)

    def unmount_share(self, node: str, point: str) -> None:
        target, name = self._share(node, point)
        target.unmount_share(name)

    def make_share_stale(self, node: str, point: str) -> None:
        target, name = self._share(node, point)
        target.make_share_stale(name)

    def sees_share(self, node: str, point: str) -> bool:
        """The node's shell reaches the live share at `point` (the kernel's answer, not a file's)."""
        target, name = self._share(node, point)
        return target.sees_share(name)

    # --- processes ----------------------------------------------------------------------------

    def start_process(self, node: str, comm: str, argv: list[str], *, uid: int = 0, program: str = "") -> int:
        """Ask the node's init to start the process (`runtime/init.py`); return its pid in the node.

        A stand-in daemon is `cat` under the daemon's name with the unit's whole command line as its
        one argument (as `ps` shows a daemon), reading a pipe whose write end it holds itself, so it
        blocks until it is killed. A `program` runs itself, with ExecStart's argv.
        """
        target = self._node(node)
        time_left = self._time_left()
        if time_left <= 0:
            raise NodeFileError(errno.ETIME, f"could not start {comm}: this request took too long")
        shell = target.ensure_started()
        if shell.init is None:
            raise NodeAccessError(f"{node} has no init to start {comm}")
        if program:
            path, args = program, [argv[0] if argv else program, *argv[1:]]
        else:
            path, args = f"{DAEMON_DIR}/{comm}", [shlex.join(argv)]
        try:
            return shell.init.spawn(
                path,
                args,
                SERVICE_ENV,
                cwd=SERVICE_CWD,
                uid=uid,
                gid=uid,
                stdio=Stdio(IO_PIPE, IO_NULL, IO_NULL),
                # A request nearly out of time still gives init a moment to fork: on a starved host
                # a spawn with milliseconds left timed out (an infrastructure failure).
                timeout_s=max(time_left, SPAWN_FLOOR_S),
            )
        except SpawnFailed as e:
            # The node's own program is missing or not executable (the agent's doing): no daemon.
            raise NodeFileError(e.errno or errno.ENOEXEC, f"could not start {comm}: {e.strerror}") from None
        except InitError as e:
            raise NodeAccessError(f"could not start {comm} on {node}: {e.message}") from None

    def exit_status(self, node: str, pid: int) -> int | None:
        """How the process the node knows as `pid` ended (its raw wait status), as its init saw it.

        None while the host still finds it alive, or where init said nothing of it: init's word is
        taken only for a process that the host itself no longer finds.
        """
        target = self._node(node)
        shell = target.shell
        if shell is None or shell.init is None or self.is_alive(node, pid):
            return None
        # The host may find the process gone (a zombie) before init has reaped it and said how it
        # ended: on a crowded host a SIGTERM'd munged read as SIGKILL 4 times in 40, and
        # Restart=on-abort brought it back. It is dead, so init's word is due: wait for it, a while.
        init = shell.init
        if not init.started(pid):
            # Not this init's child: the node was started again (the agent's `exit` on login01
            # restarts its shell), so the process died with the old node and nobody will say more.
            # Waiting for the word cost a second per unit.
            return init.exit_status(pid)
        deadline = time.monotonic() + EXIT_WORD_TIMEOUT_S
        while (status := init.exit_status(pid)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("%s: no exit status from init for pid %d; it reads as SIGKILL", node, pid)
                return None
            fd = init.sock.fileno()
            if fd < 0:
                return None  # the node is closed: its init said nothing more
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            ready = poller.poll(math.ceil(left * 1000))
            if ready and ready[0][1] & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
                return init.exit_status(pid)  # init is gone: what it said before is all there is
        return status

    def _host_pid(self, node: str, pid: int) -> int | None:
        """The host pid of the process the node knows as `pid`, if that very process still exists."""
        known = self._host_pids.get((node, pid))
        if known is None:
            known = self._find_host_pid(node, pid)
            if known is None:
                return None
            self._host_pids[(node, pid)] = known
        host_pid, start_ticks = known
        stat_fields = _read_stat(host_pid)
        # Same pid and same start time: the same process, not a later one that reused the number.
        if stat_fields is None or int(stat_fields[19]) != start_ticks or stat_fields[0] == "Z":
            return None
        return host_pid

    def _find_host_pid(self, node: str, pid: int) -> tuple[int, int] | None:
        # Only the node's own process tree is searched: its init (the shell's parent) adopts every
        # daemon once the command that started it has exited.
        target = self._node(node)
        if target.shell is None or not target.shell.is_alive:
            return None
        init = _parent_of(target.shell.shell_pid)
        pending = [init] if init else []
        while pending:
            host_pid = pending.pop()
            if _ns_pid(host_pid) == pid:
                fields = _read_stat(host_pid)
                return (host_pid, int(fields[19])) if fields else None
            pending.extend(children_of(host_pid))
        return None

    def is_alive(self, node: str, pid: int) -> bool:
        return self._host_pid(node, pid) is not None

    def kill(self, node: str, pid: int, signal: int = 15) -> None:
        host_pid = self._host_pid(node, pid)
        if host_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(host_pid, signal)


def _read_stat(host_pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, ...]; field 19 is the start time."""
    # Every tick asks this of every daemon: plain descriptors, not a text file object, halve it.
    try:
        fd = os.open(f"/proc/{host_pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, ProcessLookupError):
        return None
    try:
        raw = os.read(fd, 4096)
    except ProcessLookupError:
        return None
    finally:
        os.close(fd)
    return raw.rsplit(b")", 1)[1].decode().split()


def _parent_of(host_pid: int) -> int | None:
    fields = _read_stat(host_pid)
    return int(fields[1]) if fields else None


def _ns_pid(host_pid: int) -> int | None:
    try:
        with open(f"/proc/{host_pid}/status") as f:
            for line in f:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None
