"""EPISODE: a cluster of nodes (one login node, N compute nodes), each its own overlay and sandbox.

A `Cluster` owns one private tmpfs under the scratch dir (`/dev/shm/hpcgym-<pid>-<start>-<seq>`)
holding every node's upper and work dirs, the shared `/home` and `/apps`, and the control sockets;
unmounting it at close frees everything at once, and a crashed owner's leftovers are recognisable by
name (`sweep.py`). Nodes start lazily: the login node when the cluster is made, a compute node on the
first `ssh` to it. The agent's shell is on one node at a time (`current_node`); `ssh NODE` moves it,
`exit` on a compute node moves it back, `exit` on the login node ends the episode. `su - alice` (or
`sudo -i -u alice`) stacks alice's own shell on the node (`current_user`); its `exit` comes back.

Controller logic stays out: requests from the stubs go to the `handler` given at creation (except
`ssh`, which is the cluster's own business).
"""

from __future__ import annotations

import enum
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from hpcgym.closing import Closing
from hpcgym.errors import ClusterClosedError, ControllerError, NodeCrashedError, SandboxError
from hpcgym.run import require_tool
from hpcgym.runtime import hostids, overlay, sandbox, su, sweep
from hpcgym.runtime.cgroup import Cgroups, EpisodeCgroup
from hpcgym.runtime.channel import ControlChannel, Handler, Request, WireReply, echo_handler
from hpcgym.runtime.hostids import HostIdSlot
from hpcgym.runtime.init import INIT_PATH
from hpcgym.runtime.mountns import MountNamespace
from hpcgym.runtime.overlay import OverlayMode
from hpcgym.runtime.sandbox import Limits, SandboxSpec
from hpcgym.runtime.shell import DEFAULT_MAX_OUTPUT_BYTES, JoinedShell, Shell, ShellResult
from hpcgym.runtime.ssh import parse_ssh_args, unknown_host_message
from hpcgym.runtime.stalefs import StaleMount

log = logging.getLogger(__name__)
T = TypeVar("T")

SHARED_DIRS = ("home", "apps")
# Where each shared dir comes from, as a compute node's NFS client names it (the login node exports).
EXPORT_DIR = "/export"


class ShareState(enum.StrEnum):
    """What a node's copy of a shared dir shows: the share, a stale handle, or its empty mount point."""

    MOUNTED = "mounted"
    STALE = "stale"
    UNMOUNTED = "unmounted"


_EXIT = re.compile(r"^\s*(?:exit|logout)(?:\s+(\d+))?\s*;?\s*$")
NOBODY_UID = 65534
# Shells stacked on one another by su and ssh; past this, su and sudo are the node's own.
MAX_SEATS = 16


@dataclass
class _Seat:
    """One shell of the agent's stack: a node's own root shell, or a user's shell stacked on it."""

    node: str
    shell: JoinedShell | None = None
    via_ssh: bool = False

    @property
    def uid(self) -> int:
        return 0 if self.shell is None else self.shell.account.uid

    @property
    def user(self) -> str:
        return "root" if self.shell is None else self.shell.account.name


@dataclass(frozen=True)
class CommandResult:
    """What the agent sees after one command.

    `ended` is True once `exit` on the login node has closed the episode.
    """

    output: str
    exit_code: int
    wall_s: float
    timed_out: bool
    truncated: bool
    node: str
    ended: bool = False


@dataclass(frozen=True)
class ClusterConfig:
    """What every cluster of one `Runtime` shares."""

    lowers: Mapping[str, Path]  # role -> lower dir, owned by the image range (see `uid_base`)
    scratch_dir: Path
    overlay_mode: OverlayMode
    # The host uid the lower dirs' root is on disk (`unpack.py`); a cluster runs as `Cluster.uid_base`.
    uid_base: int
    limits: Limits
    channel: ControlChannel
    # Every sandbox is started from this one long-lived thread: bwrap's --die-with-parent fires when
    # the *thread* that forked it exits, and ssh starts nodes from short-lived channel threads.
    spawner: ThreadPoolExecutor
    cgroups: Cgroups | None = None
    login_role: str = "rocky-login"
    compute_role: str = "rocky-compute"
    default_timeout_s: float = 30.0
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES


class Node:
    """One node of one cluster: its overlay, its control socket and its shell."""

    def __init__(self, cluster: Cluster, name: str, role: str) -> None:
        self.cluster = cluster
        self.name = name
        self.role = role
        self.shell: Shell | None = None
        self._mounted = False
        self._lock = threading.RLock()
        self._stale: dict[str, StaleMount] = {}
        self._unmounted: set[str] = set()
        # This node's own files over the kernel's in /proc (its hardware: meminfo, cpuinfo).
        self.proc_files: tuple[tuple[Path, str], ...] = ()

    @property
    def dir(self) -> Path:
        """This node's dir in the episode's tmpfs, as the host reaches it."""
        return self.cluster.dir / "nodes" / self.name

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def control_dir(self) -> Path:
        return self.dir / "run"

    @property
    def spec(self) -> SandboxSpec:
        cluster, config = self.cluster, self.cluster.config
        # bwrap starts inside the cluster's mount namespace: its paths are as that namespace sees them.
        inner = cluster.inner
        return SandboxSpec(
            hostname=self.name,
            root=inner(self.root),
            uid_base=cluster.uid_base,
            control_dir=inner(self.control_dir),
            binds=tuple((inner(self.share_source(d)), f"/{d}") for d in SHARED_DIRS),
            limits=config.limits,
            cgroup_procs=cluster.cgroup.procs_files if cluster.cgroup else (),
            proc_files=tuple((inner(source), dest) for source, dest in cluster.proc_files + self.proc_files),
            init_source=cluster.lowers[self.role] / INIT_PATH.lstrip("/"),
            mount_ns=cluster.mounts.ns_path if cluster.mounts is not None else None,
        )

    def ensure_started(self) -> Shell:
        with self._lock:
            # close() marks the cluster before it stops each node under this lock: a request still in
            # flight (a background srun's task) must not start a shell or mount in a cluster torn down.
            if self.cluster.closed:
                raise ClusterClosedError(f"{self.name}: this cluster is closed")
            if not self._mounted:
                config = self.cluster.config
                for sub in ("upper", "work", "root", "run"):
                    (self.dir / sub).mkdir(parents=True, exist_ok=True)
                # The root of the merged tree takes its owner from the upper dir: root inside.
                os.chown(self.dir / "upper", self.cluster.uid_base, self.cluster.uid_base)
                lower = self.cluster.lowers[self.role]
                mode = config.overlay_mode
                self.cluster.mount(
                    partial(
                        overlay.mount_overlay, mode, lower, self.dir / "upper", self.dir / "work", self.root
                    )
                )
                self._mounted = True
                if config.overlay_mode.is_mount():
                    self.cluster.mount(self._mount_share_points)
                config.channel.bind(
                    self.control_dir / "control.sock",
                    self.name,
                    self.cluster.dispatch,
                    self.cluster.record_failure,
                )
            if self.shell is None or not self.shell.is_alive:
                if self.shell is not None:
                    self.shell.close()
                self.shell = self.cluster.config.spawner.submit(Shell(self.spec).start).result()
            return self.shell

    def set_proc_file(self, dest: str, data: bytes) -> bool:
        """Show `data` read-only at `dest` in the node's /proc, as LXCFS shows a container its own.

        The file lives in the episode's directory, outside the node's root. A file the node already
        shows is rewritten in place (the bind follows its inode); a new one is bound when the node's
        sandbox starts, so it must be set before then. Returns False where that moment has passed.
        """
        with self._lock:
            source = self.dir / "proc" / Path(dest).name
            if (source, dest) in self.proc_files:
                with open(source, "r+b") as file:
                    file.truncate(0)
                    file.write(data)
                return True
            if self.shell is not None:
                return False
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(data)
            self.proc_files += ((source, dest),)
            return True

    def is_mounted(self) -> bool:
        """True once the node's root exists (its overlay is up); before that it is its image's files."""
        return self._mounted

    # --- the shared dirs, as this node's NFS client sees them ---------------------------------------

    def share_source(self, name: str) -> Path:
        """The host path the sandbox binds at /NAME: this node's own mount point, where mounts are made."""
        if self.cluster.config.overlay_mode.is_mount():
            return self.dir / "mnt" / name
        return self.cluster.dir / "shared" / name / "root"

    def shared_view(self, name: str) -> Path:
        """The host dir whose tree this node sees at /NAME now (the share, a stale layer, or none)."""
        if self._mounted:
            return self.share_source(name)
        return self.cluster.dir / "shared" / name / "root"

    def _mount_share_points(self) -> None:
        # Each node binds its own mount point of each share, made shared before the sandbox starts:
        # bwrap makes its copy a slave, so a mount stacked here later (a stale handle, an unmount)
        # reaches the running shell, its ssh commands and its daemons at once, and only this node.
        uid_base = self.cluster.uid_base
        for name in SHARED_DIRS:
            point, local = self.dir / "mnt" / name, self.dir / "local" / name
            point.mkdir(parents=True, exist_ok=True)
            local.mkdir(parents=True, exist_ok=True)
            os.chown(local, uid_base, uid_base)
            overlay.bind_mount(self.cluster.dir / "shared" / name / "root", point)
            overlay.make_shared(point)

    def share_state(self, name: str) -> ShareState:
        if name in self._stale:
            return ShareState.STALE
        return ShareState.UNMOUNTED if name in self._unmounted else ShareState.MOUNTED

    def make_share_stale(self, name: str) -> None:
        """Stack an ESTALE filesystem over this node's share (the server re-exported it under us)."""
        with self._lock:
            self._check_share(name)
            if self.share_state(name) is not ShareState.MOUNTED:
                raise SandboxError(f"{self.name}:/{name} is {self.share_state(name)}, not mounted")
            source = f"{self.cluster.login_node}:{EXPORT_DIR}/{name}"
            binder = Path(require_tool("bwrap"))
            stale = StaleMount(
                self.share_source(name), source=source, binder=binder, in_namespace=self.cluster.mount
            )
            self._stale[name] = stale.mount()

    def unmount_share(self, name: str) -> None:
        """What `umount` does on the node: the mount goes, its empty local mount point shows."""
        with self._lock:
            self._check_share(name)
            stale = self._stale.pop(name, None)
            if stale is not None:
                stale.close()
            if name not in self._unmounted:
                self.cluster.mount(
                    partial(overlay.bind_mount, self.dir / "local" / name, self.share_source(name))
                )
                self._unmounted.add(name)

    def mount_share(self, name: str) -> None:
        """What `mount` does on the node: the live share shows again (a fresh handle)."""
        with self._lock:
            self._check_share(name)
            if name in self._unmounted:
                self.cluster.mount(partial(overlay.unmount, self.share_source(name)))
                self._unmounted.discard(name)

    def sees_share(self, name: str) -> bool:
        """Whether the node's running shell reaches the live share at /NAME (asked of the kernel)."""
        shell = self.shell
        if shell is None or not shell.is_alive:
            return False
        try:
            # The shell's root is the agent's (it may chroot into a tree of its own): look up the one
            # name inside it without following a symlink, which would resolve against the host's /.
            root_fd = os.open(f"/proc/{shell.shell_pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                seen = os.stat(name, dir_fd=root_fd, follow_symlinks=False)
            finally:
                os.close(root_fd)
            share = os.stat(self.cluster.dir / "shared" / name / "root")
        except OSError:
            return False
        return (seen.st_dev, seen.st_ino) == (share.st_dev, share.st_ino)

    def _check_share(self, name: str) -> None:
        if name not in SHARED_DIRS:
            raise SandboxError(f"/{name} is not a shared dir (those are {', '.join(SHARED_DIRS)})")
        if not self.cluster.config.overlay_mode.is_mount():
            raise SandboxError(
                "mount changes on a node need a mount overlay mode", hint="use kernel or fuse-overlayfs"
            )
        self.ensure_started()

    def release_shares(self) -> None:
        """End this node's stale layers and their threads (its mounts end with the cluster's namespace)."""
        stales, self._stale = list(self._stale.values()), {}
        for stale in stales:
            stale.close()
        self._unmounted.clear()

    @property
    def is_running(self) -> bool:
        return self.shell is not None and self.shell.is_alive

    def stop(self) -> None:
        with self._lock:
            if self.shell is not None:
                self.shell.close()
                self.shell = None


class Cluster(Closing):
    r"""A login node plus compute nodes, isolated from the host and from every other cluster.

    Example:
        >>> with runtime.new_cluster(compute_nodes=["compute-01"]) as cluster:
        ...     cluster.execute("ssh compute-01 hostname").output
        'compute-01\\n'
    """

    def __init__(
        self,
        config: ClusterConfig,
        episode_dir: Path,
        login_node: str = "login01",
        on_close: Callable[[Cluster], None] | None = None,
        ids: HostIdSlot | None = None,
    ) -> None:
        self.config = config
        # The host ids this cluster's nodes are: its own slot's range, or without one the image's.
        self.ids = ids
        self.uid_base = config.uid_base if ids is None else ids.uid_base
        # Each role's lower dir as this cluster sees it (an idmapped view owned by its own range).
        self.lowers: dict[str, Path] = dict(config.lowers)
        self._views: list[Path] = []
        self._on_close = on_close
        # Where the episode's tmpfs is mounted, and where the host reaches it: the same path in copy
        # mode; in a mount mode the tmpfs is in the cluster's own mount namespace (`mountns.py`).
        self.host_dir = episode_dir
        self.dir = episode_dir
        self.mounts: MountNamespace | None = None
        self.login_node = login_node
        self.handler: Handler = echo_handler
        self.nodes: dict[str, Node] = {login_node: Node(self, login_node, config.login_role)}
        self._stack: list[_Seat] = [_Seat(login_node)]
        self._pending_move: str | None = None
        self._failure: BaseException | None = None
        self._closed = False
        self.ended = False
        # Whether the warm pool has handed this cluster to an episode (it never does so twice).
        self.handed_out = False
        self.cgroup: EpisodeCgroup | None = None
        self.proc_files: tuple[tuple[Path, str], ...] = ()
        self._prepare()

    # --- set-up and tear-down -------------------------------------------------------------------

    def _prepare(self) -> None:
        config = self.config
        self.host_dir.mkdir(mode=0o755)
        try:
            if config.overlay_mode.is_mount():
                self.mounts = MountNamespace(config.spawner)
                self.mount(partial(overlay.mount_tmpfs, self.host_dir, config.limits.episode_tmpfs_bytes))
                self.dir = self.mounts.view(self.host_dir)
            (self.dir / "proc").mkdir()
            files = []
            for dest, data in sandbox.node_proc_files().items():
                source = self.dir / "proc" / Path(dest).name
                source.write_bytes(data)
                files.append((source, dest))
            self.proc_files = tuple(files)
            if config.cgroups is not None:
                limits = config.limits
                self.cgroup = config.cgroups.create(
                    self.dir.name, limits.episode_memory_bytes, limits.episode_max_processes
                )
            if self.ids is not None:
                self._mount_lower_views(self.ids)
            login_lower = self.lowers[config.login_role]
            for name in SHARED_DIRS:
                shared = self.dir / "shared" / name
                for sub in ("upper", "work", "root"):
                    (shared / sub).mkdir(parents=True)
                os.chown(shared / "upper", self.uid_base, self.uid_base)
                lower = login_lower / name
                if lower.is_dir() and not lower.is_symlink():
                    # One overlay per episode: every node's /home is this one tree.
                    mode = config.overlay_mode
                    self.mount(
                        partial(
                            overlay.mount_overlay,
                            mode,
                            lower,
                            shared / "upper",
                            shared / "work",
                            shared / "root",
                        )
                    )
                else:
                    os.chown(shared / "root", self.uid_base, self.uid_base)
            self.nodes[self.login_node].ensure_started()
        except BaseException:
            self.close()
            raise

    def _mount_lower_views(self, ids: HostIdSlot) -> None:
        for role in dict.fromkeys((self.config.login_role, self.config.compute_role)):
            view = self.dir / "lower" / role
            view.mkdir(parents=True)
            self.mount(partial(hostids.mount_idmapped, self.config.lowers[role], view, ids.idmap_fd()))
            self._views.append(view)
            self.lowers[role] = view

    def mount(self, action: Callable[[], T]) -> T:
        """Call `action`, a change to mounts, where this cluster's mounts live."""
        return action() if self.mounts is None else self.mounts.run(action)

    def inner(self, path: Path) -> Path:
        """`path` (a host path into this cluster's dir) as the cluster's mount namespace names it."""
        return path if self.mounts is None else self.mounts.inner(path)

    def configure(self, compute_nodes: list[str] | tuple[str, ...], handler: Handler | None) -> None:
        """Name the compute nodes and plug in the controller (done at hand-off, before any command)."""
        for name in compute_nodes:
            if name in self.nodes:
                raise SandboxError(f"node name {name!r} is used twice")
            self.nodes[name] = Node(self, name, self.config.compute_role)
        if handler is not None:
            self.handler = handler

    def close(self) -> None:
        """Stop every node and remove every mount, process, socket and file of this cluster."""
        if self._closed:
            return
        self._closed = True
        for seat in self._stack:
            if seat.shell is not None:
                seat.shell.close()
        for node in self.nodes.values():
            node.stop()
            try:
                node.release_shares()
            except SandboxError as e:  # the namespace's holder is gone: so are the mounts
                log.warning("%s: %s", node.name, e)
            if node._mounted:
                self.config.channel.unbind(node.control_dir / "control.sock")
        if self.mounts is not None:
            if self.config.overlay_mode is OverlayMode.FUSE:
                self._end_fuse_daemons()
            # Every mount of the cluster is in its namespace, which ends with its holder (the
            # nodes' processes are gone): one step frees the tmpfs, overlays, views and shares.
            self.mounts.close()
        else:
            for view in self._views:
                overlay.unmount(view)
        sweep.remove_tree(self.host_dir)
        if self.cgroup is not None:
            self.cgroup.remove()
        if self.ids is not None:
            self.ids.release()  # only now: every process of this range is gone
        if self._on_close is not None:
            self._on_close(self)

    def _end_fuse_daemons(self) -> None:
        # A fuse-overlayfs daemon lives in the namespace and keeps it alive until the last mount of
        # its tree goes: each node's share points (stacked once more where the share was unmounted),
        # the node roots, then the shared trees.
        points: list[Path] = []
        for node in self.nodes.values():
            if node._mounted:
                points += [node.share_source(name) for name in SHARED_DIRS] + [node.root]
        points += [self.dir / "shared" / name / "root" for name in SHARED_DIRS]
        for point in points:
            for _ in range(4):
                try:
                    if not self.mount(partial(overlay.unmount, point)):
                        break
                except SandboxError:
                    return

    # --- the agent's side -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """close() has begun: no node may start again."""
        return self._closed

    @property
    def current_node(self) -> str:
        """The node the agent's shell is on now."""
        return self._stack[-1].node

    @property
    def current_user(self) -> str:
        """Whose shell the agent types into now: root, or the user `su` made it."""
        return self._stack[-1].user

    def execute(self, command: str, timeout_s: float | None = None) -> CommandResult:
        """Type one command line into the agent's shell and return what it printed.

        Raises:
            ControllerError: the controller failed while serving this or an earlier command.
            SandboxError: the cluster is closed or has ended, or a sandbox broke.
        """
        if self._closed or self.ended:
            raise SandboxError("this cluster has ended", hint="start a new one with Runtime.new_cluster")
        self._raise_failure()
        self._raise_crash()
        timeout_s = self.config.default_timeout_s if timeout_s is None else timeout_s
        while (top := self._stack[-1]).shell is not None and not top.shell.is_alive:
            # A user's shell ended from outside (killed from root's shell below, say): gone.
            self._stack.pop()
        seat = self._stack[-1]
        node = self.nodes[seat.node]
        if seat.shell is None:
            exit_match = _EXIT.match(command)
            if exit_match and len(self._stack) > 1:
                # Leaving an ssh session; only the first login shell's `exit` ends the episode.
                return self._leave(node, int(exit_match.group(1) or 0), "logout\n")
            root_shell = runner = node.ensure_started()
        else:
            root_shell, runner = seat.shell.below, seat.shell
        switch = su.parse_switch_user(command)
        if (
            switch is not None
            and (opened := self._switch_user(seat, root_shell, switch, timeout_s)) is not None
        ):
            return opened
        result = runner.run(command, timeout_s, self.config.max_output_bytes)
        self._raise_failure()
        return self._after(seat, node, result)

    def _switch_user(
        self, seat: _Seat, shell: Shell, switch: su.SwitchUser, timeout_s: float
    ) -> CommandResult | None:
        """Open `switch`'s shell over root's on this node; None leaves the line to the node's su."""
        if seat.uid != 0 or len(self._stack) >= MAX_SEATS or shell.init is None:
            return None
        account = su.lookup_account(shell.init, switch.user)
        if account is None or not su.can_log_in(account):
            return None
        joined = JoinedShell(shell, account, switch.login, "/" if switch.login else self._cwd_of(shell))
        opened = joined.open(timeout_s)
        if not opened.exited:
            self._stack.append(_Seat(seat.node, joined))
        return CommandResult(
            opened.output, opened.exit_code, opened.wall_s, opened.timed_out, opened.truncated, seat.node
        )

    @staticmethod
    def _cwd_of(shell: Shell) -> str:
        # Where root's shell is, for a non-login su that stays there; the kernel's answer, as the
        # node sees it (the node's root is the reader's here, in no other namespace's view).
        try:
            path = os.readlink(f"/proc/{shell.shell_pid}/cwd")
        except OSError:
            return "/"
        return path if path.startswith("/") and "\0" not in path and not path.endswith(" (deleted)") else "/"

    def _raise_crash(self) -> None:
        # A node whose init died without its shell ending first was killed from outside (see
        # NodeCrashedError); one cheap waitpid per started node.
        for node in self.nodes.values():
            shell = node.shell
            if shell is not None and not shell.is_alive and (reason := shell.crash_reason()) is not None:
                raise NodeCrashedError(reason, hint="discard this episode")

    def _after(self, seat: _Seat, node: Node, result: ShellResult) -> CommandResult:
        output = result.output
        if seat.shell is not None and result.exited:
            # The user's shell ended (`exit`, or it would not come back): the shell below is next,
            # and its `$?` is what su returned.
            self._stack.pop()
            below = self._stack[-1].shell or self.nodes[self._stack[-1].node].shell
            if below is not None:
                below.next_status = result.exit_code
            if result.timed_out:
                output += "[the shell did not respond and was closed]\n"
            elif seat.via_ssh:
                output += f"Connection to {node.name} closed.\n"
            return CommandResult(
                output, result.exit_code, result.wall_s, result.timed_out, result.truncated, node.name
            )
        if result.exited and result.timed_out:
            # The shell would not come back from an interrupt and was replaced; the node lives on.
            node.ensure_started()
            output += "[the shell did not respond and was restarted]\n"
        elif result.exited:
            if len(self._stack) == 1:
                self.ended = True
                return CommandResult(
                    output, result.exit_code, result.wall_s, False, result.truncated, node.name, True
                )
            return self._leave(node, result.exit_code, output, result)
        if self._pending_move is not None:
            target, self._pending_move = self._pending_move, None
            output += self._move(seat, target)
        return CommandResult(
            output, result.exit_code, result.wall_s, result.timed_out, result.truncated, node.name
        )

    def _move(self, seat: _Seat, target: str) -> str:
        """Put the agent's shell on `target` after `ssh TARGET`, as the user it was; what it printed."""
        shell = self.nodes[target].ensure_started()
        if seat.shell is None:
            # A new ssh session starts in the home directory, whatever the node's shell did before.
            self._stack.append(_Seat(target, via_ssh=True))
            shell.run("cd ~", self.config.default_timeout_s)
            return ""
        joined = JoinedShell(shell, seat.shell.account, login=True)
        opened = joined.open(self.config.default_timeout_s)
        if not opened.exited:
            self._stack.append(_Seat(target, joined, via_ssh=True))
        return opened.output

    def _leave(
        self, node: Node, exit_code: int, output: str, result: ShellResult | None = None
    ) -> CommandResult:
        self._stack.pop()
        output += f"Connection to {node.name} closed.\n"
        wall_s = result.wall_s if result else 0.0
        return CommandResult(output, exit_code, wall_s, False, bool(result and result.truncated), node.name)

    # --- the stubs' side (runs on the channel's threads) ----------------------------------------

    def dispatch(self, request: Request) -> WireReply:
        if os.path.basename(request.argv[0]) == "ssh":
            return self._ssh(request)
        return self.handler(request.node, request.argv, request.cwd, request.stdin, self.caller_uid(request))

    def caller_uid(self, request: Request) -> int:
        """The uid in the node of the process that called: its host uid less this cluster's base.

        Every process of a node runs in the cluster's own uid range; a uid outside it (which no
        node process has) counts as nobody, never as root.
        """
        host_uid = request.peer_uid
        if host_uid is None or not 0 <= host_uid - self.uid_base < sandbox.ID_RANGE:
            return NOBODY_UID
        return host_uid - self.uid_base

    def record_failure(self, error: BaseException) -> None:
        self._failure = error

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise ControllerError(f"the controller failed: {self._failure!r}", hint="discard this episode")

    def _ssh(self, request: Request) -> WireReply:
        call = parse_ssh_args(request.argv[1:])
        if call.error is not None or call.host is None:
            return WireReply(stderr=call.error or "", exit_code=255)
        host = request.node if call.host in ("localhost", "127.0.0.1", "::1") else call.host.split(".")[0]
        if host not in self.nodes:
            return WireReply(stderr=unknown_host_message(call.host), exit_code=255)
        target = self.nodes[host]
        shell = target.ensure_started()
        if call.command is None:
            self._pending_move = host
            return WireReply()
        done = sandbox.exec_in_node(
            target.spec,
            shell.shell_pid,
            sandbox.limited_shell_cmd(call.command, self.config.limits),
            self.config.default_timeout_s,
            request.is_cancelled,
            stdin=request.stdin.encode() if request.stdin else None,
        )
        return WireReply(done.stdout, done.stderr, done.exit_code)
