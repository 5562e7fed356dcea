"""A node's sandbox: bubblewrap in fresh namespaces, with root inside an unprivileged uid outside.

bwrap runs as host uid `uid_base` (never as root) and creates a user namespace; hpcgym, still root,
writes the uid/gid maps `0..65535 -> uid_base..uid_base+65535` while bwrap waits on
`--userns-block-fd`. So root in a node is `uid_base` on the host: it owns nothing of the host's, has
capabilities only inside its own namespaces, and RLIMIT_NPROC (which the kernel never applies to host
root) bounds a fork bomb per node. A seccomp filter (`seccomp.py`) refuses new user namespaces, so a
process inside can never regain the dropped capabilities (no mounts, no module loading).

What runs inside is left to `shell.py`; `exec_in_node` starts one extra command in an existing node's
namespaces for `ssh NODE CMD`.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import re
import resource
import select
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpcgym.errors import SandboxError, SandboxForkError
from hpcgym.run import require_tool
from hpcgym.runtime import mountns
from hpcgym.runtime.cgroup import join_cgroup
from hpcgym.runtime.init import FD_ENV
from hpcgym.runtime.seccomp import seccomp_fd
from hpcgym.runtime.unpack import ID_RANGE

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWCGROUP = 0x02000000
# What `exec_in_node` joins by hand; bwrap itself joins the user and PID namespaces.
JOINED_NAMESPACES = (
    ("net", CLONE_NEWNET),
    ("uts", CLONE_NEWUTS),
    ("ipc", CLONE_NEWIPC),
    ("cgroup", CLONE_NEWCGROUP),
)

# Docker's default set plus NET_ADMIN (the node's own loopback-only network is the agent's to break).
# SYS_ADMIN, SYS_MODULE, SYS_PTRACE, SYS_TIME and friends stay dropped.
KEPT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_NET_ADMIN",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
)

SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HANDSHAKE_TIMEOUT_S = 10.0
# Where each node finds its control socket (and its shell's rc file); the stubs hard-code this.
CONTROL_DIR = "/run/hpcgym"


@dataclass(frozen=True)
class Limits:
    """Resource bounds for one node (rlimits) and one episode (its tmpfs)."""

    max_processes: int = 256
    max_open_files: int = 1024
    max_file_bytes: int = 512 << 20
    max_memory_bytes: int = 2 << 30
    episode_tmpfs_bytes: int = 1 << 30
    # /dev/shm in each node, Docker's default; the rest of /dev is read-only (see `bwrap_options`).
    dev_shm_bytes: int = 64 << 20
    # Per cluster, where the host lets us make cgroups (see cgroup.py); tmpfs pages count too.
    episode_memory_bytes: int = 4 << 30
    episode_max_processes: int = 1024


@dataclass(frozen=True)
class SandboxSpec:
    """Everything bwrap needs to know about one node."""

    hostname: str
    root: Path
    uid_base: int
    control_dir: Path
    binds: tuple[tuple[Path, str], ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = Limits()
    cgroup_procs: tuple[Path, ...] = ()
    # Host files shown read-only over the kernel's own in the node's /proc (`node_proc_files`).
    proc_files: tuple[tuple[Path, str], ...] = ()
    # The image's own init (its lower dir's copy), checked for before a node starts. The node runs
    # its own copy at that path: a bind of this one would show a host path in /proc/self/mountinfo.
    init_source: Path | None = None
    # The cluster's own mount namespace (`mountns.py`), where the paths above resolve; None: the host's.
    mount_ns: str | None = None


def node_proc_files() -> dict[str, bytes]:
    """What a node reads in /proc/cmdline and /proc/version instead of the host's.

    The host's boot line describes the machine we run on (its hypervisor, devices and ports), and
    its version line names whoever built the host's kernel; a Rocky node shows its own. The release
    stays the host's: `uname` asks the kernel, and the two must agree.
    """
    release, version = os.uname().release, os.uname().version
    cmdline = (
        f"BOOT_IMAGE=(hd0,gpt2)/vmlinuz-{release} root=/dev/mapper/rl-root ro "
        "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rl-swap "
        "rd.lvm.lv=rl/root rd.lvm.lv=rl/swap rhgb quiet\n"
    )
    banner = (
        f"Linux version {release} (mockbuild@iad1-prod-build001.bld.equ.rockylinux.org) "
        "(gcc (GCC) 11.5.0 20240719 (Red Hat 11.5.0-2), GNU ld version 2.35.2-54.el9) "
        f"{version}\n"
    )
    return {"/proc/cmdline": cmdline.encode(), "/proc/version": banner.encode()}


def finalize_env(spec: SandboxSpec) -> dict[str, str]:
    env = {
        "PATH": SANDBOX_PATH,
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "HOSTNAME": spec.hostname,
        "LANG": "C.UTF-8",
        "SHELL": "/bin/bash",
        # Full-screen programs cannot draw on a dumb terminal, and pagers must never wait for a key.
        "TERM": "dumb",
        "PAGER": "cat",
        "SYSTEMD_PAGER": "",
        "GIT_PAGER": "cat",
        "MANPAGER": "cat",
        "LESS": "-dFRX",  # -d: no "terminal is not fully functional, press RETURN" on a dumb terminal
    }
    env.update(spec.env)
    return env


def bwrap_options(spec: SandboxSpec, seccomp_fd: int, env: Mapping[str, str] | None = None) -> list[str]:
    """The mount, capability and seccomp options shared by a node's init and `exec_in_node`.

    `env` replaces the node's environment (`finalize_env`): init gets only its socket's number.
    """
    argv = ["--die-with-parent", "--new-session", "--seccomp", str(seccomp_fd), "--bind", str(spec.root), "/"]
    for source, dest in spec.binds:
        argv += ["--bind", str(source), dest]
    argv += ["--bind", str(spec.control_dir), CONTROL_DIR]
    # bwrap's --dev is a tmpfs without a size, outside the episode's tmpfs: where no cgroup applies, a
    # node could fill the host's memory there. So /dev turns read-only once bwrap has made its device
    # nodes and pts, and /dev/shm, the one place in it that programs write, gets a size of its own.
    argv += ["--dev", "/dev", "--perms", "1777", "--size", str(spec.limits.dev_shm_bytes)]
    argv += ["--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    argv += ["--proc", "/proc"]
    for source, dest in spec.proc_files:
        argv += ["--ro-bind", str(source), dest]
    argv += ["--chdir", "/root", "--clearenv"]
    for key, value in (finalize_env(spec) if env is None else env).items():
        argv += ["--setenv", key, value]
    argv += ["--cap-drop", "ALL"]
    for cap in KEPT_CAPS:
        argv += ["--cap-add", cap]
    return argv


def node_options(
    spec: SandboxSpec, info_fd: int, block_fd: int, seccomp_fd: int, init_fd: int | None = None
) -> list[str]:
    """The bwrap options of a node: with `init_fd`, hpcgym's init is its PID 1 (`runtime/init.py`)."""
    init: list[str] = []
    env = None
    if init_fd is not None:
        init = ["--as-pid-1"]
        env = {FD_ENV: str(init_fd)}
    return [
        "--unshare-user",
        "--userns-block-fd",
        str(block_fd),
        "--info-fd",
        str(info_fd),
        "--uid",
        "0",
        "--gid",
        "0",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-net",
        "--unshare-cgroup-try",
        "--hostname",
        spec.hostname,
        *bwrap_options(spec, seccomp_fd, env),
        *init,
    ]


def args_pipe(args: Sequence[str]) -> int:
    """Return the read end of a pipe holding bwrap's options (the command stays on argv).

    Passing them with `--args` keeps host paths out of the command line that `ps` shows inside.
    """
    data = b"".join(a.encode() + b"\0" for a in args)
    r, w = os.pipe()
    if len(data) > 60_000:
        os.close(r)
        os.close(w)
        raise SandboxError("bwrap arguments exceed one pipe buffer")
    os.write(w, data)
    os.close(w)
    return r


def drop_to_host_range(
    uid_base: int, limits: Limits, cgroup_procs: tuple[Path, ...] = (), mount_ns: str | None = None
) -> Callable[[], None]:
    """Return a preexec function: join the cluster's mount namespace and cgroup, set rlimits, drop ids."""

    def preexec() -> None:
        if mount_ns is not None:
            mountns.enter(mount_ns)
        join_cgroup(cgroup_procs)
        # Python ignores SIGPIPE and a pty spawn does not undo it; a node's programs must get the
        # default, or `yes | head` prints "Broken pipe" where a real shell prints nothing.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        # NPROC stays as high as allowed for bwrap itself: the user namespace it creates records the creator's
        # limit as the cap on *all* sandboxes together. Each node's shell gets its own limit later.
        _, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        resource.setrlimit(resource.RLIMIT_NPROC, (hard, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_AS, (limits.max_memory_bytes, limits.max_memory_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setgroups([])
        os.setgid(uid_base)
        os.setuid(uid_base)

    return preexec


def read_child_pid(info_fd: int) -> int:
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
    buf = b""
    # poll, not select: in a process holding many episodes this descriptor is often past 1023.
    poller = select.poll()
    poller.register(info_fd, select.POLLIN)
    while not buf.rstrip().endswith(b"}"):
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(math.ceil(left * 1000)):
            raise SandboxError(
                "bwrap did not report its child pid", hint="check that bwrap works: bwrap --version"
            )
        chunk = os.read(info_fd, 4096)
        if not chunk:
            raise SandboxError("bwrap exited before creating the sandbox", hint="run with log level DEBUG")
        buf += chunk
    match = re.search(rb'"child-pid":\s*(\d+)', buf)
    if match is None:
        raise SandboxError(f"unexpected bwrap info: {buf[:200]!r}")
    return int(match.group(1))


def write_id_maps(pid: int, uid_base: int) -> None:
    # Only a process with CAP_SETUID in the parent namespace (us, as root) may map a whole range.
    mapping = f"0 {uid_base} {ID_RANGE}\n"
    try:
        Path(f"/proc/{pid}/uid_map").write_text(mapping)
        Path(f"/proc/{pid}/gid_map").write_text(mapping)
    except OSError as e:
        raise SandboxError(
            f"cannot write the uid map of sandbox {pid}: {e}",
            hint="hpcgym must run as root (or with CAP_SETUID and CAP_SETGID) to map uids into a sandbox",
        ) from e


def finish_handshake(info_r: int, block_w: int, uid_base: int) -> int:
    """Map ids for the sandbox bwrap just created, let it go on, and return its pid 1 (host pid)."""
    try:
        pid1 = read_child_pid(info_r)
        write_id_maps(pid1, uid_base)
        os.write(block_w, b"1")
        return pid1
    finally:
        os.close(info_r)
        os.close(block_w)


def children_of(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return found


def descendants_of(pid: int) -> list[int]:
    out: list[int] = []
    stack = children_of(pid)
    while stack:
        child = stack.pop()
        out.append(child)
        stack += children_of(child)
    return out


def signal_pids(pids: Sequence[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def limited_shell_cmd(command: str, limits: Limits) -> list[str]:
    """Return argv that runs `command` with bash -c, as sshd would, under the node's process limit."""
    return ["/bin/bash", "-c", f"ulimit -u {limits.max_processes} 2>/dev/null; {command}"]


@dataclass
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool


def exec_in_node(
    spec: SandboxSpec,
    shell_pid: int,
    argv: Sequence[str],
    timeout_s: float,
    is_cancelled: Callable[[], bool] = lambda: False,
    stdin: bytes | None = None,
    keep_fds: tuple[int, ...] = (),
) -> ExecResult:
    """Run `argv` inside the running node whose shell is `shell_pid`, as `ssh NODE CMD` would.

    `stdin`, when given, is what the command reads on standard input (`munge -n | ssh NODE unmunge`).
    `keep_fds` are host descriptors it inherits.

    The command joins the node's user, PID, network, UTS and IPC namespaces, so it sees the node's
    processes, hostname and loopback; it gets a fresh mount namespace over the same overlay. Its
    process limit must be set inside (see `limited_shell_cmd`): out here, in the host's user
    namespace, RLIMIT_NPROC would count the processes of every sandbox together.
    """
    names = ("user", "pid", "net", "uts", "ipc", "cgroup")
    ns_fds = {name: os.open(f"/proc/{shell_pid}/ns/{name}", os.O_RDONLY) for name in names}
    filter_fd = seccomp_fd()
    # bwrap writes its child's pid here once the child exists; nothing here means bwrap itself
    # failed (could not fork or clone), whatever the command's own stderr says.
    info_r, info_w = os.pipe2(os.O_CLOEXEC)
    args = [
        "--info-fd",
        str(info_w),
        "--userns",
        str(ns_fds["user"]),
        "--pidns",
        str(ns_fds["pid"]),
        "--uid",
        "0",
        "--gid",
        "0",
        *bwrap_options(spec, filter_fd),
    ]
    args_fd = args_pipe(args)
    drop = drop_to_host_range(spec.uid_base, spec.limits, spec.cgroup_procs, spec.mount_ns)

    def preexec() -> None:
        # Join the namespaces bwrap has no option for while still root, then become the node's root.
        for name, flag in JOINED_NAMESPACES:
            if _libc.setns(ns_fds[name], flag) != 0:
                os._exit(126)
        drop()

    stdin_fd = _stdin_file(stdin)
    try:
        proc = subprocess.Popen(
            [require_tool("bwrap"), "--args", str(args_fd), "--", *argv],
            stdin=stdin_fd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(args_fd, filter_fd, ns_fds["user"], ns_fds["pid"], info_w, *keep_fds),
            preexec_fn=preexec,
            env={},
        )
    except BaseException:
        os.close(info_r)
        raise
    finally:
        if stdin_fd >= 0:
            os.close(stdin_fd)
        os.close(args_fd)
        os.close(filter_fd)
        os.close(info_w)
        for fd in ns_fds.values():
            os.close(fd)
    try:
        result = _collect(proc, timeout_s, is_cancelled)
        # bwrap has exited: whatever it wrote is in the pipe, and a node cannot write there.
        os.set_blocking(info_r, False)
        try:
            started = bool(os.read(info_r, 4096))
        except BlockingIOError:
            started = False
    finally:
        os.close(info_r)
    if not started and not result.timed_out and result.exit_code != 0:
        said = result.stderr.strip().splitlines()[-1:] or [f"exit {result.exit_code}"]
        raise SandboxForkError(
            f"bwrap could not start a process in {spec.hostname}: {said[0][:300]}",
            hint="the host is out of processes or memory for this episode: discard it",
        )
    return result


def _stdin_file(data: bytes | None) -> int:
    if not data:
        return subprocess.DEVNULL
    # A memfd rather than a pipe: the whole input is there at once and no writer can block.
    fd = os.memfd_create("hpcgym-stdin", os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# What one command in a node may hand back to the controller, per stream: its head and its tail
# (the agent's shell keeps far less), so `ssh NODE head -c 400M /dev/zero` costs the host nothing.
MAX_EXEC_OUTPUT_BYTES = 1 << 20


class _Bounded:
    def __init__(self, max_bytes: int) -> None:
        self.half = max_bytes // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> None:
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > self.half:
            cut = len(self.tail) - self.half
            self.dropped += cut
            del self.tail[:cut]

    def text(self) -> str:
        marker = f"\n[... {self.dropped} bytes truncated ...]\n".encode() if self.dropped else b""
        return bytes(self.head + marker + self.tail).decode(errors="replace")


def _collect(proc: subprocess.Popen[bytes], timeout_s: float, is_cancelled: Callable[[], bool]) -> ExecResult:
    assert proc.stdout is not None and proc.stderr is not None
    streams = {
        proc.stdout.fileno(): _Bounded(MAX_EXEC_OUTPUT_BYTES),
        proc.stderr.fileno(): _Bounded(MAX_EXEC_OUTPUT_BYTES),
    }
    # poll, not select: a busy runtime hands out descriptors above 1023.
    poller = select.poll()
    for fd in streams:
        poller.register(fd, select.POLLIN)
    open_fds = set(streams)
    deadline = time.monotonic() + timeout_s
    timed_out = False
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0 or is_cancelled():
            timed_out = True
            kill_tree(proc.pid)
            deadline = time.monotonic() + 5.0
        for fd, _ in poller.poll(int(max(0.0, min(left, 0.2)) * 1000)):
            data = os.read(fd, 65536)
            if data:
                streams[fd].feed(data)
            else:
                open_fds.discard(fd)
                poller.unregister(fd)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    out, err = (stream.text() for stream in streams.values())
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode
    return ExecResult(out, err, code, timed_out)


def kill_tree(pid: int) -> None:
    """SIGKILL a process and everything below it (the sandbox's own pid 1 takes the rest with it)."""
    victims = [pid, *descendants_of(pid)]
    signal_pids(victims, signal.SIGKILL)
