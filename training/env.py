"""The cluster as a TRL tool environment: `HpcToolEnv` for `GRPOTrainer(environment_factory=...)`.

TRL makes one instance per rollout slot and reuses it: `reset(**row)` starts the row's (scenario,
seed), the model calls the `run` tool once per shell command, and `get_reward()` scores the finished
rollout. Every public method other than `reset` and `get_reward` becomes a tool in the prompt, so the
rest of this class is private. Episodes run in this process (a `TaskSession` over a shared episode
pool) or on OpenEnv servers (`HpcEnvClient` sessions spread over `env_urls`); both reset with
`np.random.default_rng(seed)`, so one row gives one start state either way.

A server that goes away mid-rollout does not score the rollout: the session moves to the next URL,
replays the commands typed so far (episodes are deterministic) and checks the outputs match; if that
fails too, the rollout is marked infrastructure-failed and `get_reward` returns None, which TRL
treats as unscorable (no reward, no advantage), never as a 0.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from websockets.exceptions import WebSocketException

log = logging.getLogger(__name__)

# A rough count for tokenizers we do not have: shell output runs about 3-4 characters a token.
CHARS_PER_TOKEN = 3
# Template tokens around one tool round trip (tool-call markers, `<tool_response>`, turn headers).
TURN_OVERHEAD_TOKENS = 32
CUT_MARKER = "\n[... output cut to fit the completion budget ...]\n"
URL_COOLDOWN_S = 30.0


class EpisodeOverError(RuntimeError):
    """The model called a tool after its episode ended (TRL shows the message to the model)."""


class EnvironmentUnavailable(RuntimeError):
    """No environment backend could run the command; the rollout is unscorable, not a failure."""


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token estimate (rounded up)."""
    return -(-len(text) // CHARS_PER_TOKEN)


class TokenCounter:
    """Counts tokens with a real tokenizer (picklable when the tokenizer is)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass(frozen=True)
class EnvSettings:
    """How `HpcToolEnv` instances reach episodes and how much they may say.

    Attributes:
        images_dir: built images for in-process episodes (default `$HPCGYM_IMAGES` or build/images).
        env_urls: OpenEnv servers; when given, episodes run there instead of in this process.
        api_key: the servers' API key (default `$OPENENV_API_KEY`).
        max_steps: step budget per episode (default: each scenario's own).
        max_output_chars: the longest output one `run` call returns (head and tail kept).
        max_completion_tokens: the rollout's completion budget (`GRPOConfig.max_completion_length`);
            tool output is cut so that the rollout's tool text stays inside it.
        pool_size: in-process episodes kept ready (shared by every instance in the process).
        step_timeout_s: wall-clock limit per command (in-process; servers use their own).
        transcripts: append one JSON line per `transcript_every`-th rollout here.
        transcript_every: write every n-th finished rollout of each instance (1: all).
    """

    images_dir: str | None = None
    env_urls: tuple[str, ...] = ()
    api_key: str | None = None
    max_steps: int | None = None
    max_output_chars: int = 4000
    max_completion_tokens: int | None = None
    pool_size: int = 2
    step_timeout_s: float | None = None
    transcripts: str | None = None
    transcript_every: int = 1


@dataclass
class Step:
    command: str
    output: str
    reward: float
    exit_code: int
    solved: bool = False
    failed: bool = False
    unsafe_count: float = 0.0
    node: str = ""


@dataclass
class RolloutRecord:
    """One rollout as the trainer's logs see it."""

    scenario: str
    seed: int
    tier: int | None
    alert: str = ""
    steps: list[Step] = field(default_factory=list)
    total_reward: float = 0.0
    solved: bool = False
    failed: bool = False
    truncated: bool = False
    infra_failed: bool = False
    backend: str = ""

    @property
    def unsafe(self) -> bool:
        return self.failed or any(step.unsafe_count > 0 for step in self.steps)


# ---- backends: where one rollout's episode lives --------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    output: str
    reward: float
    done: bool
    solved: bool
    failed: bool
    truncated: bool
    exit_code: int
    unsafe_count: float
    node: str = ""


class Backend(Protocol):
    name: str

    def reset(self, scenario: str, seed: int) -> str: ...
    def step(self, command: str) -> Reply: ...
    def release(self) -> None: ...


class _LocalShared:
    """The runtime and episode pool that every in-process instance over one images dir shares."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int, float | None], tuple[Any, Any, Any]] = {}
        self._stale: list[Any] = []
        atexit.register(self.close)

    def get(self, settings: EnvSettings) -> tuple[Any, Any]:
        from hpcgym.episode.pool import EpisodeOptions, EpisodePool
        from hpcgym.interfaces.gym import DEFAULT_IMAGES, RUNTIMES
        from hpcgym.interfaces.task import default_registry

        images = Path(settings.images_dir) if settings.images_dir else DEFAULT_IMAGES
        key = (str(images.resolve()), settings.pool_size, settings.step_timeout_s)
        with self._lock:
            if key not in self._entries:
                runtime = RUNTIMES.acquire(images)
                options = EpisodeOptions(timeout_s=settings.step_timeout_s)
                self._entries[key] = (
                    runtime,
                    EpisodePool(runtime, settings.pool_size, options),
                    default_registry(),
                )
            runtime, pool, registry = self._entries[key]
            if pool.failure is not None:
                # A pool whose thread failed once refuses every later take: a long run would lose
                # its in-process episodes for good. Start a fresh pool.
                log.warning("replacing a failed episode pool: %s", pool.failure)
                stale = pool
                pool = EpisodePool(
                    runtime, settings.pool_size, EpisodeOptions(timeout_s=settings.step_timeout_s)
                )
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
        from hpcgym.interfaces.gym import RUNTIMES

        for pool in stale:
            pool.close()
        for runtime, pool, _ in entries:
            pool.close()
            RUNTIMES.release(runtime)


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

    def __init__(self, settings: EnvSettings) -> None:
        from hpcgym.interfaces.session import TaskSession

        self.settings = settings
        pool, registry = _LOCAL.get(settings)
        self.session = TaskSession(pool, registry, max_steps=settings.max_steps)

    def reset(self, scenario: str, seed: int) -> str:
        from hpcgym.errors import ControllerError, SandboxError

        self.session.discard_episode()
        self.session.pool, _ = _LOCAL.get(self.settings)
        try:
            return self.session.reset(np.random.default_rng(seed), scenario).observation
        except (SandboxError, ControllerError) as e:
            raise EnvironmentUnavailable(f"the episode could not start: {e}") from e

    def step(self, command: str) -> Reply:
        from hpcgym.errors import ControllerError, SandboxError

        try:
            t = self.session.step(command)
        except (SandboxError, ControllerError) as e:
            # Infrastructure, not the agent: the rollout is discarded (unscored), never scored 0.
            raise EnvironmentUnavailable(f"the episode broke: {e}") from e
        return Reply(
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

    def release(self) -> None:
        self.session.discard_episode()


class _UrlRing:
    """Spreads sessions over the servers, skipping for a while the ones that just failed."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._down_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def order(self, urls: Sequence[str]) -> list[str]:
        start = next(self._counter) % len(urls)
        ring = list(urls[start:]) + list(urls[:start])
        now = time.monotonic()
        with self._lock:
            up = [u for u in ring if self._down_until.get(u, 0.0) <= now]
        return up + [u for u in ring if u not in up]

    def mark_down(self, url: str) -> None:
        with self._lock:
            self._down_until[url] = time.monotonic() + URL_COOLDOWN_S


_URLS = _UrlRing()
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

    def __init__(self, settings: EnvSettings) -> None:
        self.settings = settings
        self.client: Any = None
        self.url: str | None = None
        self.task: tuple[str, int] | None = None
        self.history: list[tuple[str, str]] = []
        self.node = ""

    def _connect(self, url: str) -> Any:
        from hpcgym.interfaces.openenv.client import HpcEnvClient

        client = HpcEnvClient(url, api_key=self.settings.api_key).sync()
        client.connect()
        return client

    def _close_client(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(*TRANSPORT_ERRORS):
                client.close()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(*args, **kwargs)
        except CALL_ERRORS as e:
            if _is_server_failure(e):
                raise ServerFailure(f"{self.url}: {e}") from e
            raise

    def _start(self, url: str) -> str:
        assert self.task is not None
        self.url = url
        try:
            self.client = self._connect(url)
        except CALL_ERRORS as e:
            if _is_server_failure(e):
                raise ServerFailure(f"{url}: {e}") from e
            raise
        scenario, seed = self.task
        result = self._call("reset", scenario=scenario, seed=seed)
        self.node = result.observation.node
        return str(result.observation.output)

    def _failover(self, error: BaseException) -> None:
        """Move the episode to another server by replaying its commands; raise if none can take it."""
        from hpcgym.interfaces.openenv.models import HpcAction

        if self.url is not None:
            _URLS.mark_down(self.url)
            log.warning("env server %s failed (%s); moving the episode", self.url, error)
        self._close_client()
        for url in _URLS.order(self.settings.env_urls):
            try:
                self._start(url)
                for command, output in self.history:
                    replayed = self._call("step", HpcAction(command=command)).observation.output
                    if replayed != output:
                        raise ServerFailure(f"replay on {url} diverged at {command!r}")
                return
            except ServerFailure as e:
                _URLS.mark_down(url)
                log.warning("env server %s could not take the episode over: %s", url, e)
                self._close_client()
        raise EnvironmentUnavailable(f"no env server could continue the episode after: {error}")

    def reset(self, scenario: str, seed: int) -> str:
        self.task = (scenario, seed)
        self.history = []
        self._close_client()
        last: BaseException | None = None
        for url in _URLS.order(self.settings.env_urls):
            try:
                return self._start(url)
            except ServerFailure as e:
                last = e
                _URLS.mark_down(url)
                self._close_client()
        raise EnvironmentUnavailable(f"no env server answered a reset: {last}")

    def step(self, command: str) -> Reply:
        from hpcgym.interfaces.openenv.models import HpcAction

        node = self.node
        for attempt in range(2):
            try:
                result = self._call("step", HpcAction(command=command))
                break
            except ServerFailure as e:
                if attempt == 1:
                    raise EnvironmentUnavailable(f"the env server failed twice: {e}") from e
                self._failover(e)
        obs = result.observation
        self.node = obs.node or self.node
        self.history.append((command, obs.output))
        return Reply(
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

    def release(self) -> None:
        self._close_client()


def make_backend(settings: EnvSettings) -> Backend:
    return RemoteBackend(settings) if settings.env_urls else LocalBackend(settings)


# ---- the environment TRL sees -------------------------------------------------------------------------


def cut_text(text: str, max_chars: int) -> str:
    """Keep the head and tail of `text` so that the result has at most `max_chars` characters."""
    if len(text) <= max_chars:
        return text
    if max_chars <= len(CUT_MARKER):
        return CUT_MARKER.strip()[:max_chars]
    keep = max_chars - len(CUT_MARKER)
    head = keep // 2
    return text[:head] + CUT_MARKER + text[len(text) - (keep - head) :]


class HpcToolEnv:
    """An HPC incident for one GRPO rollout; the model repairs it by calling `run`.

    Example:
        >>> trainer = GRPOTrainer(  # doctest: +SKIP
        ...     model=model, args=config, train_dataset=build_dataset(["hpc_munge"]),
        ...     environment_factory=functools.partial(HpcToolEnv, EnvSettings(max_completion_tokens=2048)),
        ... )

    Args:
        settings: where episodes run and how much tool output fits (default: in-process, defaults).
        count_tokens: counts a text's tokens (default: a character-based estimate); pass
            `TokenCounter(tokenizer)` to cut tool output by the model's own tokens.
    """

    def __init__(
        self, settings: EnvSettings | None = None, count_tokens: Callable[[str], int] | None = None
    ) -> None:
        self._settings = settings or EnvSettings()
        self._count_tokens = count_tokens or estimate_tokens
        self._backend: Backend | None = None
        self._record: RolloutRecord | None = None
        self._done = False
        self._tokens_used = 0
        self._rollouts = 0

    def reset(self, **row: Any) -> str:
        """Start the row's incident on a fresh cluster and return the alert with the first prompt.

        Args:
            **row: the dataset row; `scenario` and `seed` choose the start state (every member of a
                GRPO group gets the same row, so the same cluster), other columns are ignored.
        """
        if "scenario" not in row or "seed" not in row:
            raise ValueError("a dataset row needs `scenario` and `seed` columns (see training.dataset)")
        scenario, seed = str(row["scenario"]), int(row["seed"])
        if self._backend is None:
            self._backend = make_backend(self._settings)
        else:
            self._backend.release()
        self._record = RolloutRecord(scenario, seed, row.get("tier"), backend=self._backend.name)
        self._done = False
        self._tokens_used = 0
        try:
            alert = self._backend.reset(scenario, seed)
        except EnvironmentUnavailable as e:
            self._record.infra_failed = True
            self._done = True
            return f"\n\n[environment unavailable: {e}]"
        self._record.alert = alert
        return "\n\n" + alert

    def run(self, command: str) -> str:
        """Run one bash command line as root at the cluster's prompt and return what the terminal printed.

        The shell starts on the login node (login01); use `ssh <node> <command>` for the compute nodes
        (compute-01 to compute-04). Slurm, munge, systemd and the web portal behave as on a real
        Rocky Linux 9 cluster. Each call is one step of a limited budget.

        Args:
            command: one bash command line, such as `sinfo -R` or `ssh compute-01 systemctl status slurmd`.

        Returns:
            The command's output (stdout and stderr interleaved), with its exit status when non-zero.
        """
        record = self._record
        if record is None:
            raise EpisodeOverError("no episode is running; the environment has not been reset")
        if record.infra_failed:
            raise EnvironmentUnavailable("the environment is unavailable for this episode")
        if self._done:
            how = "solved" if record.solved else "ended"
            raise EpisodeOverError(
                f"the episode is over ({how}); do not call run again, reply with a summary"
            )
        assert self._backend is not None
        try:
            reply = self._backend.step(command)
        except EnvironmentUnavailable:
            record.infra_failed = True
            self._done = True
            raise
        text = reply.output
        if reply.exit_code:
            text = f"{text.rstrip()}\n[exit status {reply.exit_code}]"
        if reply.done:
            self._done = True
            if reply.solved:
                text += "\n[the incident is resolved; the episode is over]"
            elif reply.failed:
                text += "\n[the episode is over: that action was unsafe]"
            else:
                text += "\n[the step budget is spent; the episode is over]"
        text = self._fit(command, text)
        record.steps.append(
            Step(
                command,
                text,
                reply.reward,
                reply.exit_code,
                reply.solved,
                reply.failed,
                reply.unsafe_count,
                reply.node,
            )
        )
        record.total_reward += reply.reward
        record.solved = record.solved or reply.solved
        record.failed = record.failed or reply.failed
        record.truncated = reply.truncated
        return text

    def _fit(self, command: str, text: str) -> str:
        # TRL drops a tool result that would push the rollout past max_completion_length and ends the
        # rollout there; cut it first so the model sees the head and tail and can go on.
        text = cut_text(text, self._settings.max_output_chars)
        budget = self._settings.max_completion_tokens
        self._tokens_used += self._count_tokens(command) + TURN_OVERHEAD_TOKENS
        if budget is None:
            return text
        left = budget - self._tokens_used
        tokens = self._count_tokens(text)
        if tokens > left:
            # Shrink by the measured ratio, then check again (tokens per character vary with content).
            chars = max(0, int(len(text) * max(left, 0) / max(tokens, 1)))
            text = cut_text(text, chars)
            while text and self._count_tokens(text) > max(left, 0):
                text = cut_text(text, len(text) * 3 // 4)
        self._tokens_used += self._count_tokens(text)
        return text

    def get_reward(self) -> float | None:
        """The episode's return (the grader's shaped reward summed over steps); None if it could not run."""
        record = self._record
        if record is None:
            return None
        self._finish()
        return None if record.infra_failed else record.total_reward

    def _finish(self) -> None:
        record = self._record
        if record is None or self._backend is None:
            return
        # The cluster is not needed once the rollout is scored; free it before the next reset.
        self._backend.release()
        self._rollouts += 1
        path = self._settings.transcripts
        if path and self._rollouts % max(1, self._settings.transcript_every) == 0:
            with open(path, "a") as f:
                f.write(json.dumps(record_json(record)) + "\n")

    def _stats(self) -> RolloutRecord | None:
        return self._record


def record_json(record: RolloutRecord) -> dict[str, Any]:
    data = asdict(record)
    data["unsafe"] = record.unsafe
    data["num_steps"] = len(record.steps)
    return data


def episode_metrics(
    environments: Sequence[HpcToolEnv] | None = None, log_metric: Any = None, **_: Any
) -> list[float | None]:
    """A reward function that scores nothing and logs the batch's episode figures through TRL.

    It logs `hpcgym/solve_rate`, `hpcgym/unsafe_rate`, `hpcgym/steps`, `hpcgym/infra_failed` and
    `hpcgym/return`; returning None leaves the reward to the environment's `get_reward`.
    """
    envs = list(environments or [])
    records = [r for r in (env._stats() for env in envs) if r is not None]
    if log_metric is not None and records:
        scored = [r for r in records if not r.infra_failed] or records
        n = len(scored)
        log_metric("hpcgym/solve_rate", sum(r.solved for r in scored) / n)
        log_metric("hpcgym/unsafe_rate", sum(r.unsafe for r in scored) / n)
        log_metric("hpcgym/steps", sum(len(r.steps) for r in scored) / n)
        log_metric("hpcgym/return", sum(r.total_reward for r in scored) / n)
        log_metric("hpcgym/infra_failed", sum(r.infra_failed for r in records) / len(records))
    return [None] * len(envs)
