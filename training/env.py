"""The cluster as a TRL tool environment: `HpcToolEnv` for `GRPOTrainer(environment_factory=...)`.

TRL makes one instance per rollout slot and reuses it: `reset(**row)` starts the row's (scenario,
seed), the model calls the `run` tool once per shell command, and `get_reward()` scores the finished
rollout. Every public method other than `reset` and `get_reward` becomes a tool in the prompt, so the
rest of this class is private. Episodes run in this process or on OpenEnv servers
(`training.backends`); one row gives one start state either way.

A rollout whose episode the infrastructure lost (no server could continue it, or an in-process
sandbox broke) is marked infrastructure-failed and `get_reward` returns None, which TRL treats as
unscorable (no reward, no advantage), never as a 0.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from hpcgym.interfaces import chat
from training.backends import EnvironmentUnavailable, EpisodeBackend, LocalBackend, RemoteBackend

# A rough count for tokenizers we do not have: shell output runs about 3-4 characters a token.
CHARS_PER_TOKEN = 3
# Template tokens around one tool round trip (tool-call markers, `<tool_response>`, turn headers).
TURN_OVERHEAD_TOKENS = 32


class EpisodeOverError(RuntimeError):
    """The model called a tool after its episode ended (TRL shows the message to the model)."""


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
    max_output_chars: int = chat.MAX_OUTPUT_CHARS
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


def make_backend(settings: EnvSettings) -> EpisodeBackend:
    """The backend `settings` ask for: remote when `env_urls` are given, else in-process."""
    if settings.env_urls:
        return RemoteBackend(settings.env_urls, settings.api_key, settings.max_steps)
    return LocalBackend(settings.images_dir, settings.pool_size, settings.step_timeout_s, settings.max_steps)


# ---- the environment TRL sees -------------------------------------------------------------------------


cut_text = chat.cut_text


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
        self._backend: EpisodeBackend | None = None
        self._record: RolloutRecord | None = None
        self._done = False
        self._scored = False
        self._tokens_used = 0
        self._rollouts = 0

    def reset(self, **row: Any) -> str:
        """Start the row's incident on a fresh cluster and return the alert with the first prompt.

        Args:
            **row: the dataset row; `scenario`, `seed` and `difficulty` (optional) choose the start
                state (every member of a GRPO group gets the same row, so the same cluster), other
                columns are ignored.
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
        self._scored = False
        self._tokens_used = 0
        try:
            alert = self._backend.reset(scenario, seed, row.get("difficulty") or None)
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
        self._done = self._done or reply.done
        text = chat.tool_result(
            reply.output,
            reply.exit_code,
            done=reply.done,
            solved=reply.solved,
            failed=reply.failed,
            max_chars=None,
        )
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
        text = chat.cut_text(text, self._settings.max_output_chars)
        budget = self._settings.max_completion_tokens
        self._tokens_used += self._count_tokens(command) + TURN_OVERHEAD_TOKENS
        if budget is None:
            return text
        left = budget - self._tokens_used
        tokens = self._count_tokens(text)
        if tokens > left:
            # Shrink by the measured ratio, then check again (tokens per character vary with content).
            chars = max(0, int(len(text) * max(left, 0) / max(tokens, 1)))
            text = chat.cut_text(text, chars)
            while text and self._count_tokens(text) > max(left, 0):
                text = chat.cut_text(text, len(text) * 3 // 4)
        self._tokens_used += self._count_tokens(text)
        return text

    def get_reward(self) -> float | None:
        """The episode's return (the grader's shaped reward summed over steps); None if it could not run.

        Scoring ends the rollout once; asking again gives the same number.
        """
        record = self._record
        if record is None:
            return None
        if self._scored:
            return None if record.infra_failed else record.total_reward
        if not self._done and not record.infra_failed and self._backend is not None:
            # The model stopped calling `run`: the episode ends here, as unsolved as running out.
            try:
                record.total_reward += self._backend.finish()
            except EnvironmentUnavailable:
                record.infra_failed = True
            self._done = True
        self._scored = True
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
    """A reward column that logs the batch's episode figures through TRL; it adds nothing to the reward.

    It logs `hpcgym/solve_rate`, `hpcgym/unsafe_rate`, `hpcgym/steps`, `hpcgym/infra_failed` and
    `hpcgym/return`, and with env servers the fleet's running counts (`fleet/episodes_lost`,
    `fleet/server_failures`, ... from `ServerPool.metrics`). It returns each episode's return (None
    where the episode could not run), so TRL's `rewards/episode_metrics/*` columns show numbers;
    `training.grpo` gives it weight 0, leaving the reward to the environment's `get_reward`. TRL calls
    it first, so it scores (ends) the episodes here and the figures include the end.
    """
    envs = list(environments or [])
    returns = [env.get_reward() for env in envs]
    records = [r for r in (env._stats() for env in envs) if r is not None]
    if log_metric is not None and records:
        scored = [r for r in records if not r.infra_failed] or records
        n = len(scored)
        log_metric("hpcgym/solve_rate", sum(r.solved for r in scored) / n)
        log_metric("hpcgym/unsafe_rate", sum(r.unsafe for r in scored) / n)
        log_metric("hpcgym/steps", sum(len(r.steps) for r in scored) / n)
        log_metric("hpcgym/return", sum(r.total_reward for r in scored) / n)
        log_metric("hpcgym/infra_failed", sum(r.infra_failed for r in records) / len(records))
    pools = {id(b.pool): b.pool for b in (env._backend for env in envs) if isinstance(b, RemoteBackend)}
    if log_metric is not None:
        for pool in pools.values():
            for name, value in pool.metrics().as_dict().items():
                log_metric(name, value)
    return returns
