"""API-key auth for the server: every route but `/health` needs the key, the WebSocket handshake too.

A pure ASGI middleware, so it sees WebSocket handshakes as well as HTTP requests. The key comes as
`Authorization: Bearer KEY` (what `EnvClient(headers=...)` and most HTTP tools send), `X-API-Key: KEY`,
or HTTP Basic with the key as the password (any user name): that is what a client that takes no
headers sends from a netrc file, e.g. `NETRC=FILE openenv validate --url URL` (requests reads it).
A refused HTTP request gets 401 with a JSON reason; a refused handshake gets the same 401 response
where the server supports it (uvicorn does), else a close with code 1008 (policy violation).

The key comes from `OPENENV_API_KEY`, or from the file `OPENENV_API_KEY_FILE` names (how a Slurm
fleet shares it): like munged with its key, that file is refused unless only its owner can read it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import stat
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from hpcgym.errors import HpcgymError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})


class ApiKeyError(HpcgymError):
    """The API key's file is missing, empty, or readable by others; the key is not used."""


def read_api_key_file(path: str | os.PathLike[str]) -> str:
    """Read an API key from `path`, refusing a file its group or others could read or write.

    Raises:
        ApiKeyError: the file is missing, not a regular file, owned by another user, accessible to
            its group or others, or empty.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ApiKeyError(
            f"the API key file {path} does not exist", hint="check OPENENV_API_KEY_FILE"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise ApiKeyError(f"the API key file {path} is not a regular file", hint="point it at a file")
    if info.st_uid not in (os.geteuid(), 0):
        raise ApiKeyError(
            f"the API key file {path} belongs to uid {info.st_uid}, not to this user ({os.geteuid()})",
            hint="write the key file as the user that runs the server and clients",
        )
    if info.st_mode & 0o077:
        raise ApiKeyError(
            f"the API key file {path} is accessible to its group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); a shared key must be private",
            hint=f"chmod 0600 {path}",
        )
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise ApiKeyError(f"the API key file {path} is empty", hint="write the key into it (one line)")
    return key


def api_key_from_environ(environ: Mapping[str, str] | None = None) -> str | None:
    """The API key the environment gives: `OPENENV_API_KEY_FILE`'s content, else `OPENENV_API_KEY`.

    Raises:
        ApiKeyError: the file cannot be used, or both are set to different keys.
    """
    env = os.environ if environ is None else environ
    direct = env.get("OPENENV_API_KEY") or None
    file = env.get("OPENENV_API_KEY_FILE", "").strip()
    if not file:
        return direct
    key = read_api_key_file(file)
    if direct is not None and direct != key:
        raise ApiKeyError(
            "OPENENV_API_KEY and OPENENV_API_KEY_FILE are both set, to different keys",
            hint="unset one of them",
        )
    return key


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The API key a request presents, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            if scheme.lower() == "basic" and token.strip():
                try:
                    pair = base64.b64decode(token.strip(), validate=True).decode()
                    _, colon, password = pair.partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    return None
                return password if colon and password else None
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
