r"""A node's interactive bash, driven through a pty; the kernel, not the output, says when a command ends.

One `Shell` per node. Commands go in as `eval $'...' </dev/null`: one line whatever the command holds
(heredocs, newlines, unbalanced quotes become a syntax error instead of a PS2 hang), and stdin is
empty, so a bare `cat` ends at once. The pty is raw (no echo, no line editing, no CRLF, set again
before every command so that `stty` inside cannot change it), and the terminal is dumb, so
full-screen programs cannot draw; anything that still waits is stopped by the per-command time limit:
SIGINT to the shell and the command's processes, then SIGKILL, and the shell keeps going. Output is
capped (head and tail kept around a marker), stripped of ANSI escapes and of C0 and C1 controls but
tab and newline, and decoded with invalid UTF-8 replaced.

No byte the node prints ends a command. Root in the node is the shell's uid and may ptrace it, so
every byte on the pty and in the shell's memory, environment and variables is the agent's to read
and to write; a prompt token would be too. A command has ended when two things only the kernel
reports agree:

- A report from the shell process itself. PROMPT_COMMAND sends `$?` and a fresh random number as
  one datagram on a unix socket (fd `REPORT_FD` in bash, closed for every command). The host's end
  has SO_PASSCRED, so each datagram carries the pid of the process that sent it, and only the
  shell's pid counts: subshells, background jobs and programs are other pids, and claiming another
  pid needs CAP_SYS_ADMIN over the node's PID namespace, which no process in the node holds.
- The shell process blocked in the very read(2) of its prompt: /proc/PID/syscall shows the syscall,
  fd 0, the input buffer and its length recorded at the first prompt (before the agent ran
  anything), and fd 0 is still the pty. A builtin `read` or `mapfile`, or `wait`, blocks elsewhere.

The shell's builtins run in its pid and may send a report in mid-command, but the command has ended
only once the shell sits in its prompt read, and the report taken then is the last one, which
PROMPT_COMMAND sent after the command. Its random number names the prompt marker bash prints next
(`\x1e<number>\x1f`), so output is cut at the real prompt, never at a forged one: the number does not
exist while the command runs. That leaves an agent that rewrites its own shell (redefines
PROMPT_COMMAND or `eval`, execs its own program in the shell's place, or ptraces it): the shell then
reports what the agent makes it report about the agent's own command, as `cmd; true` would, and the
step still ends only when that process waits for its next line, or at the time limit, after which a
shell that does not come back is replaced.

Every wait has a deadline. Writing the command counts inside its time limit (the pty's input queue
fills when the shell stops reading), and `close()` from another thread wakes every wait at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import math
import os
import platform
import re
import secrets
import select
import signal
import socket
import struct
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pexpect
import ptyprocess

from hpcgym.errors import NodeCrashedError, SandboxError
from hpcgym.run import require_tool
from hpcgym.runtime import sandbox
from hpcgym.runtime.init import (
    INIT_ARGV,
    INIT_PATH,
    IO_INHERIT,
    IO_PASSED,
    InitError,
    NodeInit,
    SpawnFailed,
    Stdio,
)
from hpcgym.runtime.sandbox import Limits, SandboxSpec
from hpcgym.runtime.seccomp import seccomp_fd

DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024
STARTUP_TIMEOUT_S = 10.0
INTERRUPT_GRACE_S = 0.5
# The kernel hands pty output to the reader asynchronously, so the prompt marker may come out a
# little after the shell is seen at its prompt.
PROMPT_SETTLE_S = 0.2
# The shell reports just before it prints its prompt, so its prompt (or any output) is the cue to
# look at the report socket; without output it is looked at on a timer that backs off to the second
# figure. Once a report is in, whether the shell has reached its prompt read is looked at as often.
REPORT_POLL_S = (0.005, 0.1)
PROMPT_POLL_S = (0.001, 0.008)
PROMPT_SPIN_S = 0.0002
# The pty's canonical line limit is gone in raw mode, but keep one write per command reasonable.
MAX_COMMAND_BYTES = 256 * 1024
# How long a killed bwrap may take to be reaped (it waits for nothing once its init is gone).
REAP_TIMEOUT_S = 5.0
TERMINAL_ROWS = 1000
TERMINAL_COLUMNS = 200
# The shell's end of the report socket: clear of bash's saved redirections (10 up), its process
# substitutions (63 down) and its tty (255), and under any sane `ulimit -n`.
REPORT_FD = 99
# read(2), the syscall the shell's prompt blocks in (arch/x86/entry/syscalls/syscall_64.tbl,
# include/uapi/asm-generic/unistd.h).
READ_SYSCALL = {"x86_64": 0, "aarch64": 63}

_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
# After decoding: a C1 CSI sequence whole (U+009B, parameters, final byte), then any control left.
_C1_CSI = re.compile(r"\x9b[0-?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_REPORT = re.compile(rb"(\d{1,10}) (\d{1,3}) (\d{1,10})")
_UCRED = struct.Struct("3i")
_CREDS_SPACE = socket.CMSG_SPACE(_UCRED.size)


@dataclass(frozen=True)
class ShellResult:
    output: str
    exit_code: int
    wall_s: float
    timed_out: bool
    truncated: bool
    exited: bool


class _PassFdsSpawn(pexpect.spawn):
    """pexpect.spawn that lets chosen file descriptors through to the child (bwrap's handshake)."""

    def __init__(self, *args: object, pass_fds: tuple[int, ...] = (), **kwargs: object) -> None:
        self._pass_fds = pass_fds
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def _spawnpty(self, args: list[str], **kwargs: object) -> ptyprocess.PtyProcess:
        return ptyprocess.PtyProcess.spawn(args, pass_fds=self._pass_fds, **kwargs)  # type: ignore[arg-type]


def shell_status(status: int) -> int:
    """A raw wait status as a shell's `$?` gives it: the exit code, or 128 + the signal."""
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def close_child(child: pexpect.spawn) -> int | None:
    """Close bwrap's pty, kill it if it lives, and reap it; its exit code (128 + signal), if known.

    With pexpect's delays at zero its close gives up on a child that takes a moment to die, and a
    child nobody waits for stays a zombie of the server for good (2,000 of them after 4,000 soaked
    episodes); so the wait is ours, bounded.
    """
    with contextlib.suppress(pexpect.ExceptionPexpect, OSError):
        child.close(force=True)
    if child.exitstatus is not None or child.signalstatus is not None:
        return child.exitstatus if child.signalstatus is None else 128 + child.signalstatus
    with contextlib.suppress(ProcessLookupError):
        os.kill(child.pid, signal.SIGKILL)
    deadline = time.monotonic() + REAP_TIMEOUT_S
    while True:
        try:
            pid, status = os.waitpid(child.pid, os.WNOHANG)
        except ChildProcessError:
            return None  # reaped already
        if pid:
            return shell_status(status)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.002)


def quote_ansi_c(command: str) -> str:
    """Quote `command` as bash's `$'...'`, so any text fits on one line."""
    out = []
    for ch in command:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"


def clean_output(raw: bytes) -> str:
    text = _ANSI.sub(b"", raw).replace(b"\r\n", b"\n").decode("utf-8", errors="replace")
    return _CONTROL.sub("", _C1_CSI.sub("", text))


class _Capture:
    """Keeps the head and tail of a stream and cuts it at the prompt marker once that is known."""

    def __init__(self, max_bytes: int, carry: bytes = b"") -> None:
        self.half = max(1, max_bytes // 2)
        self.max_bytes = max_bytes
        self.buf = bytearray(carry)
        self.head = b""
        self.dropped = 0
        self.marker = b""
        # What came after the prompt (a background job's late output): the next command's.
        self.rest: bytes | None = None

    def feed(self, data: bytes) -> None:
        if self.rest is not None:
            self.rest = (self.rest + data)[-self.max_bytes :]
            return
        start = max(0, len(self.buf) - len(self.marker) + 1)
        self.buf += data
        if self.marker and self._cut(start):
            return
        if not self.head and len(self.buf) > 4 * self.max_bytes:
            self.head = bytes(self.buf[: self.half])
            del self.buf[: self.half]
        if self.head and len(self.buf) > 2 * self.max_bytes:
            cut = len(self.buf) - self.max_bytes
            self.dropped += cut
            del self.buf[:cut]

    def cut_at(self, marker: bytes) -> bool:
        self.marker = marker
        return self._cut(0)

    def _cut(self, start: int) -> bool:
        at = self.buf.find(self.marker, start)
        if at < 0:
            return False
        self.rest = bytes(self.buf[at + len(self.marker) :])[-self.max_bytes :]
        del self.buf[at:]
        return True

    def result(self) -> tuple[str, bool]:
        if not self.head and len(self.buf) <= self.max_bytes:
            return clean_output(bytes(self.buf)), False
        whole = self.head + bytes(self.buf)
        total = len(whole) + self.dropped
        kept_head, kept_tail = whole[: self.half], whole[-self.half :]
        marker = f"\n[... {total - len(kept_head) - len(kept_tail)} bytes truncated ...]\n"
        return clean_output(kept_head) + marker + clean_output(kept_tail), True


class Shell:
    r"""An interactive bash inside one node's sandbox.

    Example:
        >>> shell = Shell(spec).start()
        >>> shell.run("hostname", timeout_s=5).output
        'compute-01\\n'
    """

    def __init__(self, spec: SandboxSpec) -> None:
        self.spec = spec
        self.child: pexpect.spawn | None = None
        # The host's end of the shell's pty: the pexpect child's here, a pty of its own in JoinedShell.
        self._fd = -1
        self.pid1 = 0
        self.shell_pid = 0
        self._reports: socket.socket | None = None
        self.init: NodeInit | None = None
        self._shell_ns_pid = 0
        # The last report of the shell process: its exit code and the number of its prompt marker.
        self._report: tuple[int, bytes] | None = None
        # The number of the command line in flight: only reports that carry it count.
        self._step = b"0"
        self._wake_r = self._wake_w = -1
        self._proc_fd = self._syscall_fd = self._children_fd = -1
        self._poller = select.poll()
        self._report_poller = select.poll()
        self._prompt_read: list[bytes] | None = None
        self._tty: tuple[int, int] | None = None
        self._raw: list[Any] = []
        self._carry = b""
        # A step holds _io_lock throughout; close() takes it only after waking the step, and
        # _state_lock guards the closed flag and the wake pipe, so a wake never hits a reused fd.
        self._io_lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._closed = False
        # The `$?` the next command starts with, when a shell stacked on this one ended with it.
        self.next_status: int | None = None

    @property
    def is_alive(self) -> bool:
        child = self.child
        return child is not None and not self._closed and child.isalive()

    @staticmethod
    def first_prompt(limits: Limits, prelude: str = "") -> str:
        """The shell's first PROMPT_COMMAND: `prelude`, then the per-command report hook installed.

        The node's process limit is set by the shell itself, once, before its first prompt: we may
        not prlimit a process of another uid without CAP_SYS_RESOURCE, and bwrap must keep a high
        limit (see `drop_to_host_range`). Builtins and a function run from PROMPT_COMMAND cost no
        process. init hands the shell the report socket at REPORT_FD and nothing else of the host's.
        The hook draws the prompt marker's number after each command, so no command can know it,
        and sets PS1 itself, so a command that changes PS1 changes nothing. It forgets the line's
        number once it has reported, so a trap run at the prompt cannot report after it.
        """
        return (
            f"ulimit -u {limits.max_processes}; export -n PS1 PS2 PROMPT_COMMAND; {prelude}"
            "__hpcgym_set() { return $1; }; "
            "__hpcgym_step=0; __hpcgym_report() { __hpcgym_nonce=$SRANDOM; "
            "PS1=$'\\x1e'$__hpcgym_nonce$'\\x1f'; printf '%s %s %s' "
            f'"$__hpcgym_step" "${{__hpcgym_rc:-0}}" "$__hpcgym_nonce" >&{REPORT_FD}; __hpcgym_step=0; }}; '
            "PROMPT_COMMAND=__hpcgym_report; __hpcgym_report"
        )

    def start(self) -> Shell:
        init_source = self.spec.init_source
        if init_source is not None and not init_source.is_file():
            raise SandboxError(
                f"the image of {self.spec.hostname} has no init at {INIT_PATH}",
                hint="rebuild the images: invoke build-images",
            )
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        host_end, shell_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        host_end.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        host_end.setblocking(False)
        self._reports = host_end
        init_host, init_node = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.init = NodeInit(init_host, self.spec.hostname)
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        filter_fd = seccomp_fd()
        first_prompt = self.first_prompt(self.spec.limits)
        env_spec = dataclasses.replace(
            self.spec,
            env={
                **self.spec.env,
                "PS1": "",
                "PS2": "",
                "PROMPT_COMMAND": first_prompt,
                "HISTFILE": "/dev/null",
            },
        )
        command = ["/bin/bash", "--noprofile", "--norc", "--noediting", "-i"]
        init_fd = init_node.fileno()
        args_fd = sandbox.args_pipe(sandbox.node_options(env_spec, info_w, block_r, filter_fd, init_fd))
        passed = (info_w, block_r, args_fd, filter_fd, init_fd)
        for fd in passed:
            os.set_inheritable(fd, True)
        try:
            self.child = _PassFdsSpawn(
                require_tool("bwrap"),
                ["--args", str(args_fd), "--", *INIT_ARGV],
                env={},
                echo=False,
                preexec_fn=sandbox.drop_to_host_range(
                    self.spec.uid_base, self.spec.limits, self.spec.cgroup_procs, self.spec.mount_ns
                ),
                pass_fds=passed,
                # A very tall terminal: pagers (less -F, more) print everything and quit at once.
                dimensions=(TERMINAL_ROWS, TERMINAL_COLUMNS),
                # pexpect's own reads select() by default, which fails on descriptors past 1023.
                use_poll=True,
            )
        finally:
            for fd in (info_w, block_r, args_fd, filter_fd):
                os.close(fd)
            init_node.close()
        # pexpect sleeps 0.1 s after close and after terminate by default; we kill and reap ourselves.
        self.child.delayafterclose = 0
        self.child.delayafterterminate = 0
        self.child.ptyproc.delayafterclose = 0
        self.child.ptyproc.delayafterterminate = 0
        self._fd = self.child.child_fd
        try:
            try:
                self.pid1 = sandbox.finish_handshake(info_r, block_w, self.spec.uid_base)
            except SandboxError as e:
                raise SandboxError(f"{e.message}: {self._drain_error()}", hint=e.hint) from None
            self._make_raw()
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            try:
                # The shell is init's main child: the node ends when it does, as it did under bwrap.
                self._shell_ns_pid = self.init.spawn(
                    "/bin/bash",
                    command,
                    sandbox.finalize_env(env_spec),
                    cwd="/root",
                    stdio=Stdio(IO_INHERIT, IO_INHERIT, IO_INHERIT),
                    fds=[shell_end.fileno()],
                    targets=[REPORT_FD],
                    main=True,
                    timeout_s=STARTUP_TIMEOUT_S,
                )
            except SpawnFailed as e:
                name = self.spec.hostname
                raise SandboxError(f"the shell of {name} could not start: {e.strerror}") from None
            finally:
                shell_end.close()
            self._find_shell(deadline)
            startup = _Capture(1 << 16)
            try:
                reached = self._await_prompt(deadline, startup)
            except EOFError:
                reached = False
            if not reached:
                said = startup.result()[0].strip()[-2000:]
                raise SandboxError(f"the shell of {self.spec.hostname} did not reach its prompt: {said}")
            self._carry = startup.rest or b""
        except BaseException:
            self.close()
            raise
        return self

    def _drain_error(self) -> str:
        assert self.child is not None
        try:
            return clean_output(self.child.read_nonblocking(4096, timeout=1)).strip()
        except (pexpect.EOF, pexpect.TIMEOUT):
            return "(no message)"

    def _make_raw(self) -> None:
        fd = self._fd
        attrs = termios.tcgetattr(fd)
        attrs[1] &= ~termios.OPOST  # no CRLF translation
        attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._raw = attrs
        os.set_blocking(fd, False)
        self._poller.register(fd, select.POLLIN)
        assert self._reports is not None
        self._report_poller.register(self._reports.fileno(), select.POLLIN)
        self._poller.register(self._wake_r, select.POLLIN)

    def _find_shell(self, deadline: float) -> None:
        # init (pid 1) forks the shell when asked, right after the handshake. Its /proc entries are held open:
        # a pid that dies and comes back as another process can never pass for the shell.
        while not (kids := sandbox.children_of(self.pid1)):
            if time.monotonic() > deadline:
                raise SandboxError(f"the shell of {self.spec.hostname} has no process")
            time.sleep(0.001)
        self._hold(kids[0])

    def _hold(self, pid: int) -> None:
        self.shell_pid = pid
        try:
            self._proc_fd = os.open(f"/proc/{self.shell_pid}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            self._syscall_fd = os.open("syscall", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._proc_fd)
            children = f"task/{self.shell_pid}/children"
            self._children_fd = os.open(children, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._proc_fd)
        except OSError as e:
            raise SandboxError(f"the shell of {self.spec.hostname} is gone: {e}") from e

    # --- waiting for the shell ------------------------------------------------------------------

    def _is_at_prompt(self) -> bool:
        # The shell reports just before it prints its prompt and reads: give it a moment to get
        # there (it runs meanwhile, the kernel says so) before going back to waiting.
        until = time.monotonic() + PROMPT_SPIN_S
        while (state := self._prompt_state()) is None and time.monotonic() < until:
            os.sched_yield()
        return bool(state)

    def _prompt_state(self) -> bool | None:
        """Whether the shell is blocked in its prompt read; None while it runs."""
        try:
            fields = os.pread(self._syscall_fd, 256, 0).split()[:4]
            tty = os.stat("fd/0", dir_fd=self._proc_fd)
        except OSError:
            return False
        if fields[:1] == [b"running"]:
            return None
        if self._prompt_read is None:
            # The first prompt, before any command: learn what the prompt's read looks like.
            machine = platform.machine()
            if machine not in READ_SYSCALL:
                raise SandboxError(f"no read(2) number known for {machine}", hint="add it to READ_SYSCALL")
            if len(fields) < 4 or fields[:2] != [str(READ_SYSCALL[machine]).encode(), b"0x0"]:
                return False
            self._prompt_read, self._tty = fields, (tty.st_dev, tty.st_ino)
            return True
        return fields == self._prompt_read and (tty.st_dev, tty.st_ino) == self._tty

    def _shell_children(self) -> list[int]:
        # The shell has one thread (a process that adds threads is not bash any more).
        try:
            return [int(pid) for pid in os.pread(self._children_fd, 1 << 16, 0).split()]
        except OSError:
            return []

    def _drain_reports(self) -> bool:
        assert self._reports is not None
        got = False
        # Bounded: a shell that floods its own socket must not keep the host here.
        for _ in range(1024):
            if not self._report_poller.poll(0):
                break
            data, ancillary, flags, _ = self._reports.recvmsg(64, _CREDS_SPACE)
            sender = next(
                (
                    _UCRED.unpack(cdata[: _UCRED.size])[0]
                    for level, kind, cdata in ancillary
                    if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
                ),
                0,
            )
            match = _REPORT.fullmatch(data)
            if sender != self.shell_pid or match is None or flags & socket.MSG_TRUNC:
                continue
            if match.group(1) == self._step and int(match.group(2)) <= 255:
                self._report = (int(match.group(2)), match.group(3))
                got = True
        return got

    def _wait(self, timeout_s: float, capture: _Capture) -> bool:
        """Wait once for output or close(), and keep what the shell printed; return whether it did."""
        fd = self._fd
        events = self._poller.poll(max(0, math.ceil(timeout_s * 1000)))
        printed = False
        for ready, mask in events:
            if ready == self._wake_r:
                raise SandboxError(f"the shell of {self.spec.hostname} was closed while a command ran")
            if mask & (select.POLLIN | select.POLLHUP | select.POLLERR):
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    raise EOFError
                capture.feed(data)
                printed = True
        return printed

    def _write_line(self, line: bytes, deadline: float, capture: _Capture) -> bool:
        fd = self._fd
        view = memoryview(line)
        waiting = False
        try:
            while True:
                with contextlib.suppress(BlockingIOError):
                    view = view[os.write(fd, view) :]
                if not view:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                if not waiting:
                    # The input queue is full: the shell is not reading. Keep draining its output.
                    self._poller.modify(fd, select.POLLIN | select.POLLOUT)
                    waiting = True
                self._wait(left, capture)
        finally:
            if waiting:
                self._poller.modify(fd, select.POLLIN)

    def _await_prompt(self, deadline: float, capture: _Capture) -> bool:
        # Phase one: a report from the shell's pid, then the shell seen in its prompt read.
        armed = self._report is not None
        idle_s, poll_s = REPORT_POLL_S[0], PROMPT_POLL_S[0]
        while not (armed and self._is_at_prompt()):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            printed = self._wait(min(left, poll_s if armed else idle_s), capture)
            if self._drain_reports():
                armed, poll_s = True, PROMPT_POLL_S[0]
            elif armed:
                poll_s = min(2 * poll_s, PROMPT_POLL_S[1])
            if not printed:
                idle_s = min(2 * idle_s, REPORT_POLL_S[1])
        # Phase two: the report PROMPT_COMMAND sent is in the socket by now, and is the last one.
        self._drain_reports()
        assert self._report is not None
        if capture.cut_at(b"\x1e" + self._report[1] + b"\x1f"):
            return True
        settle = time.monotonic() + PROMPT_SETTLE_S
        while capture.rest is None and (left := settle - time.monotonic()) > 0:
            self._wait(left, capture)
        return True

    # --- commands -------------------------------------------------------------------------------

    def run(
        self, command: str, timeout_s: float, max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    ) -> ShellResult:
        """Run one command line and return what it printed, its exit code and how it ended.

        Agent mistakes (non-zero exits, time-outs, `exit`) are results; only a broken sandbox raises,
        and so does `close()` from another thread while the command runs.
        """
        # A syntax error inside eval aborts the rest of the line in an interactive shell and leaves
        # $? at the previous command's status; presetting the reported status to 2 (bash's code for
        # a syntax error) makes that case right, and __hpcgym_set hands the command the previous $?.
        # The quoted command words are never aliases. Each line has a fresh number, and only reports
        # that carry it count: a report sent before the shell read the line (from a trap run at the
        # prompt, say) cannot end a command that has not started.
        step = str(secrets.randbits(32))
        status, self.next_status = self.next_status, None
        carried = "" if status is None else f"__hpcgym_rc={status}; "
        line = (
            f"{carried}__hpcgym_step={step}; __hpcgym_prev=$__hpcgym_rc; __hpcgym_rc=2; "
            "\\__hpcgym_set $__hpcgym_prev; "
            f"\\eval {quote_ansi_c(command)} </dev/null {REPORT_FD}>&-; __hpcgym_rc=$?\n"
        ).encode()
        if len(line) > MAX_COMMAND_BYTES:
            return ShellResult(f"bash: command too long ({len(line)} bytes)\n", 126, 0.0, False, False, False)
        with self._io_lock:
            if self._fd < 0 or self._closed:
                raise SandboxError(f"the shell of {self.spec.hostname} is not running")
            return self._run_line(line, step.encode(), timeout_s, max_output_bytes)

    def _run_line(self, line: bytes, step: bytes, timeout_s: float, max_output_bytes: int) -> ShellResult:
        capture = _Capture(max_output_bytes, self._carry)
        self._carry = b""
        self._step, self._report = step, None
        termios.tcsetattr(self._fd, termios.TCSANOW, self._raw)
        before = set(self._shell_children())
        start = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        timed_out = exited = False
        try:
            if self._write_line(line, deadline, capture):
                if not self._await_prompt(deadline, capture):
                    timed_out = True
                    exited = not self._interrupt(before, capture)
            else:
                # The shell did not even take the command; a fresh one replaces it.
                timed_out = exited = True
                self.close()
        except EOFError:
            output, truncated = capture.result()
            crash = self.crash_reason()
            self.close()
            if crash is not None:
                raise NodeCrashedError(crash, hint="discard this episode") from None
            exit_code = self._exit_code_at_end()
            return ShellResult(output, exit_code, time.perf_counter() - start, False, truncated, True)
        wall_s = time.perf_counter() - start
        output, truncated = capture.result()
        self._carry = capture.rest or b""
        if timed_out:
            output += f"\n[command timed out after {timeout_s:g} s and was stopped]\n"
        exit_code = 124 if timed_out or self._report is None else self._report[0]
        return ShellResult(output, exit_code, wall_s, timed_out, truncated, exited)

    def _exit_code_at_end(self) -> int:
        # `exit N` of the node's shell: its last report (a login shell's exit ends the episode).
        return self._report[0] if self._report else 0

    def crash_reason(self) -> str | None:
        """Why the node is gone when its init did not see its shell end first; None if it did.

        init reports its main child's end before it exits with it; a node whose init died without
        that report was ended from outside (nothing inside can kill PID 1).
        """
        if self.init is None or not self._shell_ns_pid:
            return None
        if self.init.exit_status(self._shell_ns_pid) is not None:
            return None
        how = ""
        child = self.child
        if child is not None:
            code = close_child(child)
            if code is not None:
                how = f" (bwrap exit status {code})"
        return f"the init of {self.spec.hostname} died{how}: the node crashed"

    def _interrupt(self, before: set[int], capture: _Capture) -> bool:
        # Interactive bash aborts its current command on SIGINT (that covers loops run by bash itself);
        # the command's own processes get SIGINT, then SIGKILL, and background jobs started earlier live.
        started = [p for p in self._shell_children() if p not in before]
        victims = [q for p in started for q in (p, *sandbox.descendants_of(p))]
        sandbox.signal_pids([self.shell_pid, *victims], signal.SIGINT)
        try:
            if self._await_prompt(time.monotonic() + INTERRUPT_GRACE_S, capture):
                return True
            started = [p for p in self._shell_children() if p not in before]
            sandbox.signal_pids([q for p in started for q in (p, *sandbox.descendants_of(p))], signal.SIGKILL)
            if self._await_prompt(time.monotonic() + INTERRUPT_GRACE_S, capture):
                return True
        except EOFError:
            pass
        # The shell itself refuses to come back (say, it traps SIGINT); a fresh one replaces it.
        self.close()
        return False

    def close(self) -> None:
        """Kill the node's processes and free the shell; from any thread, a running step ends at once."""
        with self._state_lock:
            first, self._closed = not self._closed, True
            if first and self._wake_w >= 0:
                os.write(self._wake_w, b"\0")
        if first:
            self._kill()
        with self._io_lock:
            self._release()

    def _kill(self) -> None:
        if self.pid1:
            sandbox.kill_tree(self.pid1)

    def _release(self) -> None:
        self._fd = -1
        child, self.child = self.child, None
        if child is not None:
            close_child(child)
        if self._reports is not None:
            self._reports.close()
            self._reports = None
        if self.init is not None:
            self.init.close()
        for name in ("_syscall_fd", "_children_fd", "_proc_fd"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        with self._state_lock:
            for fd in (self._wake_r, self._wake_w):
                if fd >= 0:
                    os.close(fd)
            self._wake_r = self._wake_w = -1


# What bash -i says on a terminal that is not its controlling one (init starts every child in a
# session of its own); the node's first shell says it too, before anything is shown.
_NO_JOB_CONTROL = re.compile(
    r"bash: cannot set terminal process group \(-?\d+\): Inappropriate ioctl for device\n"
    r"|bash: no job control in this shell\n"
)
# su's PATH for the target (util-linux su reads login.defs' ENV_SUPATH and ENV_PATH; Rocky's values).
SU_PATH_ROOT = "/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin"
SU_PATH_USER = "/usr/local/bin:/usr/bin"
EXIT_STATUS_WAIT_S = 1.0


@dataclass(frozen=True)
class Account:
    """One passwd entry of a node, as the node's own `getent passwd` printed it."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


class JoinedShell(Shell):
    """A second interactive bash in a running node, as one of its users: the shell `su - alice` opens.

    It is the node's init's child like any daemon, so it lives in the node's namespaces, cgroup and
    seccomp filter and dies with the node, on a pty of its own that the host opens; the node's first
    shell waits untouched underneath and takes over again when this one ends. Its commands end the
    way the first shell's do (its own pid's report, its own prompt read). setpriv(1) in the node
    takes the user's ids and groups (initgroups), as su does. Whatever the node makes of its start
    (a profile that loops, exits or floods) is the agent's doing: `open` reports it as the step's
    result, never as a broken sandbox.
    """

    def __init__(self, below: Shell, account: Account, login: bool, cwd: str = "/") -> None:
        super().__init__(below.spec)
        self.below = below
        self.account = account
        self.login = login
        self._cwd = cwd
        self._ns_pid = 0
        self._pidfd = -1

    @property
    def is_alive(self) -> bool:
        init = self.below.init
        if self._closed or self._fd < 0 or init is None or not self.below.is_alive:
            return False
        return init.exit_status(self._ns_pid) is None

    def environment(self) -> dict[str, str]:
        """The environment su gives the target: reset for a login shell, the caller's otherwise."""
        a = self.account
        base = sandbox.finalize_env(self.spec)
        if self.login:
            kept: tuple[str, ...] = ("TERM", "LANG", "HOSTNAME", "PAGER", "LESS")
            keep = {k: base[k] for k in kept if k in base}
            env: dict[str, str] = {**keep, "PATH": SU_PATH_ROOT if a.uid == 0 else SU_PATH_USER}
            env["MAIL"] = f"/var/spool/mail/{a.name}"
        else:
            env = dict(base)
        env.update(HOME=a.home, SHELL=a.shell)
        if a.uid != 0 or self.login:
            env.update(USER=a.name, LOGNAME=a.name)
        prelude = ""
        if self.login:
            # A login shell starts in the user's home (as the user: a home they may not enter is
            # su's warning), then reads the profiles, all before the first prompt.
            prelude = (
                "\\cd ~ 2>/dev/null || { printf 'su: warning: cannot change directory to %s: "
                'No such file or directory\\n\' "$HOME" >&2; \\cd /; }; '
                "[ -r /etc/profile ] && . /etc/profile; "
                "if [ -r ~/.bash_profile ]; then . ~/.bash_profile; "
                "elif [ -r ~/.profile ]; then . ~/.profile; fi; "
            )
        env.update(
            PS1="", PS2="", HISTFILE="/dev/null", PROMPT_COMMAND=self.first_prompt(self.spec.limits, prelude)
        )
        return env

    def open(self, timeout_s: float) -> ShellResult:
        """Start the shell and wait for its first prompt; `exited` says it is not there to use.

        Raises:
            SandboxError: the node's init is gone or does not answer (infrastructure).
        """
        init = self.below.init
        if init is None or not self.below.is_alive:
            raise SandboxError(f"the shell of {self.spec.hostname} is not running")
        start = time.perf_counter()
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        host_end, shell_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        host_end.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        host_end.setblocking(False)
        self._reports = host_end
        master, slave = os.openpty()
        os.set_inheritable(master, False)
        self._fd = master
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", TERMINAL_ROWS, TERMINAL_COLUMNS, 0, 0))
        a = self.account
        argv = [
            "setpriv", f"--reuid={a.uid}", f"--regid={a.gid}", "--init-groups", "--",
            "/bin/bash", *(("--login",) if self.login else ()), "--noprofile", "--norc", "--noediting", "-i",
        ]  # fmt: skip
        try:
            try:
                self._ns_pid = init.spawn(
                    "/usr/bin/setpriv",
                    argv,
                    self.environment(),
                    cwd=self._cwd,
                    stdio=Stdio(IO_PASSED, IO_PASSED, IO_PASSED),
                    fds=[slave, slave, slave, shell_end.fileno()],
                    targets=[REPORT_FD],
                )
            finally:
                os.close(slave)
                shell_end.close()
        except SpawnFailed as e:
            self.close()
            return ShellResult(f"su: failed to execute /bin/bash: {e.strerror}\n", 1, 0.0, False, False, True)
        except (InitError, ValueError):
            self.close()
            raise
        deadline = time.monotonic() + timeout_s
        self._make_raw()
        capture = _Capture(DEFAULT_MAX_OUTPUT_BYTES)
        hung_up = False
        try:
            self._find_joined(deadline)
            reached = self._await_prompt(deadline, capture)
        except EOFError:
            reached, hung_up = False, True
        output, truncated = capture.result()
        output = _NO_JOB_CONTROL.sub("", output)
        wall_s = time.perf_counter() - start
        if not reached:
            ended = self._gone_after_hangup() if hung_up else not self.is_alive
            code = self._exit_code_at_end() if ended else 124
            self.close()
            if not ended:
                output += f"\n[command timed out after {timeout_s:g} s and was stopped]\n"
            return ShellResult(output, code, wall_s, not ended, truncated, True)
        self._carry = capture.rest or b""
        return ShellResult(output, 0, wall_s, False, truncated, False)

    def _find_joined(self, deadline: float) -> None:
        # The host pid of init's child whose innermost pid is the one init reported.
        while True:
            for pid in sandbox.children_of(self.below.pid1):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                line = next((x for x in status.splitlines() if x.startswith("NSpid:")), "")
                if line.split()[-1:] == [str(self._ns_pid)]:
                    with contextlib.suppress(OSError):
                        self._pidfd = os.pidfd_open(pid)
                    self._hold(pid)
                    return
            if time.monotonic() > deadline or self.below.init is None:
                raise EOFError
            if self.below.init.exit_status(self._ns_pid) is not None:
                raise EOFError
            time.sleep(0.001)

    def _awaited_exit_status(self) -> int | None:
        # init's report of this shell's end, waited for a bounded moment: the terminal closes as the
        # shell exits, a little before the report arrives, and a loaded host widens that gap.
        init = self.below.init
        until = time.monotonic() + EXIT_STATUS_WAIT_S
        while init is not None and self._ns_pid:
            status = init.exit_status(self._ns_pid)
            if status is not None or time.monotonic() > until or not self.below.is_alive:
                return status
            time.sleep(0.002)
        return None

    def _gone_after_hangup(self) -> bool:
        # Not a shell still running (a timeout) only because its end has not been reported yet.
        return self._awaited_exit_status() is not None or not self.is_alive

    def _exit_code_at_end(self) -> int:
        # su returns its shell's status: `exit 3` there is 3 for the root shell underneath.
        status = self._awaited_exit_status()
        if status is not None:
            return shell_status(status)
        return self._report[0] if self._report else 0

    def crash_reason(self) -> str | None:
        # This shell's end is the user's logout; the node's crash is its first shell's to report.
        return None

    def _kill(self) -> None:
        # This shell and what it started (a hangup, as a closed terminal gives), not the node.
        if self.shell_pid:
            victims = sandbox.descendants_of(self.shell_pid)
            if self._pidfd >= 0:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            sandbox.signal_pids(victims, signal.SIGKILL)

    def _release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        super()._release()
