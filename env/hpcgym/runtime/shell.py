"""A node's interactive bash, driven through a pty at a unique prompt sentinel.

One `Shell` per node. Its prompt carries a random token and `$?`, so one read of the prompt ends a
command and gives its exit code. Commands go in as `eval $'...' </dev/null`: one line whatever the
command holds (heredocs, newlines, unbalanced quotes become a syntax error instead of a PS2 hang),
and stdin is empty, so a bare `cat` ends at once. The pty is raw (no echo, no line editing, no CRLF),
and the terminal is dumb, so full-screen programs cannot draw; anything that still waits is stopped by
the per-command time limit: SIGINT to the shell and the command's processes, then SIGKILL, and the
shell keeps going. Output is capped (head and tail kept around a marker), stripped of ANSI escapes
and decoded with invalid UTF-8 replaced.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import select
import signal
import termios
import time
from dataclasses import dataclass

import pexpect
import ptyprocess

from hpcgym.errors import SandboxError
from hpcgym.run import require_tool
from hpcgym.runtime import sandbox
from hpcgym.runtime.sandbox import SandboxSpec
from hpcgym.runtime.seccomp import seccomp_fd

DEFAULT_MAX_OUTPUT_BYTES = 16 * 1024
STARTUP_TIMEOUT_S = 10.0
INTERRUPT_GRACE_S = 0.5
# The pty's canonical line limit is gone in raw mode, but keep one write per command reasonable.
MAX_COMMAND_BYTES = 256 * 1024
TERMINAL_ROWS = 1000
TERMINAL_COLUMNS = 200

_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


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
    return _CONTROL.sub("", text)


class _Capture:
    """Keeps the head and tail of a stream and finds the prompt in it."""

    def __init__(self, max_bytes: int, prompt: re.Pattern[bytes]) -> None:
        self.half = max(1, max_bytes // 2)
        self.max_bytes = max_bytes
        self.prompt = prompt
        self.buf = bytearray()
        self.head = b""
        self.dropped = 0
        self.exit_code: int | None = None

    def feed(self, data: bytes) -> bool:
        start = max(0, len(self.buf) - 64)
        self.buf += data
        match = self.prompt.search(self.buf, start)
        if match is not None:
            self.exit_code = int(match.group(1))
            del self.buf[match.start() :]
            return True
        if not self.head and len(self.buf) > 4 * self.max_bytes:
            self.head = bytes(self.buf[: self.half])
            del self.buf[: self.half]
        if self.head and len(self.buf) > 2 * self.max_bytes:
            cut = len(self.buf) - self.max_bytes
            self.dropped += cut
            del self.buf[:cut]
        return False

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
        self.token = secrets.token_hex(8)
        self.prompt = re.compile(rb"\x1e" + self.token.encode() + rb":(\d+)\x1f")
        self.child: pexpect.spawn | None = None
        self.pid1 = 0
        self.shell_pid = 0

    @property
    def is_alive(self) -> bool:
        return self.child is not None and self.child.isalive()

    def start(self) -> Shell:
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        ps1 = "\x1e" + self.token + ":${__hpcgym_rc:-0}\x1f"
        # The node's process limit is set by the shell itself, once, before its first prompt: we may
        # not prlimit a process of another uid without CAP_SYS_RESOURCE, and bwrap must keep a high
        # limit (see `drop_to_host_range`). A builtin run from PROMPT_COMMAND costs no process.
        first_prompt = (
            f"ulimit -u {self.spec.limits.max_processes}; __hpcgym_set() {{ return $1; }}; PROMPT_COMMAND="
        )
        env_spec = dataclasses.replace(
            self.spec,
            env={
                **self.spec.env,
                "PS1": ps1,
                "PS2": "",
                "PROMPT_COMMAND": first_prompt,
                "HISTFILE": "/dev/null",
            },
        )
        command = ["/bin/bash", "--noprofile", "--norc", "--noediting", "-i"]
        filter_fd = seccomp_fd()
        args_fd = sandbox.args_pipe(sandbox.node_options(env_spec, info_w, block_r, filter_fd))
        for fd in (info_w, block_r, args_fd, filter_fd):
            os.set_inheritable(fd, True)
        try:
            self.child = _PassFdsSpawn(
                require_tool("bwrap"),
                ["--args", str(args_fd), "--", *command],
                env={},
                echo=False,
                preexec_fn=sandbox.drop_to_host_range(
                    self.spec.uid_base, self.spec.limits, self.spec.cgroup_procs
                ),
                pass_fds=(info_w, block_r, args_fd, filter_fd),
                # A very tall terminal: pagers (less -F, more) print everything and quit at once.
                dimensions=(TERMINAL_ROWS, TERMINAL_COLUMNS),
            )
        finally:
            for fd in (info_w, block_r, args_fd, filter_fd):
                os.close(fd)
        # pexpect sleeps 0.1 s after close and after terminate by default; we kill and reap ourselves.
        self.child.delayafterclose = 0
        self.child.delayafterterminate = 0
        self.child.ptyproc.delayafterclose = 0
        self.child.ptyproc.delayafterterminate = 0
        try:
            try:
                self.pid1 = sandbox.finish_handshake(info_r, block_w, self.spec.uid_base)
            except SandboxError as e:
                raise SandboxError(f"{e.message}: {self._drain_error()}", hint=e.hint) from None
            self._make_raw()
            startup = _Capture(1 << 16, self.prompt)
            try:
                reached = self._read_until_prompt(STARTUP_TIMEOUT_S, startup) is not None
            except EOFError:
                reached = False
            if not reached:
                said = startup.result()[0].strip()[-2000:]
                raise SandboxError(f"the shell of {self.spec.hostname} did not reach its prompt: {said}")
            kids = sandbox.children_of(self.pid1)
            if not kids:
                raise SandboxError(f"the shell of {self.spec.hostname} has no process")
            self.shell_pid = kids[0]
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
        assert self.child is not None
        fd = self.child.child_fd
        attrs = termios.tcgetattr(fd)
        attrs[1] &= ~termios.OPOST  # no CRLF translation
        attrs[3] &= ~(termios.ECHO | termios.ICANON | termios.ISIG | termios.IEXTEN)
        termios.tcsetattr(fd, termios.TCSANOW, attrs)

    def _read_until_prompt(self, timeout_s: float, capture: _Capture) -> _Capture | None:
        assert self.child is not None
        fd = self.child.child_fd
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not select.select([fd], [], [], left)[0]:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if not data:
                raise EOFError
            if capture.feed(data):
                return capture

    def run(
        self, command: str, timeout_s: float, max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    ) -> ShellResult:
        """Run one command line and return what it printed, its exit code and how it ended.

        Agent mistakes (non-zero exits, time-outs, `exit`) are results; only a broken sandbox raises.
        """
        if self.child is None:
            raise SandboxError(f"the shell of {self.spec.hostname} is not running")
        # A syntax error inside eval aborts the rest of the line in an interactive shell and leaves
        # $? at the previous command's status; presetting the reported status to 2 (bash's code for
        # a syntax error) makes that case right, and __hpcgym_set hands the command the previous $?.
        line = (
            "__hpcgym_prev=$__hpcgym_rc; __hpcgym_rc=2; __hpcgym_set $__hpcgym_prev; "
            f"eval {quote_ansi_c(command)} </dev/null; __hpcgym_rc=$?\n"
        ).encode()
        if len(line) > MAX_COMMAND_BYTES:
            return ShellResult(f"bash: command too long ({len(line)} bytes)\n", 126, 0.0, False, False, False)
        capture = _Capture(max_output_bytes, self.prompt)
        before = set(sandbox.children_of(self.shell_pid))
        start = time.perf_counter()
        os.write(self.child.child_fd, line)
        timed_out = False
        try:
            done = self._read_until_prompt(timeout_s, capture)
            if done is None:
                timed_out = True
                done = self._interrupt(before, capture)
        except EOFError:
            output, truncated = capture.result()
            self.close()
            return ShellResult(
                output, capture.exit_code or 0, time.perf_counter() - start, False, truncated, True
            )
        wall_s = time.perf_counter() - start
        output, truncated = capture.result()
        if timed_out:
            output += f"\n[command timed out after {timeout_s:g} s and was stopped]\n"
        exit_code = 124 if timed_out else (capture.exit_code or 0)
        return ShellResult(output, exit_code, wall_s, timed_out, truncated, done is None)

    def _interrupt(self, before: set[int], capture: _Capture) -> _Capture | None:
        # Interactive bash aborts its current command on SIGINT (that covers loops run by bash itself);
        # the command's own processes get SIGINT, then SIGKILL, and background jobs started earlier live.
        started = [p for p in sandbox.children_of(self.shell_pid) if p not in before]
        victims = [q for p in started for q in (p, *sandbox.descendants_of(p))]
        sandbox.signal_pids([self.shell_pid, *victims], signal.SIGINT)
        try:
            if self._read_until_prompt(INTERRUPT_GRACE_S, capture):
                return capture
            started = [p for p in sandbox.children_of(self.shell_pid) if p not in before]
            sandbox.signal_pids([q for p in started for q in (p, *sandbox.descendants_of(p))], signal.SIGKILL)
            if self._read_until_prompt(INTERRUPT_GRACE_S, capture):
                return capture
        except EOFError:
            pass
        # The shell itself refuses to come back (say, it traps SIGINT); a fresh one replaces it.
        self.close()
        return None

    def close(self) -> None:
        if self.child is None:
            return
        child, self.child = self.child, None
        if self.pid1:
            sandbox.kill_tree(self.pid1)
        try:
            child.close(force=True)
        except pexpect.ExceptionPexpect:
            os.kill(child.pid, signal.SIGKILL)
