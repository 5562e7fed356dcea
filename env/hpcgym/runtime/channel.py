"""The control channel: one unix socket per node, through which the stubs reach the controller.

Wire format (the same as `stubs/hpcgym-client`), both ways: a 4-byte big-endian length, then that
many bytes of UTF-8 JSON. Request `{"v": 1, "argv": [...], "cwd": "..."}`, reply
`{"stdout": "...", "stderr": "...", "exit_code": N}`.

Every node gets its own listening socket on the host, bind-mounted at `/run/hpcgym/control.sock`
inside the node; the node a request comes from is the socket it arrived on, so a sandbox cannot
claim to be another node. One selector thread accepts for every socket of a `Runtime`, and each
connection is served on its own short-lived thread, so a slow command (say `ssh NODE sleep 5`)
delays no one else. Malformed requests get an error reply and a closed connection; the server lives
on. What a request means is the controller's business (a later room); this module only moves bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20
READ_TIMEOUT_S = 5.0
PROTOCOL_VERSION = 1


@dataclass(frozen=True)
class Reply:
    """What a simulated tool prints and the code it exits with."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0

    def encode(self) -> bytes:
        body = json.dumps(
            {"stdout": self.stdout, "stderr": self.stderr, "exit_code": self.exit_code}
        ).encode()
        return struct.pack(">I", len(body)) + body


@dataclass(frozen=True)
class Request:
    """One tool invocation inside a node: which node, its argv (untouched) and its working dir."""

    node: str
    argv: list[str]
    cwd: str
    conn: socket.socket
    stdin: str | None = None

    def is_cancelled(self) -> bool:
        """True once the tool has gone away (killed by a time limit, say); its answer is moot."""
        try:
            readable, _, _ = select.select([self.conn], [], [], 0)
            return bool(readable) and self.conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except OSError:
            return True


# The controller's entry point: (node, argv, cwd, stdin) -> Reply; stdin is None unless the tool
# forwards what it read (sbatch, munge, unmunge).
Handler = Callable[[str, list[str], str, str | None], Reply]
Dispatch = Callable[[Request], Reply]


def echo_handler(node: str, argv: list[str], cwd: str, stdin: str | None = None) -> Reply:
    """A stand-in controller that proves the path works: it says who asked, from where, and what."""
    return Reply(stdout=f"{node} {cwd} {json.dumps(argv)}\n")


class MalformedRequest(ValueError):
    pass


def parse_request(body: bytes) -> tuple[list[str], str, str | None]:
    try:
        msg = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise MalformedRequest(f"not JSON: {e}") from None
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
    return argv, cwd, stdin


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = conn.recv(min(n, 1 << 16))
        if not chunk:
            raise MalformedRequest("connection closed mid-message")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


@dataclass
class _Binding:
    node: str
    path: Path
    sock: socket.socket
    dispatch: Dispatch
    on_error: Callable[[BaseException], None]


class ControlChannel:
    """Listens on every node's control socket and hands requests to their cluster."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._pending: list[_Binding | Path] = []
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="hpcgym-channel", daemon=True)
        self._thread.start()

    def bind(
        self, path: Path, node: str, dispatch: Dispatch, on_error: Callable[[BaseException], None]
    ) -> None:
        """Create the socket of `node` at `path` (a host path bind-mounted into the node)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(os.fspath(path))
        # The node's processes run as unprivileged host uids; connecting needs write permission.
        os.chmod(path, 0o666)
        sock.listen(64)
        sock.setblocking(False)
        self._enqueue(_Binding(node, path, sock, dispatch, on_error))

    def unbind(self, path: Path) -> None:
        """Close and remove the socket at `path` (a path, not a binding, means: remove)."""
        self._enqueue(path)

    def _enqueue(self, change: _Binding | Path) -> None:
        with self._lock:
            self._pending.append(change)
        os.write(self._wake_w, b"x")

    def _apply_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for change in pending:
            if isinstance(change, _Binding):
                self._selector.register(change.sock, selectors.EVENT_READ, change)
                continue
            for key in list(self._selector.get_map().values()):
                if key.data is not None and key.data.path == change:
                    self._selector.unregister(key.fileobj)
                    key.data.sock.close()
            with contextlib.suppress(FileNotFoundError):
                change.unlink()

    def _loop(self) -> None:
        while not self._closed:
            for key, _ in self._selector.select(timeout=1.0):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    self._apply_pending()
                    continue
                binding: _Binding = key.data
                try:
                    conn, _ = binding.sock.accept()
                except (BlockingIOError, OSError):
                    continue
                threading.Thread(target=self._serve, args=(conn, binding), daemon=True).start()

    def _serve(self, conn: socket.socket, binding: _Binding) -> None:
        with conn:
            conn.setblocking(True)
            conn.settimeout(READ_TIMEOUT_S)
            try:
                (length,) = struct.unpack(">I", _recv_exact(conn, 4))
                if length > MAX_REQUEST_BYTES:
                    raise MalformedRequest(f"request of {length} bytes is over the limit")
                argv, cwd, stdin = parse_request(_recv_exact(conn, length))
            except (MalformedRequest, OSError, struct.error) as e:
                log.warning("control socket of %s: rejected a request: %s", binding.node, e)
                self._send(conn, Reply(stderr=f"hpcgym: malformed request: {e}\n", exit_code=1))
                return
            conn.settimeout(None)
            try:
                reply = binding.dispatch(Request(binding.node, argv, cwd, conn, stdin))
            except Exception as e:  # reported to the cluster, which discards the episode
                log.exception("controller failed on %s %s", binding.node, argv)
                binding.on_error(e)
                reply = Reply(stderr=f"{os.path.basename(argv[0])}: internal error\n", exit_code=1)
            self._send(conn, reply)

    @staticmethod
    def _send(conn: socket.socket, reply: Reply) -> None:
        # The tool may have been killed while we worked; then nobody is listening.
        with contextlib.suppress(OSError):
            conn.sendall(reply.encode())

    def close(self) -> None:
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for key in list(self._selector.get_map().values()):
            if key.data is not None:
                key.data.sock.close()
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
