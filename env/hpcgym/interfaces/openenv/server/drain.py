"""Graceful drain: what the server does between Slurm's SIGTERM and its SIGKILL.

Slurm sends SIGTERM at a job's time limit and SIGKILL `KillWait` (30 s by default) later. On SIGTERM
the server stops taking sessions and resets: a new WebSocket, or a reset on an open one, gets an error
frame with code `SERVER_DRAINING` (clients read it as "go to another server", never as a failed
episode) and HTTP `/reset` and `/step` get 503. Running episodes go on for `HPCGYM_DRAIN_S`; the ones
still open then get an error frame with code `EPISODE_LOST` and their socket is closed, and the server
exits 0.

`Drain` is the state, `DrainGuard` the ASGI middleware that applies it to each connection (it also
counts open sessions for `/capacity`), and `DrainingServer` the uvicorn server that turns SIGTERM
into a drain instead of an immediate shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from types import FrameType
from typing import Any

import uvicorn

from hpcgym.interfaces.openenv.server.auth import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

DRAINING_CODE = "SERVER_DRAINING"
LOST_CODE = "EPISODE_LOST"
# WebSocket close codes: 1013 "try again later" for a refused session, 1012 "service restart" for one
# the drain ended.
REFUSED_CLOSE = 1013
LOST_CLOSE = 1012
GUARDED_HTTP_PATHS = frozenset({"/reset", "/step"})
# After the grace period, how long the lost sessions get to close before the server stops anyway.
SETTLE_S = 3.0
POLL_S = 0.1

DRAINING_MESSAGE = "the server is draining (SIGTERM) and takes no new sessions or resets; use another server"
LOST_MESSAGE = "the episode was lost: the server drained (SIGTERM) before the episode finished"


def error_frame(message: str, code: str) -> Message:
    """An OpenEnv error frame, as the client parses it (`Server error: MESSAGE (code: CODE)`)."""
    return {
        "type": "websocket.send",
        "text": json.dumps({"type": "error", "data": {"message": message, "code": code}}),
    }


class _Session:
    """One open WebSocket; its sends are serialised so the drain's last frame never splits the app's."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = asyncio.Lock()
        self.ended = False

    async def send(self, message: Message) -> None:
        async with self._lock:
            # Once the drain has ended the session, what the app still says goes nowhere.
            if not self.ended:
                await self._send(message)

    async def end(self, message: str, code: str, close_code: int) -> None:
        async with self._lock:
            if self.ended:
                return
            self.ended = True
            # The client may already be gone; its socket is closed either way.
            with contextlib.suppress(OSError, RuntimeError):
                await self._send(error_frame(message, code))
                await self._send({"type": "websocket.close", "code": close_code})


class Drain:
    """The server's drain state, shared by `DrainGuard`, the `/capacity` route and `DrainingServer`.

    Args:
        grace_s: how long running episodes may go on after the drain starts.
    """

    def __init__(self, grace_s: float) -> None:
        if grace_s < 0:
            raise ValueError("HPCGYM_DRAIN_S must not be negative")
        self.grace_s = grace_s
        self.started_at: float | None = None
        self.lost = 0
        self._sessions: set[_Session] = set()

    @property
    def draining(self) -> bool:
        return self.started_at is not None

    @property
    def active_sessions(self) -> int:
        return len(self._sessions)

    def track(self, session: _Session) -> None:
        self._sessions.add(session)

    def untrack(self, session: _Session) -> None:
        self._sessions.discard(session)

    def start(self) -> bool:
        """Begin draining (safe in a signal handler: it only records the time); False if already begun."""
        if self.started_at is not None:
            return False
        self.started_at = time.monotonic()
        return True

    async def run(self) -> int:
        """Wait for the open sessions to end, at most the grace period; end the rest. Returns how many."""
        assert self.started_at is not None, "start() the drain first"
        log.warning(
            "draining: %d session(s) open, %.0f s to finish, no new sessions",
            len(self._sessions),
            self.grace_s,
        )
        deadline = self.started_at + self.grace_s
        while self._sessions and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        left = [session for session in self._sessions if not session.ended]
        for session in left:
            await session.end(LOST_MESSAGE, LOST_CODE, LOST_CLOSE)
        self.lost += len(left)
        if left:
            log.warning("drain: %d episode(s) lost (told so by an %s frame)", len(left), LOST_CODE)
        settle = time.monotonic() + SETTLE_S
        while self._sessions and time.monotonic() < settle:
            await asyncio.sleep(POLL_S)
        return len(left)


def _is_reset(message: Message) -> bool:
    text = message.get("text")
    if not text:
        return False
    try:
        return bool(json.loads(text).get("type") == "reset")
    except (ValueError, AttributeError):
        return False


class DrainGuard:
    """ASGI middleware: counts WebSocket sessions, and refuses new work once the drain has started.

    Args:
        app: the app to guard.
        drain: the server's drain state.
    """

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.drain.draining and scope.get("path") in GUARDED_HTTP_PATHS:
            body = json.dumps({"detail": DRAINING_MESSAGE, "code": DRAINING_CODE}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 503,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await self._refuse(receive, send)
            return
        session = _Session(send)
        self.drain.track(session)

        async def guarded_receive() -> Message:
            message = await receive()
            if session.ended:
                return {"type": "websocket.disconnect", "code": LOST_CLOSE}
            if self.drain.draining and message["type"] == "websocket.receive" and _is_reset(message):
                # The episode it had is over anyway; a new one must start on a server that stays.
                await session.end(DRAINING_MESSAGE, DRAINING_CODE, REFUSED_CLOSE)
                return {"type": "websocket.disconnect", "code": REFUSED_CLOSE}
            return message

        try:
            await self.app(scope, guarded_receive, session.send)
        finally:
            self.drain.untrack(session)

    async def _refuse(self, receive: Receive, send: Send) -> None:
        # Accept, say why, close: OpenEnv's client reads the frame (as it does CAPACITY_REACHED), where a
        # refused handshake would only show an HTTP status.
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        with contextlib.suppress(OSError, RuntimeError):
            await send({"type": "websocket.accept"})
            await send(error_frame(DRAINING_MESSAGE, DRAINING_CODE))
            await send({"type": "websocket.close", "code": REFUSED_CLOSE})


class DrainingServer(uvicorn.Server):
    """uvicorn's server, except that SIGTERM drains (then exits 0) instead of stopping at once.

    SIGINT keeps uvicorn's behaviour (a second one forces the exit).
    """

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM:
            # Never recorded as a captured signal: uvicorn would re-raise it after serving, and a drained
            # server must exit 0. A second SIGTERM changes nothing; the drain is bounded already.
            if not self.should_exit:
                self.drain.start()
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain.draining and self._drain_task is None:
            self._drain_task = asyncio.create_task(self._drain_then_exit())
        return await super().on_tick(counter)

    async def _drain_then_exit(self) -> None:
        await self.drain.run()
        self.should_exit = True


def draining_config(app: Any, **kwargs: Any) -> uvicorn.Config:
    """A uvicorn config whose shutdown after the drain is bounded (uvicorn waits forever by default)."""
    return uvicorn.Config(app, timeout_graceful_shutdown=int(SETTLE_S), **kwargs)
