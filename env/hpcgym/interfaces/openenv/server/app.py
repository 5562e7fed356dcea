"""The EnterpriseHPC OpenEnv server: `build_app` makes the FastAPI app, `main` runs it on port 8000.

Sessions are WebSocket connections; each gets its own `HpcEnvironment` and so its own episode, up to
`HPCGYM_MAX_SESSIONS` at once (one more is refused at once with OpenEnv's CAPACITY_REACHED error).
At most `HPCGYM_MAX_RESETS` resets build clusters at once; the rest wait in arrival order, told they
are queued (see `admission.py`). An idle
session is reaped after `HPCGYM_SESSION_TIMEOUT_S`, so a dropped socket frees its slot. With an API
key set, every route but `/health` needs it (see `auth.py`). `/capacity` and `/health` say how many
sessions are open of the limit, how many resets are building or queued, and whether the server is
draining; SIGTERM drains it (see `drain.py`). HTTP `/reset`, `/step`
and `/state` answer 409 naming `/ws` (see `refuse_stateless_http`).

Settings (environment variables):
    HPCGYM_IMAGES             built images (default the checkout's build/images)
    HPCGYM_MAX_SESSIONS       concurrent sessions (default 256)
    HPCGYM_MAX_RESETS         resets building clusters at once, the rest queued (default: the cores, >= 2)
    HPCGYM_SESSION_TIMEOUT_S  idle seconds before a session is reaped (default 300)
    HPCGYM_POOL_SIZE          episodes kept ready (default 4)
    HPCGYM_STEP_TIMEOUT_S     wall-clock limit per command (default 20, below the client's 60 s)
    HPCGYM_MAX_STEPS          step budget (default: each scenario's own)
    HPCGYM_SCENARIOS          comma-separated scenario ids a reset draws from (default: all)
    HPCGYM_DRAIN_S            after SIGTERM, how long running episodes may go on (default 20, so the
                              rest of the shutdown fits in Slurm's default KillWait of 30 s)
    OPENENV_API_KEY           the API key; unset or empty: no auth
    OPENENV_API_KEY_FILE      a file holding the API key, mode 0600 (refused otherwise)
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from openenv.core.env_server.http_server import create_app
from openenv.core.env_server.types import ConcurrencyConfig

from hpcgym.episode.pool import EpisodeOptions, EpisodePool
from hpcgym.errors import ConfigError, HpcgymError
from hpcgym.interfaces import default_images_dir
from hpcgym.interfaces.openenv.models import ENV_NAME, HpcAction, HpcObservation, HpcState
from hpcgym.interfaces.openenv.server.admission import (
    DEFAULT_MAX_SESSIONS,
    QUEUE_NOTICE_S,
    Admission,
    AdmissionGuard,
    default_max_resets,
)
from hpcgym.interfaces.openenv.server.auth import ApiKeyAuth, ApiKeyError, api_key_from_environ
from hpcgym.interfaces.openenv.server.drain import Drain, DrainGuard, DrainingServer, draining_config
from hpcgym.interfaces.openenv.server.environment import HpcEnvironment, ServerBackend
from hpcgym.interfaces.task import TaskRegistry, default_registry
from hpcgym.runtime import Runtime

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000
# OpenEnv's client gives up on a reply after 60 s; a step must come back well before.
CLIENT_MESSAGE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ServerSettings:
    """How the server runs; `from_environ` reads them from the environment variables above."""

    images_dir: Path = field(default_factory=default_images_dir)
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_resets: int = field(default_factory=default_max_resets)
    session_timeout_s: float = 300.0
    pool_size: int = 4
    step_timeout_s: float = 20.0
    max_steps: int | None = None
    scenarios: tuple[str, ...] | None = None
    drain_s: float = 20.0
    api_key: str | None = None
    queue_notice_s: float = QUEUE_NOTICE_S  # how often a queued reset hears it still waits (tests shorten it)

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ValueError("HPCGYM_MAX_SESSIONS must be at least 1")
        if self.max_resets < 1:
            raise ValueError("HPCGYM_MAX_RESETS must be at least 1")
        if self.drain_s < 0:
            raise ValueError("HPCGYM_DRAIN_S must not be negative")
        if self.session_timeout_s <= 0:
            raise ValueError("HPCGYM_SESSION_TIMEOUT_S must be positive")
        if not 0 < self.step_timeout_s < CLIENT_MESSAGE_TIMEOUT_S - 10:
            raise ValueError(
                f"HPCGYM_STEP_TIMEOUT_S must be positive and below {CLIENT_MESSAGE_TIMEOUT_S - 10:g} s, "
                "so that a step always answers before the client's message timeout"
            )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Read the settings from `environ` (default `os.environ`).

        Raises:
            ConfigError: a setting is not a number where one is needed, or out of range.
            ApiKeyError: `OPENENV_API_KEY_FILE` is missing, empty or readable by others.
        """
        env = os.environ if environ is None else environ
        defaults = cls()
        scenarios = env.get("HPCGYM_SCENARIOS", "").strip()
        max_steps = env.get("HPCGYM_MAX_STEPS", "").strip()
        images = env.get("HPCGYM_IMAGES", "").strip()
        try:
            return cls(
                images_dir=Path(images).resolve() if images else defaults.images_dir,
                max_sessions=_number(env, "HPCGYM_MAX_SESSIONS", int, defaults.max_sessions),
                max_resets=_number(env, "HPCGYM_MAX_RESETS", int, defaults.max_resets),
                session_timeout_s=_number(env, "HPCGYM_SESSION_TIMEOUT_S", float, defaults.session_timeout_s),
                pool_size=_number(env, "HPCGYM_POOL_SIZE", int, defaults.pool_size),
                step_timeout_s=_number(env, "HPCGYM_STEP_TIMEOUT_S", float, defaults.step_timeout_s),
                max_steps=_number(env, "HPCGYM_MAX_STEPS", int, 0) if max_steps else None,
                scenarios=tuple(s.strip() for s in scenarios.split(",") if s.strip()) or None,
                drain_s=_number(env, "HPCGYM_DRAIN_S", float, defaults.drain_s),
                api_key=api_key_from_environ(env),
            )
        except ValueError as e:
            raise ConfigError(str(e), hint="fix the variable, or unset it for the default") from None


def _number(env: Mapping[str, str], name: str, kind: type[int] | type[float], default: float) -> Any:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(
            f"{name}={text!r} is not {what}", hint=f"set it to {what}, e.g. {default:g}, or unset it"
        ) from None


def settings_help() -> str:
    """The settings table for `hpcgym-server --help`: each variable, what it does, its default."""
    defaults = ServerSettings()
    rows = [
        ("HPCGYM_IMAGES", "built images", str(defaults.images_dir)),
        ("HPCGYM_MAX_SESSIONS", "concurrent sessions", str(defaults.max_sessions)),
        ("HPCGYM_MAX_RESETS", "resets building clusters at once (the rest queue)", str(defaults.max_resets)),
        (
            "HPCGYM_SESSION_TIMEOUT_S",
            "idle seconds before a session is reaped",
            f"{defaults.session_timeout_s:g}",
        ),
        ("HPCGYM_POOL_SIZE", "episodes kept ready", str(defaults.pool_size)),
        ("HPCGYM_STEP_TIMEOUT_S", "wall-clock seconds per command", f"{defaults.step_timeout_s:g}"),
        ("HPCGYM_MAX_STEPS", "step budget", "each scenario's own"),
        ("HPCGYM_SCENARIOS", "comma-separated scenario ids a reset draws from", "all"),
        ("HPCGYM_DRAIN_S", "after SIGTERM, seconds running episodes may go on", f"{defaults.drain_s:g}"),
        ("OPENENV_API_KEY", "the API key", "unset: no auth"),
        ("OPENENV_API_KEY_FILE", "a file holding the API key, mode 0600", "unset"),
    ]
    width = max(len(name) for name, _, _ in rows)
    lines = [f"  {name:<{width}}  {what} (default {default})" for name, what, default in rows]
    return "settings (environment variables):\n" + "\n".join(lines)


# What bubblewrap needs from a container engine, and no more (the Containerfile says why each).
CONTAINER_FLAGS = (
    "--cap-add SYS_ADMIN --cap-add SYS_PTRACE --security-opt seccomp=unconfined "
    "--security-opt apparmor=unconfined --security-opt systempaths=unconfined"
)
CONTAINER_HINT = f"in a container, start it with: docker run {CONTAINER_FLAGS} ... (see the Containerfile)"


def in_container() -> bool:
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


def probe_sandbox(runtime: Runtime) -> HpcgymError | None:
    """Start one cluster and close it: the error if this host refuses the sandboxes, else None.

    A server whose host lacks the privileges must say so when it starts, with the flags that fix it,
    and never serve with weaker isolation.
    """
    try:
        with runtime.new_cluster():
            return None
    except HpcgymError as e:
        return e


def replace_health(
    app: FastAPI, pool: EpisodePool, drain: Drain | None = None, admission: Admission | None = None
) -> None:
    """Make `/health` say unhealthy (503) once the episode pool has failed, not merely "the port is open".

    OpenEnv's own `/health` always answers healthy; a container whose sandboxes cannot start (missing
    privileges, a broken image) must not look ready to its orchestrator. A draining server answers 503
    too: it takes no new work. With `admission`, the body carries its counts (sessions and resets).
    """
    app.router.routes[:] = [route for route in app.router.routes if getattr(route, "path", None) != "/health"]

    # Async: answered on the event loop, never behind the thread pool that busy sessions fill.
    @app.get("/health", tags=["Health"], summary="Health check")
    async def health() -> JSONResponse:
        counts: dict[str, Any] = admission.snapshot() if admission is not None else {}
        failure = (
            pool.failure if pool.failure is not None else getattr(app.state, "hpcgym_probe_failure", None)
        )
        if failure is not None:
            body = {"status": "unhealthy", "detail": str(failure), **counts}
            if in_container():
                body["hint"] = CONTAINER_HINT
            return JSONResponse(body, status_code=503)
        if drain is not None and drain.draining:
            return JSONResponse(
                {"status": "draining", "active_sessions": drain.active_sessions, **counts}, status_code=503
            )
        return JSONResponse({"status": "healthy", "episodes_ready": pool.ready, **counts})


# OpenEnv's HTTP /reset, /step and /state make a fresh environment for each request and close it after
# (stateless simulation routes); episodes live in WebSocket sessions. For EnterpriseHPC an HTTP reset
# would boot a cluster, uncounted by the session limit, only to throw it away, and an HTTP step has
# no episode to step. So they answer 409 and name the route that works; they stay in the OpenAPI
# paths, as OpenEnv's simulation mode lists them.
STATELESS_ROUTES = {"/reset": "POST", "/step": "POST", "/state": "GET"}
WEBSOCKET_ROUTE = "/ws"
STATELESS_DETAIL = (
    "EnterpriseHPC episodes are stateful and live in WebSocket sessions: HTTP {method} {path} would "
    f"act on a fresh, unconnected environment. Open a session on {WEBSOCKET_ROUTE} (HpcEnvClient or "
    "OpenEnv's EnvClient) and send reset, step and state there"
)


def refuse_stateless_http(app: FastAPI) -> None:
    """Make HTTP /reset, /step and /state answer 409 naming the WebSocket route; no cluster starts."""
    app.router.routes[:] = [
        route
        for route in app.router.routes
        if STATELESS_ROUTES.get(getattr(route, "path", "")) not in getattr(route, "methods", ())
    ]

    def refusal(path: str, method: str) -> Any:
        async def refuse() -> JSONResponse:
            detail = STATELESS_DETAIL.format(method=method, path=path)
            return JSONResponse(
                {"detail": detail, "code": "USE_WEBSOCKET", "websocket": WEBSOCKET_ROUTE}, status_code=409
            )

        return refuse

    for path, method in STATELESS_ROUTES.items():
        app.add_api_route(
            path,
            refusal(path, method),
            methods=[method],
            tags=["Environment Control"],
            summary=f"Not over HTTP: episodes are WebSocket sessions on {WEBSOCKET_ROUTE}",
            responses={409: {"description": f"use the WebSocket route {WEBSOCKET_ROUTE}"}},
        )


def add_capacity(app: FastAPI, admission: Admission, drain: Drain) -> None:
    """`GET /capacity`: what a client pool needs to place a session (behind the key when one is set).

    Sessions open and their limit, resets building clusters and queued and their limit, sessions
    refused so far, and whether the server is draining.
    """

    @app.get("/capacity", tags=["Health"], summary="Sessions and resets: in use, queued, limits; draining")
    async def capacity() -> dict[str, int | bool]:
        return {**admission.snapshot(), "draining": drain.draining}


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
    # The runtime's clusters (and their one capped cgroup) are sized from the session limit: every
    # session's episode, the warm pool, and as many again for episodes still closing or warming.
    max_clusters = settings.max_sessions + 2 * settings.pool_size + 4
    runtime = runtime or Runtime(settings.images_dir, max_clusters=max_clusters)
    pool = EpisodePool(runtime, settings.pool_size, EpisodeOptions(timeout_s=settings.step_timeout_s))
    backend = ServerBackend(
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
        # The idle timeout is the admission guard's: OpenEnv's reaper closes an idle episode but
        # leaves its socket open and counted.
        concurrency_config=ConcurrencyConfig(max_concurrent_envs=settings.max_sessions, session_timeout=None),
        state_cls=HpcState,
    )

    drain = Drain(settings.drain_s)
    admission = Admission(settings.max_sessions, settings.max_resets)
    refuse_stateless_http(app)
    replace_health(app, pool, drain, admission)
    add_capacity(app, admission, drain)

    def shut_down() -> None:
        pool.close()
        if owns_runtime:
            runtime.close()

    app.router.on_shutdown.append(shut_down)
    # Innermost: a draining server refuses before a session is counted here.
    app.add_middleware(
        AdmissionGuard,
        admission=admission,
        idle_s=settings.session_timeout_s,
        notice_s=settings.queue_notice_s,
    )
    # Added before the key check, so the key check runs first: unauthenticated clients learn nothing.
    app.add_middleware(DrainGuard, drain=drain)
    if settings.api_key:
        app.add_middleware(ApiKeyAuth, api_key=settings.api_key)
    else:
        log.warning("OPENENV_API_KEY is not set: the server accepts every client")
    app.state.hpcgym_settings = replace(settings, api_key=None)  # never echo the key
    app.state.hpcgym_drain = drain
    app.state.hpcgym_admission = admission
    app.state.hpcgym_runtime = runtime
    return app


def main(argv: list[str] | None = None) -> None:
    """Run the server (`hpcgym-server`, `python -m hpcgym.interfaces.openenv.server.app`).

    Exits 0 after a SIGTERM drain, 2 when the settings are unusable (say an API key file others can read).
    """
    parser = argparse.ArgumentParser(
        prog="hpcgym-server",
        description="Serve EnterpriseHPC over OpenEnv (HTTP and WebSocket).",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"), help="default %(default)s")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)), help="default %(default)s"
    )
    parser.add_argument(
        "--images", type=Path, help="built images (default $HPCGYM_IMAGES or the checkout's build/images)"
    )
    parser.add_argument("--log-level", default="info", help="uvicorn's log level (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = ServerSettings.from_environ()
    except (ApiKeyError, ConfigError, ValueError) as e:
        print(f"hpcgym-server: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.images is not None:
        settings = replace(settings, images_dir=args.images)
    try:
        app = build_app(settings)
    except HpcgymError as e:
        # The runtime probes mounts and sandboxes as it starts; in a container that lacks the
        # privileges this is where it fails, so name the flags.
        hint = f"\n  {CONTAINER_HINT}" if in_container() else ""
        print(f"hpcgym-server: error: {e}{hint}", file=sys.stderr)
        raise SystemExit(2) from None
    failure = probe_sandbox(app.state.hpcgym_runtime)
    if failure is not None:
        app.state.hpcgym_probe_failure = failure
        hint = f"; {CONTAINER_HINT}" if in_container() else ""
        log.error("episodes cannot start here, /health answers 503: %s%s", failure, hint)
    # Many sessions step at once, each in its own thread; one worker process shares one runtime.
    config = draining_config(app, host=args.host, port=args.port, log_level=args.log_level)
    DrainingServer(config, app.state.hpcgym_drain).run()


if __name__ == "__main__":
    main()
