"""The control channel: one unix socket per node, through which the stubs reach the controller.

Wire format (the same as the tool clients, `stubs/hpcgym-client.c` and `.py`), both ways: a
4-byte big-endian length, then that many bytes of UTF-8 JSON. Request
`{"v": 1, "argv": [...], "cwd": "..."}`, reply `{"stdout": "...", "stderr": "...", "exit_code": N}`.

Every node gets its own listening socket on the host, bind-mounted at `/run/hpcgym/control.sock`
inside the node; the node a request comes from is the socket it arrived on, so a sandbox cannot
claim to be another node. One selector thread accepts for every socket of a `Runtime`, and each
request is served on a worker thread, so a slow command (say `ssh NODE sleep 5`) delays no one else.

Everything a node sends is hostile, and what a node does must not cost the host more than a fixed
amount per node. So a node has at most `MAX_ACTIVE_PER_NODE` requests being read or worked on (one
thread and one descriptor each) and `MAX_WAITING_PER_NODE` accepted connections waiting for a turn
(a descriptor each, no thread). A connection that waits `WAIT_DEADLINE_S` is answered
`hpcgym: too many requests in flight` and closed; while both are full the node's socket is not
accepted from, and its further connections wait in the kernel's listen queue, or in the node's own
connect(), at no cost to the host or to other nodes. A request must arrive whole within
`READ_DEADLINE_S` and `MAX_REQUEST_BYTES`, however the node paces its bytes, and its reply must be
taken within `SEND_DEADLINE_S`. Malformed requests get an error reply and a closed connection, and
the host log gets a few of them per node and window, then a count. What a request means is the
controller's business (a later room); this module only moves bytes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import select
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hpcgym.errors import ClusterClosedError, ControllerError

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20
# The whole request, not each recv: a node sending a byte every few seconds is cut off here.
READ_DEADLINE_S = 5.0
# The whole reply: a node that never reads its answer gives its slot back after this.
SEND_DEADLINE_S = 10.0
MAX_ACTIVE_PER_NODE = 16
MAX_WAITING_PER_NODE = 32
WAIT_DEADLINE_S = 5.0
# accept() failing for want of descriptors or memory fails again at once while the socket stays
# readable; the socket rests this long instead of the loop spinning.
ACCEPT_BACKOFF_S = 0.5
ACCEPT_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Warnings about one node's requests: this many per window, then one line with the count.
LOG_BURST = 5
LOG_WINDOW_S = 60.0
PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class WireReply:
    """What a simulated tool prints and the code it exits with."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0

    def encode(self) -> bytes:
        body = json.dumps(
            {"stdout": self.stdout, "stderr": self.stderr, "exit_code": self.exit_code}
        ).encode()
        return struct.pack(">I", len(body)) + body


BUSY = WireReply(stderr="hpcgym: too many requests in flight\n", exit_code=1)

# struct ucred (pid, uid, gid), as SO_PEERCRED fills it.
_PEERCRED = struct.Struct("3i")


@dataclass(frozen=True)
class Request:
    """One tool invocation inside a node: which node, its argv (untouched) and its working dir."""

    node: str
    argv: list[str]
    cwd: str
    conn: socket.socket
    stdin: str | None = None

    @property
    def peer_uid(self) -> int | None:
        """The host uid of the process that connected, as the kernel recorded it (SO_PEERCRED)."""
        try:
            creds = self.conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        except OSError:
            return None
        return int(_PEERCRED.unpack(creds)[1])

    def is_cancelled(self) -> bool:
        """True once the tool has gone away (killed by a time limit, say); its answer is moot."""
        # poll, not select: descriptors past 1023 are ordinary in a busy runtime.
        try:
            poller = select.poll()
            poller.register(self.conn, select.POLLIN)
            if not poller.poll(0):
                return False
            return self.conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True


# The controller's entry point: (node, argv, cwd, stdin, uid) -> Reply; stdin is None unless the tool
# forwards what it read (sbatch, munge, unmunge); uid is the caller's in the node (root: 0).
Handler = Callable[[str, list[str], str, str | None, int], WireReply]
Dispatch = Callable[[Request], WireReply]


def echo_handler(node: str, argv: list[str], cwd: str, stdin: str | None = None, uid: int = 0) -> WireReply:
    """A stand-in controller that proves the path works: it says who asked, from where, and what."""
    return WireReply(stdout=f"{node} {cwd} {json.dumps(argv)}\n")


class MalformedRequest(ValueError):
    pass


def parse_request(body: bytes) -> tuple[list[str], str, str | None]:
    try:
        msg = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedRequest(f"not JSON: {e}") from None
    except RecursionError:
        # json's scanner recurses once per `[` or `{`; a megabyte of them is a request, not a crash.
        raise MalformedRequest("not JSON: nested too deeply") from None
    if not isinstance(msg, dict) or msg.get("v") != PROTOCOL_VERSION:
        raise MalformedRequest("expected an object with v=1")
    argv, cwd = msg.get("argv"), msg.get("cwd", "/")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise MalformedRequest("argv must be a non-empty list of strings")
    if not isinstance(cwd, str):
        raise MalformedRequest("cwd must be a string")
    stdin = msg.get("stdin")
    if stdin is not None and not isinstance(stdin, str):
        raise MalformedRequest("stdin must be a string")
    try:
        # JSON can carry lone surrogates ("\\ud800"), which no file name or pipe can hold.
        for text in (*argv, cwd, stdin or ""):
            text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedRequest("strings must be valid UTF-8") from None
    return argv, cwd, stdin


def _recv_exact(conn: socket.socket, n: int, deadline: float) -> bytes:
    chunks = []
    while n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MalformedRequest(f"not complete within {READ_DEADLINE_S:g} s")
        conn.settimeout(left)
        try:
            chunk = conn.recv(min(n, 1 << 16))
        except TimeoutError:
            raise MalformedRequest(f"not complete within {READ_DEADLINE_S:g} s") from None
        if not chunk:
            raise MalformedRequest("connection closed mid-message")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class _NodeLog:
    """Warnings about one node's requests: the first LOG_BURST of each window, then a count."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        self._logged = 0
        self._suppressed = 0

    def warn(self, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            summary = 0
            if now - self._window_start >= LOG_WINDOW_S:
                summary, self._suppressed = self._suppressed, 0
                self._window_start, self._logged = now, 0
            emit = self._logged < LOG_BURST
            if emit:
                self._logged += 1
            else:
                self._suppressed += 1
        self._summarise(summary)
        if emit:
            log.warning("control socket of %s: %s", self.node, message)

    def flush(self) -> None:
        with self._lock:
            summary, self._suppressed = self._suppressed, 0
        self._summarise(summary)

    def _summarise(self, count: int) -> None:
        if count:
            log.warning("control socket of %s: %d more warnings, not logged one by one", self.node, count)


@dataclass(eq=False)
class _Binding:
    node: str
    path: Path
    sock: socket.socket
    dispatch: Dispatch
    on_error: Callable[[BaseException], None]
    log: _NodeLog
    # Guarded by lock: the selector thread admits, the workers hand their slot on.
    lock: threading.Lock = field(default_factory=threading.Lock)
    active: int = 0
    waiting: deque[tuple[socket.socket, float]] = field(default_factory=deque)
    closed: bool = False
    listening: bool = False  # what the selector thread has registered, or is about to
    # Selector thread only.
    paused_until: float | None = None

    def is_full(self) -> bool:
        return self.active >= MAX_ACTIVE_PER_NODE and len(self.waiting) >= MAX_WAITING_PER_NODE


class ControlChannel:
    """Listens on every node's control socket and hands requests to their cluster."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._pending: list[_Binding | Path] = []
        self._bindings: dict[Path, _Binding] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._closed = False
        self.failure: BaseException | None = None  # what ended the selector thread, if it died
        self._thread = threading.Thread(target=self._run, name="hpcgym-channel", daemon=True)
        self._thread.start()

    def bind(
        self, path: Path, node: str, dispatch: Dispatch, on_error: Callable[[BaseException], None]
    ) -> None:
        """Create the socket of `node` at `path` (a host path bind-mounted into the node).

        Raises:
            ControllerError: the channel's thread has died; no node can reach the controller.
        """
        if self.failure is not None:
            raise ControllerError(
                f"the control channel is down: {self.failure!r}",
                hint="the runtime cannot serve new clusters; restart the process (see the log)",
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound through a descriptor of its directory: the kernel keeps the name as given, and a
        # node's getpeername() would otherwise read the host path (scratch dir, controller pid).
        path = Path(path)
        dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            sock.bind(f"/proc/self/fd/{dir_fd}/{path.name}")
        finally:
            os.close(dir_fd)
        # The node's processes run as unprivileged host uids; connecting needs write permission.
        os.chmod(path, 0o666)
        sock.listen(64)
        sock.setblocking(False)
        self._enqueue(_Binding(node, path, sock, dispatch, on_error, _NodeLog(node)))

    def unbind(self, path: Path) -> None:
        """Close and remove the socket at `path` (a path, not a binding, means: remove)."""
        self._enqueue(path)

    def _enqueue(self, change: _Binding | Path) -> None:
        with self._lock:
            self._pending.append(change)
        self._wake()

    def _wake(self) -> None:
        # A full pipe already holds a wake-up the loop has yet to read.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    # --- the selector thread ------------------------------------------------------------------

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for change in pending:
            if isinstance(change, _Binding):
                self._bindings[change.path] = change
                continue
            binding = self._bindings.pop(change, None)
            if binding is not None:
                self._drop(binding)
            with contextlib.suppress(FileNotFoundError):
                change.unlink()

    def _drop(self, binding: _Binding) -> None:
        with binding.lock:
            binding.closed = True
            waiting = [conn for conn, _ in binding.waiting]
            binding.waiting.clear()
        self._sync_listening(binding)
        binding.sock.close()
        for conn in waiting:
            conn.close()
        binding.log.flush()

    def _sync_listening(self, binding: _Binding) -> None:
        # A node with every slot and every waiting place taken is not accepted from: further
        # connections wait in the kernel's listen queue (or in the node's connect()), at no cost
        # to the host, until a worker or an expiry frees a place and wakes the loop.
        with binding.lock:
            want = not binding.closed and binding.paused_until is None and not binding.is_full()
            change, binding.listening = want != binding.listening, want
        if change and want:
            self._selector.register(binding.sock, selectors.EVENT_READ, binding)
        elif change:
            self._selector.unregister(binding.sock)

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:
            # Without this thread no node is accepted from, and every tool would wait in connect()
            # until the agent's command timed out: a fault charged to the agent. Instead every socket
            # is closed (a tool fails at once with "connection refused") and every cluster is told,
            # so its next command raises and the episode is discarded.
            log.exception("the control channel's thread died")
            self.failure = e
            with self._lock:
                pending, self._pending = self._pending, []
            bindings = [*self._bindings.values(), *(p for p in pending if isinstance(p, _Binding))]
            self._bindings.clear()
            for binding in bindings:
                with contextlib.suppress(Exception):
                    self._drop(binding)
                with contextlib.suppress(FileNotFoundError):
                    binding.path.unlink()
                binding.on_error(ControllerError(f"the control channel died: {e!r}"))

    def _loop(self) -> None:
        while not self._closed:
            for key, _ in self._selector.select(timeout=self._next_timeout_s()):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    self._apply_pending()
                    continue
                self._accept(key.data)
            self._expire()
            for binding in self._bindings.values():
                self._sync_listening(binding)

    def _next_timeout_s(self) -> float:
        now, soonest = time.monotonic(), 1.0
        for binding in self._bindings.values():
            if binding.paused_until is not None:
                soonest = min(soonest, binding.paused_until - now)
            with binding.lock:
                if binding.waiting:
                    soonest = min(soonest, binding.waiting[0][1] - now)
        return max(soonest, 0.0)

    def _accept(self, binding: _Binding) -> None:
        try:
            conn, _ = binding.sock.accept()
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno in ACCEPT_RESOURCE_ERRNOS:
                binding.paused_until = time.monotonic() + ACCEPT_BACKOFF_S
                self._sync_listening(binding)
                binding.log.warn(f"cannot accept ({e.strerror}); resting {ACCEPT_BACKOFF_S:g} s")
            return
        with binding.lock:
            admitted = binding.active < MAX_ACTIVE_PER_NODE
            if admitted:
                binding.active += 1
            else:  # not full, or the listener would not have been readable to us
                binding.waiting.append((conn, time.monotonic() + WAIT_DEADLINE_S))
        self._sync_listening(binding)
        if not admitted:
            return
        try:
            threading.Thread(
                target=self._work, args=(binding, conn), name=f"hpcgym-channel-{binding.node}", daemon=True
            ).start()
        except RuntimeError:  # the host is out of threads: this request is refused, not lost silently
            with binding.lock:
                binding.active -= 1
            self._refuse(binding, conn)

    def _expire(self) -> None:
        now = time.monotonic()
        for binding in list(self._bindings.values()):
            if binding.paused_until is not None and binding.paused_until <= now:
                binding.paused_until = None
            expired = []
            with binding.lock:
                while binding.waiting and binding.waiting[0][1] <= now:
                    expired.append(binding.waiting.popleft()[0])
            for conn in expired:
                self._refuse(binding, conn)

    @staticmethod
    def _refuse(binding: _Binding, conn: socket.socket) -> None:
        # A connection refused after waiting has long since sent its request; reading what is
        # there first lets the tool read this reply instead of a reset. Nothing here can block.
        with conn:
            conn.setblocking(False)
            with contextlib.suppress(OSError):
                for _ in range(4):
                    if not conn.recv(1 << 16):
                        break
            with contextlib.suppress(OSError):
                conn.send(BUSY.encode())
        binding.log.warn("too many requests in flight; refused one")

    # --- the workers --------------------------------------------------------------------------

    def _work(self, binding: _Binding, conn: socket.socket | None) -> None:
        # A worker keeps its slot while the node has connections waiting, so the number of
        # threads per node never exceeds MAX_ACTIVE_PER_NODE.
        try:
            while conn is not None:
                self._serve(conn, binding)
                conn = self._next_waiting(binding)
        except BaseException:
            with binding.lock:
                binding.active -= 1
            self._wake()
            raise

    def _next_waiting(self, binding: _Binding) -> socket.socket | None:
        now = time.monotonic()
        expired = []
        with binding.lock:
            conn = None
            while binding.waiting and not binding.closed:
                candidate, deadline = binding.waiting.popleft()
                if deadline > now:
                    conn = candidate
                    break
                expired.append(candidate)
            if conn is None:
                binding.active -= 1
            freed_a_full_node = not binding.listening and not binding.closed
        if freed_a_full_node:
            self._wake()
        for stale in expired:
            self._refuse(binding, stale)
        return conn

    def _serve(self, conn: socket.socket, binding: _Binding) -> None:
        with conn:
            deadline = time.monotonic() + READ_DEADLINE_S
            try:
                (length,) = struct.unpack(">I", _recv_exact(conn, 4, deadline))
                if length > MAX_REQUEST_BYTES:
                    raise MalformedRequest(f"request of {length} bytes is over the limit")
                argv, cwd, stdin = parse_request(_recv_exact(conn, length, deadline))
            except (MalformedRequest, OSError) as e:
                binding.log.warn(f"rejected a request: {e}")
                self._send(conn, WireReply(stderr=f"hpcgym: malformed request: {e}\n", exit_code=1))
                return
            conn.settimeout(None)
            try:
                reply = binding.dispatch(Request(binding.node, argv, cwd, conn, stdin))
            except ClusterClosedError as e:  # the episode ended under a request still in flight
                log.debug("request on %s ended with its cluster: %s", binding.node, e)
                said = f"{os.path.basename(argv[0])}: the cluster is shutting down\n"
                reply = WireReply(stderr=said, exit_code=1)
            except Exception as e:  # reported to the cluster, which discards the episode
                log.exception("controller failed on %s %.200r", binding.node, argv)
                binding.on_error(e)
                reply = WireReply(stderr=f"{os.path.basename(argv[0])}: internal error\n", exit_code=1)
            self._send(conn, reply)

    @staticmethod
    def _send(conn: socket.socket, reply: WireReply) -> None:
        # The tool may have been killed while we worked; then nobody is listening. sendall's
        # timeout bounds the whole reply (Python >= 3.5), not each chunk.
        with contextlib.suppress(OSError):
            conn.settimeout(SEND_DEADLINE_S)
            conn.sendall(reply.encode())

    def close(self) -> None:
        if self._closed:  # a runtime closed twice (once by a failure's cleanup) closes its channel once
            return
        self._closed = True
        self._wake()
        self._thread.join(timeout=5)
        for binding in list(self._bindings.values()):
            self._drop(binding)
        self._bindings.clear()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
