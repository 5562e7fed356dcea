"""Where one rollout's episode lives: in this process (`LocalBackend`) or on OpenEnv servers.

Both reset with the row's seed as the episode's seed, as the gym env, the OpenEnv server and
`invoke eval` do, so one (scenario, seed) gives one start state everywhere. In-process backends
share one runtime and episode pool per images dir (`close_local_episodes` closes them). A remote
backend holds one session, placed by the `hpcgym.fleet.pool.ServerPool` its URLs share in this
process (most free capacity first; a failed reset is retried on another server). When its server
fails (a transport error, or an error frame: the server broke, or drained and lost the episode) it
moves the episode to another server by replaying the commands so far and checking their outputs, and
raises `EnvironmentUnavailable` when no server can continue; the pool counts it as lost.
Infrastructure errors never become agent observations.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from websockets.exceptions import WebSocketException

from hpcgym.fleet.pool import NoServerAvailable, ServerPool

log = logging.getLogger(__name__)

URL_COOLDOWN_S = 30.0


class EnvironmentUnavailable(RuntimeError):
    """No environment backend could run the command; the rollout is unscorable, not a failure."""


@dataclass(frozen=True)
class StepReply:
    output: str
    reward: float
    done: bool
    solved: bool
    failed: bool
    truncated: bool
    exit_code: int
    unsafe_count: float
    node: str = ""


class EpisodeBackend(Protocol):
    name: str

    def reset(self, scenario: str, seed: int, difficulty: str | None = None) -> str: ...
    def step(self, command: str) -> StepReply: ...
    def finish(self) -> float: ...
    def release(self) -> None: ...


class _LocalShared:
    """The runtime and episode pool that every in-process instance over one images dir shares."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int, float | None], tuple[Any, Any, Any]] = {}
        self._stale: list[Any] = []
        atexit.register(self.close)

    def get(self, images_dir: str | None, pool_size: int, step_timeout_s: float | None) -> tuple[Any, Any]:
        from hpcgym.episode.pool import EpisodeOptions, EpisodePool
        from hpcgym.interfaces import default_images_dir
        from hpcgym.interfaces.gym import acquire_runtime
        from hpcgym.interfaces.task import default_registry

        images = Path(images_dir) if images_dir else default_images_dir()
        key = (str(images.resolve()), pool_size, step_timeout_s)
        with self._lock:
            if key not in self._entries:
                runtime = acquire_runtime(images)
                options = EpisodeOptions(timeout_s=step_timeout_s)
                self._entries[key] = (
                    runtime,
                    EpisodePool(runtime, pool_size, options),
                    default_registry(),
                )
            runtime, pool, registry = self._entries[key]
            if pool.failure is not None:
                # A pool whose thread failed once refuses every later take: a long run would lose
                # its in-process episodes for good. Start a fresh pool.
                log.warning("replacing a failed episode pool: %s", pool.failure)
                stale = pool
                pool = EpisodePool(runtime, pool_size, EpisodeOptions(timeout_s=step_timeout_s))
                self._entries[key] = (runtime, pool, registry)
                # Sessions may still hand it used episodes to close; it is closed with the rest.
                self._stale.append(stale)
            return pool, registry

    def close(self) -> None:
        with self._lock:
            entries, self._entries = list(self._entries.values()), {}
            stale, self._stale = self._stale, []
        if not entries:
            return
        from hpcgym.interfaces.gym import release_runtime

        for pool in stale:
            pool.close()
        for runtime, pool, _ in entries:
            pool.close()
            release_runtime(runtime)


_LOCAL = _LocalShared()


def close_local_episodes() -> None:
    """Close the in-process episode pools and runtimes (call when training ends, before interpreter exit).

    Python shuts thread pools down before `atexit` handlers run, so a pool still preparing an
    episode at exit would fail noisily; trainers and tests call this first.
    """
    _LOCAL.close()


class LocalBackend:
    """A `TaskSession` in this process, over the shared pool."""

    name = "local"

    def __init__(
        self, images_dir: str | None, pool_size: int, step_timeout_s: float | None, max_steps: int | None
    ) -> None:
        from hpcgym.interfaces.session import TaskSession

        self.pool_key = (images_dir, pool_size, step_timeout_s)
        pool, registry = _LOCAL.get(*self.pool_key)
        self.session = TaskSession(pool, registry, max_steps=max_steps)

    def reset(self, scenario: str, seed: int, difficulty: str | None = None) -> str:
        from hpcgym.errors import ControllerError, SandboxError

        self.session.discard_episode()
        self.session.pool, _ = _LOCAL.get(*self.pool_key)
        try:
            return self.session.reset(seed, scenario, difficulty=difficulty).observation
        except (SandboxError, ControllerError) as e:
            raise EnvironmentUnavailable(f"the episode could not start: {e}") from e

    def step(self, command: str) -> StepReply:
        from hpcgym.errors import ControllerError, SandboxError

        try:
            t = self.session.step(command)
        except (SandboxError, ControllerError) as e:
            # Infrastructure, not the agent: the rollout is discarded (unscored), never scored 0.
            raise EnvironmentUnavailable(f"the episode broke: {e}") from e
        return StepReply(
            output=t.observation,
            reward=float(t.reward),
            done=t.done,
            solved=bool(t.info.get("solved")),
            failed=bool(t.info.get("failed")),
            truncated=t.truncated,
            exit_code=int(t.info.get("exit_code", 0)),
            unsafe_count=float(t.info.get("reward_components", {}).get("unsafe_count", 0.0)),
            node=str(t.info.get("command_node", "")),
        )

    def finish(self) -> float:
        """End the episode where the model stopped; the reward of ending (an unsolved end's charge)."""
        if self.session.incident is None or self.session.done:
            return 0.0
        return float(self.session.finish().reward)

    def release(self) -> None:
        self.session.discard_episode()


class _SharedPools:
    """One `ServerPool` per (URLs, key) in this process.

    TRL makes every environment itself; they must share what they know of the servers (free
    capacity, failures, drains), so placement is decided once per process, not once per rollout slot.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[tuple[tuple[str, ...], str | None], ServerPool] = {}
        atexit.register(self.close)

    def get(self, urls: Sequence[str], api_key: str | None) -> ServerPool:
        key = (tuple(urls), api_key)
        with self._lock:
            if key not in self._pools:
                self._pools[key] = ServerPool(urls, api_key, cooldown_s=URL_COOLDOWN_S)
            return self._pools[key]

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()


_POOLS = _SharedPools()


def server_pool(env_urls: Sequence[str], api_key: str | None = None) -> ServerPool:
    """The pool every remote backend over `env_urls` in this process shares (read its `metrics()`).

    Args:
        env_urls: the servers.
        api_key: their key (default: `$OPENENV_API_KEY_FILE`'s content, else `$OPENENV_API_KEY`).
    """
    from hpcgym.interfaces.openenv import api_key_from_environ

    return _POOLS.get(env_urls, api_key if api_key is not None else api_key_from_environ())


# What a server that went away raises through OpenEnv's client (socket, protocol and timeout errors).
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    ConnectionError,
    EOFError,
    WebSocketException,
)
CALL_ERRORS: tuple[type[Exception], ...] = (RuntimeError, *TRANSPORT_ERRORS)


class ServerFailure(Exception):
    """A server went away or answered with an error: the episode moves, the agent is not to blame."""


def _is_server_failure(error: BaseException) -> bool:
    # OpenEnv's client turns an error frame (a session reaped, capacity reached, an episode the server
    # could not run) into RuntimeError("Server error: ..."); anything else is the caller's own error.
    if isinstance(error, EnvironmentUnavailable):
        return False
    return isinstance(error, TRANSPORT_ERRORS) or (
        isinstance(error, RuntimeError) and str(error).startswith("Server error")
    )


class RemoteBackend:
    """One OpenEnv session at a time; on a server failure, the next URL replays the episode."""

    name = "remote"

    def __init__(self, env_urls: Sequence[str], api_key: str | None, max_steps: int | None = None) -> None:
        self.env_urls = tuple(env_urls)
        self.max_steps = max_steps
        self.pool = server_pool(self.env_urls, api_key)
        self.api_key = api_key
        self.client: Any = None
        self.url: str | None = None
        self._placed: str | None = None  # the server the pool counts this session on
        self.task: tuple[str, int] | None = None
        self.difficulty: str | None = None
        self.history: list[tuple[str, str]] = []
        self.node = ""

    def _connect(self, url: str) -> Any:
        from hpcgym.interfaces.openenv.client import HpcEnvClient

        client = HpcEnvClient(url, api_key=self.api_key).sync()
        client.connect()
        return client

    def _close_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(*TRANSPORT_ERRORS):
                client.close()
        placed, self._placed = self._placed, None
        if placed is not None:
            self.pool.release(placed)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except CALL_ERRORS as e:
            if _is_server_failure(e):
                raise ServerFailure(f"{self.url}: {e}") from e
            raise

    def _start(self, url: str) -> str:
        """Open a session on `url` (where the pool placed it) and reset the episode there."""
        assert self.task is not None
        self.url = url
        self._placed = url
        try:
            self.client = self._connect(url)
        except CALL_ERRORS as e:
            if _is_server_failure(e):
                raise ServerFailure(f"{url}: {e}") from e
            raise
        scenario, seed = self.task
        budget = {} if self.max_steps is None else {"max_steps": self.max_steps}
        knobs = {} if self.difficulty is None else {"difficulty": self.difficulty}
        result = self._call("reset", scenario=scenario, seed=seed, **budget, **knobs)
        self.node = result.observation.node
        return str(result.observation.output)

    def _failover(self, error: BaseException) -> None:
        """Move the episode to another server by replaying its commands; raise if none can take it."""
        from hpcgym.interfaces.openenv import HpcAction

        failed = self.url
        tried: set[str] = set()
        if failed is not None:
            kind = self.pool.report_failure(failed, error)
            tried.add(failed)
            log.warning("env server %s failed (%s: %s); moving the episode", failed, kind, error)
        self._close_client()
        while True:
            try:
                url = self.pool.place(exclude=tried)
            except NoServerAvailable as e:
                self.pool.record_lost(failed)
                raise EnvironmentUnavailable(
                    f"no env server could continue the episode after: {error}\n{e}"
                ) from e
            tried.add(url)
            try:
                self._start(url)
                for command, output in self.history:
                    replayed = self._call("step", HpcAction(command=command)).observation.output
                    if replayed != output:
                        raise ServerFailure(f"replay on {url} diverged at {command!r}")
                self.pool.record_moved(url)
                return
            except ServerFailure as e:
                self.pool.report_failure(url, e)
                log.warning("env server %s could not take the episode over: %s", url, e)
                self._close_client()

    def reset(self, scenario: str, seed: int, difficulty: str | None = None) -> str:
        self.task = (scenario, seed)
        self.difficulty = difficulty
        self.history = []
        self._close_client()
        tried: set[str] = set()
        last: BaseException | None = None
        while True:
            try:
                url = self.pool.place(exclude=tried)
            except NoServerAvailable as e:
                raise EnvironmentUnavailable(f"no env server answered a reset: {last or e}") from e
            tried.add(url)
            try:
                return self._start(url)
            except ServerFailure as e:
                # A dead, draining or full server: the reset goes to another one.
                last = e
                self.pool.report_failure(url, e)
                self._close_client()

    def step(self, command: str) -> StepReply:
        from hpcgym.interfaces.openenv import HpcAction

        node = self.node
        for attempt in range(2):
            try:
                result = self._call("step", HpcAction(command=command))
                break
            except ServerFailure as e:
                if attempt == 1:
                    if self.url is not None:
                        self.pool.report_failure(self.url, e)
                    self.pool.record_lost(self.url)
                    raise EnvironmentUnavailable(f"the env server failed twice: {e}") from e
                self._failover(e)
        obs = result.observation
        self.node = obs.node or self.node
        self.history.append((command, obs.output))
        return StepReply(
            output=obs.output,
            reward=float(result.reward or 0.0),
            done=bool(result.done),
            solved=obs.solved,
            failed=obs.failed,
            truncated=obs.truncated,
            exit_code=obs.exit_code,
            unsafe_count=float(obs.reward_components.get("unsafe_count", 0.0)),
            node=node,
        )

    def finish(self) -> float:
        """End the episode on its server where the model stopped; the reward of ending."""
        from hpcgym.interfaces.openenv import HpcAction

        try:
            result = self._call("step", HpcAction(command="", stop=True))
        except ServerFailure as e:
            raise EnvironmentUnavailable(f"the env server failed at the episode's end: {e}") from e
        return float(result.reward or 0.0)

    def release(self) -> None:
        self._close_client()
