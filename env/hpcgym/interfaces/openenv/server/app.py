"""The EnterpriseHPC OpenEnv server: `build_app` makes the FastAPI app, `main` runs it on port 8000.

Sessions are WebSocket connections; each gets its own `HpcEnvironment` and so its own episode, up to
`HPCGYM_MAX_SESSIONS` at once (one more is refused with OpenEnv's CAPACITY_REACHED error). An idle
session is reaped after `HPCGYM_SESSION_TIMEOUT_S`, so a dropped socket frees its slot. With
`OPENENV_API_KEY` set, every route but `/health` needs the key (see `auth.py`).

Settings (environment variables):
    HPCGYM_IMAGES             built images (default build/images)
    HPCGYM_MAX_SESSIONS       concurrent sessions (default 64)
    HPCGYM_SESSION_TIMEOUT_S  idle seconds before a session is reaped (default 300)
    HPCGYM_POOL_SIZE          episodes kept ready (default 4)
    HPCGYM_STEP_TIMEOUT_S     wall-clock limit per command (default 20, below the client's 60 s)
    HPCGYM_MAX_STEPS          step budget (default: each scenario's own)
    HPCGYM_SCENARIOS          comma-separated scenario ids a reset draws from (default: all)
    OPENENV_API_KEY           the API key; unset or empty: no auth
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.types import ConcurrencyConfig

from hpcgym.episode.pool import EpisodeOptions, EpisodePool
from hpcgym.interfaces.openenv.models import ENV_NAME, HpcAction, HpcObservation, HpcState
from hpcgym.interfaces.openenv.server.auth import ApiKeyAuth
from hpcgym.interfaces.openenv.server.environment import Backend, HpcEnvironment
from hpcgym.interfaces.task import TaskRegistry, default_registry
from hpcgym.runtime import Runtime

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000
# OpenEnv's client gives up on a reply after 60 s; a step must come back well before.
CLIENT_MESSAGE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServerSettings:
    """How the server runs; `from_environ` reads them from the environment variables above."""

    images_dir: Path = Path("build/images")
    max_sessions: int = 64
    session_timeout_s: float = 300.0
    pool_size: int = 4
    step_timeout_s: float = 20.0
    max_steps: int | None = None
    scenarios: tuple[str, ...] | None = None
    api_key: str | None = None

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError("HPCGYM_MAX_SESSIONS must be at least 1")
        if self.session_timeout_s <= 0:
            raise ValueError("HPCGYM_SESSION_TIMEOUT_S must be positive")
        if not 0 < self.step_timeout_s < CLIENT_MESSAGE_TIMEOUT_S - 10:
            raise ValueError(
                f"HPCGYM_STEP_TIMEOUT_S must be positive and below {CLIENT_MESSAGE_TIMEOUT_S - 10:g} s, "
                "so that a step always answers before the client's message timeout"
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if environ is None else environ
        defaults = cls()
        scenarios = env.get("HPCGYM_SCENARIOS", "").strip()
        max_steps = env.get("HPCGYM_MAX_STEPS", "").strip()
        return cls(
            images_dir=Path(env.get("HPCGYM_IMAGES", str(defaults.images_dir))),
            max_sessions=int(env.get("HPCGYM_MAX_SESSIONS", defaults.max_sessions)),
            session_timeout_s=float(env.get("HPCGYM_SESSION_TIMEOUT_S", defaults.session_timeout_s)),
            pool_size=int(env.get("HPCGYM_POOL_SIZE", defaults.pool_size)),
            step_timeout_s=float(env.get("HPCGYM_STEP_TIMEOUT_S", defaults.step_timeout_s)),
            max_steps=int(max_steps) if max_steps else None,
            scenarios=tuple(s.strip() for s in scenarios.split(",") if s.strip()) or None,
            api_key=env.get("OPENENV_API_KEY") or None,
        )


def replace_health(app: FastAPI, pool: EpisodePool) -> None:
    """Make `/health` say unhealthy (503) once the episode pool has failed, not merely "the port is open".

    OpenEnv's own `/health` always answers healthy; a container whose sandboxes cannot start (missing
    privileges, a broken image) must not look ready to its orchestrator.
    """
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", None) != "/health"]

    @app.get("/health", tags=["Health"], summary="Health check")
    def health() -> JSONResponse:
        if pool.failure is not None:
            return JSONResponse({"status": "unhealthy", "detail": str(pool.failure)}, status_code=503)
        return JSONResponse({"status": "healthy", "episodes_ready": pool.ready})


def build_app(
    settings: ServerSettings | None = None,
    *,
    runtime: Runtime | None = None,
    registry: TaskRegistry | None = None,
) -> FastAPI:
    """Make the server's app: one runtime and episode pool shared by sessions of `HpcEnvironment`.

    Args:
        settings: default `ServerSettings.from_environ()`.
        runtime: a runtime to use (not closed at shutdown); default one made here over the images.
        registry: scenario id -> task factory; default `default_registry()`.

    Returns:
        The FastAPI app; its shutdown closes the pool (and the runtime it made).
    """
    settings = settings or ServerSettings.from_environ()
    owns_runtime = runtime is None
    runtime = runtime or Runtime(settings.images_dir)
    pool = EpisodePool(runtime, settings.pool_size, EpisodeOptions(timeout_s=settings.step_timeout_s))
    backend = Backend(
        pool=pool,
        registry=registry or default_registry(),
        scenarios=settings.scenarios,
        max_steps=settings.max_steps,
        max_chars=runtime.config.max_output_bytes + 256,
    )
    app = create_app(
        functools.partial(HpcEnvironment, backend),
        HpcAction,
        HpcObservation,
        env_name=ENV_NAME,
        concurrency_config=ConcurrencyConfig(
            max_concurrent_envs=settings.max_sessions, session_timeout=settings.session_timeout_s
        ),
        state_cls=HpcState,
    )

    replace_health(app, pool)

    def shut_down() -> None:
        pool.close()
        if owns_runtime:
            runtime.close()

    app.router.on_shutdown.append(shut_down)
    if settings.api_key:
        app.add_middleware(ApiKeyAuth, api_key=settings.api_key)
    else:
        log.warning("OPENENV_API_KEY is not set: the server accepts every client")
    app.state.hpcgym_settings = replace(settings, api_key=None)  # never echo the key
    return app


def main(argv: list[str] | None = None) -> None:
    """Run the server (`hpcgym-server`, `python -m hpcgym.interfaces.openenv.server.app`)."""
    import uvicorn

    parser = argparse.ArgumentParser(description="Serve EnterpriseHPC over OpenEnv (HTTP and WebSocket).")
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"), help="default %(default)s")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)), help="default %(default)s"
    )
    parser.add_argument("--images", type=Path, help="built images (default $HPCGYM_IMAGES or build/images)")
    parser.add_argument("--log-level", default="info", help="uvicorn's log level (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    settings = ServerSettings.from_environ()
    if args.images is not None:
        settings = replace(settings, images_dir=args.images)
    app = build_app(settings)
    # Many sessions step at once, each in its own thread; one worker process shares one runtime.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
