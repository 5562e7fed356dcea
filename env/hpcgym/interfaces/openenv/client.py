"""The typed OpenEnv client for EnterpriseHPC: one WebSocket, one session, one isolated cluster.

It converts between the wire and the models (`_step_payload`, `_parse_result`, `_parse_state`); the
connection, timeouts and the sync wrapper are OpenEnv's `EnvClient`. Two things it adds: it asks the
server for `queued` frames while a reset waits in the server's queue, and skips them (each one
restarts the message timeout, so a long queue is never a timeout); and it notices a server that
went away within 3 s (TCP keepalive and user timeout: a dead host or network; FIN: a dead process)
and one that hangs within about 10 s (WebSocket ping), not after OpenEnv's 20 + 20 s and
websockets' 10 s close timeout.
"""

from __future__ import annotations

import socket
from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient

from hpcgym.interfaces.openenv.models import HpcAction, HpcObservation, HpcState
from hpcgym.interfaces.openenv.server.admission import QUEUE_NOTICES_HEADER, QUEUED_TYPE
from hpcgym.interfaces.openenv.server.auth import api_key_from_environ

# A server whose process died closes its sockets (the kernel sends FIN: noticed at once). A host that
# died or a network cut is noticed by the kernel within 3 s: keepalive probes after 1 s idle, and
# TCP_USER_TIMEOUT aborts a connection whose data or probes go unanswered for 1.5 s. Neither
# depends on either process getting CPU. A server process that hangs (stopped, deadlocked) still
# has its kernel ACK, so the WebSocket ping catches it, leniently: under a 256-reset burst on 2
# shared cores, a 1.5 s pong timeout dropped healthy sessions whose event loops were merely starved.
TCP_KEEPIDLE_S = 1
TCP_KEEPINTVL_S = 1
TCP_KEEPCNT = 2
TCP_USER_TIMEOUT_MS = 1500
PING_INTERVAL_S = 2.0
PING_TIMEOUT_S = 8.0
# websockets waits close_timeout (10 s by default) for a silent peer's close frame after a failure.
CLOSE_TIMEOUT_S = 0.5


def set_dead_peer_options(sock: socket.socket) -> None:
    """TCP keepalive and a user timeout on a client socket: a vanished server is seen within 3 s."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, TCP_KEEPIDLE_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, TCP_KEEPINTVL_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, TCP_KEEPCNT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)


class HpcEnvClient(EnvClient[HpcAction, HpcObservation, HpcState]):
    """A session on an EnterpriseHPC server.

    Example:
        >>> with HpcEnvClient("http://localhost:8000", api_key="...").sync() as env:  # doctest: +SKIP
        ...     result = env.reset(scenario="explore", seed=7)
        ...     result = env.step(HpcAction(command="sinfo"))
        ...     print(result.observation.output, result.reward, result.done)

    Args:
        base_url: the server (http:// or ws://).
        api_key: sent as `Authorization: Bearer KEY` (default: the key in `$OPENENV_API_KEY_FILE`,
            else `$OPENENV_API_KEY`, if either is set).
        **kwargs: `EnvClient`'s own (timeouts, extra `headers`, ...); the keepalive defaults to
            `PING_INTERVAL_S` and `PING_TIMEOUT_S`.

    Raises:
        ApiKeyError: `$OPENENV_API_KEY_FILE` is missing, empty or readable by others.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, **kwargs: Any) -> None:
        api_key = api_key if api_key is not None else api_key_from_environ()
        headers = dict(kwargs.pop("headers", None) or {})
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        headers[QUEUE_NOTICES_HEADER.decode()] = "1"
        kwargs.setdefault("websocket_ping_interval_s", PING_INTERVAL_S)
        kwargs.setdefault("websocket_ping_timeout_s", PING_TIMEOUT_S)
        super().__init__(base_url=base_url, headers=headers, **kwargs)
        self.queue_position: int | None = None  # where the last reset joined the server's queue

    async def _connect_async(self) -> HpcEnvClient:
        await super()._connect_async()
        if self._ws is not None:
            self._ws.close_timeout = CLOSE_TIMEOUT_S
            sock = self._ws.transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                set_dead_peer_options(sock)
        return self

    async def _reset_async(self, **kwargs: Any) -> StepResult[HpcObservation]:
        self.queue_position = None
        return await super()._reset_async(**kwargs)

    async def _receive(self) -> dict[str, Any]:
        while True:
            message = await super()._receive()
            if message.get("type") != QUEUED_TYPE:
                return message
            data = message.get("data")
            if self.queue_position is None and isinstance(data, dict):
                self.queue_position = data.get("position")

    def _step_payload(self, action: HpcAction) -> dict[str, Any]:
        return action.model_dump(exclude_defaults=True)

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[HpcObservation]:
        fields = {**payload.get("observation", {}), "done": payload.get("done", False)}
        observation = HpcObservation.model_validate({**fields, "reward": payload.get("reward")})
        return StepResult(
            observation=observation,
            reward=payload.get("reward"),
            done=payload.get("done", False),
            metadata=payload.get("metadata"),
        )

    def _parse_state(self, payload: dict[str, Any]) -> HpcState:
        return HpcState.model_validate(payload)
