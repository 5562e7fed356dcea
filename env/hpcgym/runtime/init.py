"""The host's end of a node's init (`stubs/hpcgym-init.c`): start programs in the node, hear them exit.

Each node's PID 1 is hpcgym's init, run by bwrap `--as-pid-1` at systemd's path with systemd's argv.
It holds one end of a SOCK_SEQPACKET socket pair; this module holds the other. One request kind
(spawn: path, argv, env, cwd, uid/gid, how fds 0-2 are set up, descriptors to pass) gets one reply
(the pid in the node's namespace, or an errno), and init pushes each spawned child's raw wait(2)
status as it reaps it. So a daemon start costs a fork in the node instead of a new bwrap joining
its namespaces, and a daemon stopped with SIGTERM reads as SIGTERM.

Everything init says is hostile input: the agent is root in the node. Messages have one fixed size
(anything else is a protocol error), every wait has a deadline, at most `MAX_EXITS` statuses are kept,
and a status is only ever used for a pid the host itself no longer finds alive (`episode/nodes.py`).
"""

from __future__ import annotations

import array
import math
import os
import select
import socket
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hpcgym.errors import SandboxError

# Where the image keeps init (images/common/setup-node.sh), and what a Rocky 9 node's `ps` shows as
# PID 1: systemd after the initrd's switch-root.
INIT_PATH = "/usr/lib/systemd/systemd"
INIT_ARGV = (INIT_PATH, "--switched-root", "--system", "--deserialize", "31")
FD_ENV = "HPCGYM_INIT_FD"

MAGIC = 0x31494748
REQ_SPAWN, REP_SPAWNED, EV_EXITED = 1, 2, 3
FLAG_MAIN = 1
# How each of fds 0-2 is set up: /dev/null, init's own (the node's pty), the read end of a pipe
# whose write end the child holds at fd 3 (a stand-in daemon's `cat` then blocks forever), or the
# next descriptor passed with the request.
IO_NULL, IO_INHERIT, IO_PIPE, IO_PASSED = 0, 1, 2, 3
MAX_FDS = 8
MAX_ARGS = 512
MAX_REQUEST_BYTES = 65536
_REQUEST = struct.Struct(f"<8I4B{MAX_FDS}I")
_MESSAGE = struct.Struct("<3I2i")
MAX_EXITS = 4096
SPAWN_TIMEOUT_S = 5.0


class InitError(SandboxError):
    """A node's init is gone, silent past a deadline, or said something malformed (infrastructure)."""


class InitTimeout(InitError):
    """One request went unanswered in time: a starved host, not a broken init.

    Its late reply carries the request's id and is passed over, so the next request goes on.
    """


@dataclass(frozen=True)
class Stdio:
    """How init sets up a child's fds 0-2."""

    stdin: int = IO_NULL
    stdout: int = IO_NULL
    stderr: int = IO_NULL


class SpawnFailed(OSError):
    """init could not start the program (its errno: ENOENT, EACCES, ...): the node's doing."""


class NodeInit:
    """One node's init, seen from the host (thread-safe: one request at a time)."""

    def __init__(self, sock: socket.socket, node: str) -> None:
        self.sock = sock
        self.node = node
        self._lock = threading.Lock()
        self._next_id = 0
        self._exits: OrderedDict[int, int] = OrderedDict()
        # The pids this init started (its word is due for them alone), as bounded as its statuses.
        self._started: OrderedDict[int, None] = OrderedDict()
        self._broken: str | None = None
        sock.setblocking(False)
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)

    def close(self) -> None:
        self.sock.close()

    def spawn(
        self,
        path: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: str = "/",
        uid: int = 0,
        gid: int = 0,
        stdio: Stdio = Stdio(),
        fds: Sequence[int] = (),
        targets: Sequence[int] = (),
        main: bool = False,
        timeout_s: float = SPAWN_TIMEOUT_S,
    ) -> int:
        """Start `path` with `argv` (argv[0] as given) in the node; return its pid there.

        `fds` are host descriptors passed along: first one for each IO_PASSED stream, in order, then
        the rest at `targets` (fd numbers in the child, 4 and up). Raises SpawnFailed with init's
        errno, or InitError where init does not answer well within `timeout_s`.
        """
        passed_stdio = sum(mode == IO_PASSED for mode in (stdio.stdin, stdio.stdout, stdio.stderr))
        extra = list(targets)
        if len(fds) > MAX_FDS or len(fds) != passed_stdio + len(extra) or not 0 < len(argv) <= MAX_ARGS:
            raise ValueError("bad spawn request")
        strings = [path, cwd, *argv, *(f"{k}={v}" for k, v in env.items())]
        if len(env) > MAX_ARGS or any("\0" in s for s in strings):
            raise ValueError("bad spawn request")
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            header = _REQUEST.pack(
                MAGIC, REQ_SPAWN, request_id, FLAG_MAIN if main else 0, uid, gid, len(argv), len(env),
                stdio.stdin, stdio.stdout, stdio.stderr, len(fds),
                *([0] * passed_stdio), *extra, *([0] * (MAX_FDS - len(fds))),
            )  # fmt: skip
            body = header + b"".join(s.encode() + b"\0" for s in strings)
            if len(body) > MAX_REQUEST_BYTES:
                raise ValueError(f"spawn request of {len(body)} bytes is over {MAX_REQUEST_BYTES}")
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
            deadline = time.monotonic() + timeout_s
            self._check()
            try:
                self._send(body, ancillary, deadline)
                while True:
                    message = self._receive(deadline)
                    if message[1] == REP_SPAWNED and message[2] == request_id:
                        pid, err = message[3], message[4]
                        if pid > 0:
                            self._exits.pop(pid, None)  # a status heard of an earlier process of that pid
                            self._started[pid] = None
                            self._started.move_to_end(pid)
                            while len(self._started) > MAX_EXITS:
                                self._started.popitem(last=False)
                            return pid
                        raise SpawnFailed(err if err > 0 else 0, os.strerror(err) if err > 0 else "failed")
            except InitTimeout:
                raise
            except InitError as e:
                self._broken = e.message
                raise

    def exits(self) -> Mapping[int, int]:
        """Every status init has pushed so far (pid -> raw wait status), reading what is waiting."""
        with self._lock:
            if self._broken is None:
                try:
                    while self._poller.poll(0):
                        self._take(self._read())
                except BlockingIOError:
                    pass
                except InitError as e:
                    self._broken = e.message
            return dict(self._exits)

    def started(self, pid: int) -> bool:
        """Whether this init started `pid`: a node started again has a new init that never will."""
        with self._lock:
            return pid in self._started

    def exit_status(self, pid: int) -> int | None:
        """The raw wait status init reported for `pid`, or None (still running, or not heard)."""
        return self.exits().get(pid)

    # --- the socket ---------------------------------------------------------------------------

    def _check(self) -> None:
        if self._broken is not None:
            raise InitError(f"the init of {self.node} is unusable: {self._broken}")

    def _send(self, body: bytes, ancillary: list, deadline: float) -> None:
        while True:
            try:
                self.sock.sendmsg([body], ancillary, socket.MSG_NOSIGNAL)
                return
            except BlockingIOError:
                self._wait(select.POLLOUT, deadline)
            except OSError as e:
                raise InitError(f"the init of {self.node} is gone ({e.strerror})") from None

    def _wait(self, events: int, deadline: float) -> None:
        poller = select.poll()
        poller.register(self.sock.fileno(), events)
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(math.ceil(left * 1000)):
            raise InitTimeout(f"the init of {self.node} did not answer in time")

    def _receive(self, deadline: float) -> tuple[int, int, int, int, int]:
        while True:
            try:
                message = self._read()
            except BlockingIOError:
                self._wait(select.POLLIN, deadline)
                continue
            if message[1] != REP_SPAWNED:
                self._take(message)
                continue
            return message

    def _read(self) -> tuple[int, int, int, int, int]:
        try:
            data, _, flags, _ = self.sock.recvmsg(_MESSAGE.size + 1)
        except BlockingIOError:
            raise
        except OSError as e:
            raise InitError(f"the init of {self.node} is gone ({e.strerror})") from None
        if not data:
            raise InitError(f"the init of {self.node} has exited")
        if len(data) != _MESSAGE.size or flags & socket.MSG_TRUNC:
            raise InitError(f"the init of {self.node} sent a malformed message ({len(data)} bytes)")
        message = _MESSAGE.unpack(data)
        if message[0] != MAGIC or message[1] not in (REP_SPAWNED, EV_EXITED):
            raise InitError(f"the init of {self.node} sent a malformed message")
        return message  # type: ignore[return-value]

    def _take(self, message: tuple[int, int, int, int, int]) -> None:
        if message[1] != EV_EXITED or message[3] <= 0:
            return
        self._exits[message[3]] = message[4]
        self._exits.move_to_end(message[3])
        while len(self._exits) > MAX_EXITS:
            self._exits.popitem(last=False)
