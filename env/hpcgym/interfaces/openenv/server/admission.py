"""Admission control: how many sessions a server holds, and how many resets build clusters at once.

A reset that finds no warm episode builds a cluster on the spot, which on a small host takes seconds
of CPU; 64 of them at once made every one slower than the client's 60 s message timeout. So resets
pass a FIFO gate: at most `max_resets` are inside the app at once, the rest wait in arrival order.
While one waits, the server sends its client a `queued` frame now and then (only to clients that ask
for them with the `X-Hpcgym-Queue-Notices: 1` header, as `HpcEnvClient` does: OpenEnv's own client
would read the frame as the reset's answer), so the client's message timeout never runs out in the
queue. A session over `max_sessions` is refused at once with OpenEnv's `CAPACITY_REACHED` error frame.

`AdmissionGuard` (ASGI middleware) also answers what OpenEnv's handler would turn into the end of the
session with a clear error frame and keeps the session: a binary frame, a text frame over
`MAX_MESSAGE_CHARS`, JSON that is not an object. `Admission` holds the counts `/capacity` and
`/health` show.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import re
from typing import Any

from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from hpcgym.interfaces.openenv.server.auth import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# 256 sessions fit one 2-core, 24 GiB host (each idle cluster is a few MiB of shells); resets, which
# cost CPU, are what the reset limit bounds.
DEFAULT_MAX_SESSIONS = 256
CAPACITY_CODE = "CAPACITY_REACHED"  # OpenEnv's own code for a session over the limit
INVALID_FRAME_CODE = "INVALID_FRAME"
INVALID_MESSAGE_CODE = "INVALID_MESSAGE"
IDLE_CODE = "SESSION_IDLE"
QUEUED_TYPE = "queued"
QUEUE_NOTICES_HEADER = b"x-hpcgym-queue-notices"
# WebSocket close code 1013: "try again later".
REFUSED_CLOSE = 1013
# WebSocket close code 1001: "going away", for a session closed as idle.
IDLE_CLOSE = 1001
# A command is at most 16 KiB of characters (HpcAction); JSON escaping can triple that. Anything
# longer is not a message of this protocol, and is answered without being parsed.
MAX_MESSAGE_CHARS = 64 * 1024
# How often a queued reset tells its client it is still queued (well inside the 60 s timeout).
QUEUE_NOTICE_S = 5.0


def default_max_resets() -> int:
    """Resets building clusters at once by default: one per core the process may use, at least 2."""
    return max(2, len(os.sched_getaffinity(0)))


def error_text(message: str, code: str, **extra: Any) -> str:
    """An OpenEnv error frame's text, as its client parses it (`Server error: MESSAGE (code: CODE)`)."""
    return json.dumps({"type": "error", "data": {"message": message, "code": code, **extra}})


class Admission:
    """The server's session and reset counts, and the FIFO queue of resets waiting for a slot.

    Args:
        max_sessions: sessions held at once; one more is refused.
        max_resets: resets inside the app at once; more wait in arrival order.
    """

    def __init__(self, max_sessions: int, max_resets: int) -> None:
        if max_sessions < 1 or max_resets < 1:
            raise ValueError("the session and reset limits must be at least 1")
        self.max_sessions = max_sessions
        self.max_resets = max_resets
        self.sessions = 0
        self.resets_in_flight = 0
        self.refused = 0
        self.resets_served = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def resets_queued(self) -> int:
        return sum(not waiter.done() for waiter in self._queue)

    def snapshot(self) -> dict[str, int]:
        """What `/capacity` and `/health` show."""
        return {
            "max_sessions": self.max_sessions,
            "active_sessions": self.sessions,
            "max_resets": self.max_resets,
            "resets_in_flight": self.resets_in_flight,
            "resets_queued": self.resets_queued,
            "sessions_refused": self.refused,
        }

    def admit(self) -> bool:
        """Count a new session, or return False (and count a refusal) at the limit."""
        if self.sessions >= self.max_sessions:
            self.refused += 1
            return False
        self.sessions += 1
        return True

    def leave(self) -> None:
        self.sessions -= 1

    def position(self, waiter: asyncio.Future[None]) -> int:
        """Where a queued reset stands: 1 for the next to get a slot."""
        ahead = 0
        for w in self._queue:
            if w is waiter:
                break
            ahead += not w.done()
        return ahead + 1

    def try_acquire(self) -> asyncio.Future[None] | None:
        """Take a reset slot now (None), or join the queue: await the future for the slot."""
        if self.resets_in_flight < self.max_resets and not self._queue:
            self.resets_in_flight += 1
            return None
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        return waiter

    def abandon(self, waiter: asyncio.Future[None]) -> None:
        """A queued reset's session ended: leave the queue, or hand on the slot it was just given."""
        with contextlib.suppress(ValueError):
            self._queue.remove(waiter)
        if waiter.done() and not waiter.cancelled():
            self.release()
        else:
            waiter.cancel()

    def release(self) -> None:
        """A reset is answered: its slot goes to the oldest waiter, in the order they came."""
        self.resets_served += 1
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; resets_in_flight is unchanged
                return
        self.resets_in_flight -= 1


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def has_lone_surrogate(data: Any) -> bool:
    """Whether a parsed JSON value holds a string (or key) with a lone surrogate; iterative, for depth."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any("\ud800" <= ch <= "\udfff" for ch in item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _frame(text: str) -> Message:
    return {"type": "websocket.send", "text": text}


def _check(message: Message) -> tuple[str | None, bool]:
    """The error frame to answer a client frame with instead of passing it on, and if it is a reset."""
    if message.get("text") is None:
        text = "binary WebSocket frames are not accepted: send each message as a JSON text frame"
        return error_text(text, INVALID_FRAME_CODE), False
    text = message["text"]
    if len(text) > MAX_MESSAGE_CHARS:
        error = f"a message of {len(text)} characters is over the limit of {MAX_MESSAGE_CHARS}"
        return error_text(error, INVALID_FRAME_CODE), False
    try:
        data = json.loads(text)
    except ValueError:
        return None, False  # OpenEnv answers INVALID_JSON and keeps the session
    except RecursionError:
        # OpenEnv's handler would meet the same, outside its JSON error handling, and end the session.
        return error_text("the message's JSON is nested too deeply", INVALID_MESSAGE_CODE), False
    if _SURROGATE_ESCAPE.search(text) and has_lone_surrogate(data):
        # OpenEnv echoes a refused value in its error frame, fails to encode it, and ends the session.
        error = "the message holds a lone surrogate (a \\uD800-\\uDFFF escape out of a pair): not text"
        return error_text(error, INVALID_MESSAGE_CODE), False
    if not isinstance(data, dict):
        kind = {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(data), "number")
        error = (
            f'a message must be a JSON object with a "type" (reset, step, state, close), not a JSON {kind}'
        )
        return error_text(error, INVALID_MESSAGE_CODE), False
    return None, data.get("type") == "reset"


class AdmissionGuard:
    """ASGI middleware: the session limit, the reset queue, and clear errors for frames OpenEnv drops.

    Args:
        app: the app to guard.
        admission: the server's counts and queue.
        idle_s: a session whose client sends nothing for this long (while nothing of it runs) is
            told so and closed, which frees its slot; None: never.
        notice_s: how often a queued reset is told it still waits.
    """

    def __init__(
        self,
        app: ASGIApp,
        admission: Admission,
        idle_s: float | None = None,
        notice_s: float = QUEUE_NOTICE_S,
    ) -> None:
        self.app = app
        self.admission = admission
        self.idle_s = idle_s
        self.notice_s = notice_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        if not self.admission.admit():
            await self._refuse(receive, send)
            return
        try:
            await _Connection(self, scope, receive, send).run()
        finally:
            self.admission.leave()

    async def _refuse(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        a = self.admission
        text = error_text(
            f"the server is at capacity: {a.sessions}/{a.max_sessions} sessions; "
            "close one or use another server",
            CAPACITY_CODE,
            active_sessions=a.sessions,
            max_sessions=a.max_sessions,
        )
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "websocket.accept"})
            await send(_frame(text))
            await send({"type": "websocket.close", "code": REFUSED_CLOSE})


class _Connection:
    """One admitted WebSocket between the client and OpenEnv's handler."""

    def __init__(self, guard: AdmissionGuard, scope: Scope, receive: Receive, send: Send) -> None:
        self.guard = guard
        self.scope = scope
        self.admission = guard.admission
        self._receive = receive
        self._send = send
        headers = dict(scope.get("headers") or ())
        self.notices = headers.get(QUEUE_NOTICES_HEADER, b"").strip() == b"1"
        self.holds_slot = False
        self._next: asyncio.Task[Message] | None = None  # a read begun while the reset queued

    async def run(self) -> None:
        try:
            await self.guard.app(self.scope, self.receive, self.send)
        except (WebSocketDisconnect, WebSocketDisconnected):
            # The client left before its answer (OpenEnv's handler then fails to send its error too);
            # the session was cleaned up on the way out, and there is nobody left to tell.
            log.debug("a client left before the server answered it")
        finally:
            if self.holds_slot:
                self.holds_slot = False
                self.admission.release()
            if self._next is not None:
                self._next.cancel()

    async def _read(self) -> Message:
        task, self._next = self._next, None
        if task is None:
            if self.guard.idle_s is None:
                return await self._receive()
            task = asyncio.ensure_future(self._receive())
        done, _ = await asyncio.wait({task}, timeout=self.guard.idle_s)
        if task in done:
            return task.result()
        # OpenEnv's own reaper would close the episode but leave the socket open and counted; closing
        # the socket frees the slot and tells the client why.
        task.cancel()
        text = error_text(
            f"the session was idle for {self.guard.idle_s:g} s and was closed; open a new one",
            IDLE_CODE,
        )
        with contextlib.suppress(OSError, RuntimeError):
            await self._send(_frame(text))
            await self._send({"type": "websocket.close", "code": IDLE_CLOSE})
        return {"type": "websocket.disconnect", "code": IDLE_CLOSE}

    async def receive(self) -> Message:
        while True:
            message = await self._read()
            if message["type"] != "websocket.receive":
                return message
            error, is_reset = _check(message)
            if error is not None:
                await self._send(_frame(error))
                continue
            if is_reset and not self.holds_slot:
                ended = await self._queue_for_slot()
                if ended is not None:
                    return ended
            return message

    async def _queue_for_slot(self) -> Message | None:
        """Wait for a reset slot in FIFO order; a disconnect while waiting is returned instead."""
        waiter = self.admission.try_acquire()
        if waiter is None:
            self.holds_slot = True
            return None
        # Reading on while queued is how a client that gave up is seen: its place goes to the next.
        reader = asyncio.ensure_future(self._receive())
        try:
            while not waiter.done():
                if self.notices:
                    await self._notice(waiter)
                watch: set[asyncio.Future[Any]] = {waiter} if reader.done() else {waiter, reader}
                await asyncio.wait(watch, timeout=self.guard.notice_s, return_when=asyncio.FIRST_COMPLETED)
                if waiter.done() or not reader.done() or reader.exception() is not None:
                    continue
                message = reader.result()
                if message["type"] == "websocket.disconnect":
                    self.admission.abandon(waiter)
                    return message
                # Anything else the client sent meanwhile is read after the reset's answer.
        except BaseException:
            self.admission.abandon(waiter)
            reader.cancel()
            raise
        self.holds_slot = True
        self._next = reader
        return None

    async def _notice(self, waiter: asyncio.Future[None]) -> None:
        a = self.admission
        data = {
            "position": a.position(waiter),
            "resets_in_flight": a.resets_in_flight,
            "max_resets": a.max_resets,
        }
        await self._send(_frame(json.dumps({"type": QUEUED_TYPE, "data": data})))

    async def send(self, message: Message) -> None:
        if self.holds_slot and message["type"] in ("websocket.send", "websocket.close"):
            # The handler answers one message at a time: this is the reset's answer.
            self.holds_slot = False
            self.admission.release()
        await self._send(message)
