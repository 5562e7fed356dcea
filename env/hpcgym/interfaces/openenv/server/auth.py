"""API-key auth for the server: every route but `/health` needs the key, the WebSocket handshake too.

A pure ASGI middleware, so it sees WebSocket handshakes as well as HTTP requests. The key comes as
`Authorization: Bearer KEY` (what `EnvClient(headers=...)` and most HTTP tools send) or `X-API-Key: KEY`.
A refused HTTP request gets 401 with a JSON reason; a refused handshake gets the same 401 response
where the server supports it (uvicorn does), else a close with code 1008 (policy violation).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The API key a request presents, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value:
            return value.decode("latin-1").strip()
    return None


class ApiKeyAuth:
    """Refuse requests that do not present `api_key` (compared in constant time).

    Args:
        app: the app to protect.
        api_key: the key clients must send.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        if not api_key:
            raise ValueError("an empty API key would let everybody in; leave auth off instead")
        self.app = app
        self._key = api_key.encode()

    def _refusal(self, scope: Scope) -> str | None:
        key = presented_key(scope.get("headers", []))
        if key is None:
            return "missing API key: send 'Authorization: Bearer <OPENENV_API_KEY>'"
        if not hmac.compare_digest(key.encode(), self._key):
            return "wrong API key"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        reason = self._refusal(scope)
        if reason is None:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": reason}).encode()
        headers = [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 401, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008, "reason": reason})
