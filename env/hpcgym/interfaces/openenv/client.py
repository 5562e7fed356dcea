"""The typed OpenEnv client for EnterpriseHPC: one WebSocket, one session, one isolated cluster.

It only converts between the wire and the models (`_step_payload`, `_parse_result`, `_parse_state`);
the connection, timeouts and the sync wrapper are OpenEnv's `EnvClient`.
"""

from __future__ import annotations

from typing import Any

from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient

from hpcgym.interfaces.openenv.models import HpcAction, HpcObservation, HpcState
from hpcgym.interfaces.openenv.server.auth import api_key_from_environ


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
        **kwargs: `EnvClient`'s own (timeouts, extra `headers`, ...).

    Raises:
        ApiKeyError: `$OPENENV_API_KEY_FILE` is missing, empty or readable by others.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, **kwargs: Any) -> None:
        api_key = api_key if api_key is not None else api_key_from_environ()
        headers = dict(kwargs.pop("headers", None) or {})
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        super().__init__(base_url=base_url, headers=headers or None, **kwargs)

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
