"""`EnterpriseHPC-v0`: the cluster as a gymnasium env whose actions and observations are text.

A thin layer over `Episode`: an action is one command line typed at the agent's prompt, an
observation is what the terminal printed. The task (`interfaces/task.py`) sets up the incident and
grades every step; this module only translates. Registered on `import hpcgym` with a lazy entry point.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, SupportsFloat

import gymnasium
from gymnasium import spaces

from hpcgym.episode import DEFAULT_STEP_SECONDS, Episode
from hpcgym.episode.pool import EpisodeOptions, EpisodePool
from hpcgym.errors import HpcgymError, ScenarioError
from hpcgym.interfaces.task import Task, TaskRegistry, default_registry
from hpcgym.runtime import Runtime

ENV_ID = "EnterpriseHPC-v0"
DEFAULT_IMAGES = Path(os.environ.get("HPCGYM_IMAGES", "build/images"))
# A seeded reset moves the virtual clock forward by up to this much, so that time stamps differ
# between seeds (and agree for one seed) without any scheduled event falling due.
CLOCK_JITTER_S = 3600

# Every character of the Basic Multilingual Plane: terminal output holds whitespace, punctuation,
# box drawing and the U+FFFD that replaces undecodable bytes, and gymnasium's default charset
# (alphanumerics) rejects every shell prompt. Characters beyond it are shown as U+FFFD.
CHARSET = "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF)


def finalize_text(text: str, max_length: int) -> str:
    """Return `text` as an element of the text spaces: BMP characters only, at most `max_length`."""
    if not text.isascii() and any(ord(ch) > 0xFFFF or 0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        text = "".join("\ufffd" if ord(ch) > 0xFFFF or 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    if len(text) > max_length:
        marker = "\n[... observation cut ...]\n"
        text = text[: max_length - len(marker)] + marker
    return text


def prompt(node: str) -> str:
    """The prompt the agent sees on `node` (root's, in its home directory)."""
    return f"[root@{node} ~]# "


class EnterpriseHPCEnv(gymnasium.Env[str, str]):
    """A small Rocky Linux Slurm cluster in trouble; the agent types shell commands to fix it.

    Each reset hands over a fresh, isolated cluster (a login node and four compute nodes) with one
    incident set up by the chosen scenario. Each step types one command line into the agent's shell
    and returns what the terminal showed.

    Example:
        >>> import gymnasium, hpcgym  # doctest: +SKIP
        >>> env = gymnasium.make("EnterpriseHPC-v0", scenarios=["explore"], max_steps=20)
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step("sinfo")
        >>> env.close()

    Args:
        scenarios: scenario ids to draw from at reset (default: every registered scenario).
        max_steps: the step budget (default: the scenario's own); reaching it truncates.
        images_dir: the built images (default `$HPCGYM_IMAGES` or `build/images`), used when no
            `runtime` is given.
        runtime: a runtime to share with other envs in this process (not closed by `close`).
        pool_size: how many ready episodes to keep, so that a reset is a hand-off.
        step_seconds: virtual seconds per step.
        timeout_s: wall-clock limit per command (the agent sees a timeout, not an error).
        registry: scenario id -> task factory (default: `default_registry()`).
        render_mode: None or "ansi".

    Observation:
        At reset, the alert then the first prompt; after a step, the command's output (stdout and
        stderr interleaved, at most `max_output_bytes` kept, head and tail).

    Info:
        `scenario`, `seed`, `node` (where the shell now is), `step`, `now_s` (virtual time), and after
        a step also `exit_code`, `timed_out`, `output_truncated`, `ended` (the login shell exited),
        `solved`, `failed` and `reward_components`.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        scenarios: Sequence[str] | None = None,
        max_steps: int | None = None,
        *,
        images_dir: Path | str | None = None,
        runtime: Runtime | None = None,
        pool_size: int = 1,
        step_seconds: int = DEFAULT_STEP_SECONDS,
        timeout_s: float | None = None,
        registry: TaskRegistry | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'ansi', not {render_mode!r}")
        self.render_mode = render_mode
        self.registry = registry or default_registry()
        self.scenarios = tuple(scenarios) if scenarios is not None else self.registry.scenario_ids
        if not self.scenarios:
            raise ValueError("scenarios must name at least one scenario")
        unknown = [scenario for scenario in self.scenarios if scenario not in self.registry]
        if unknown:
            raise ScenarioError(
                f"unknown scenarios {unknown}", hint=f"choose from: {', '.join(sorted(self.registry))}"
            )
        self.max_steps = max_steps
        self._owns_runtime = runtime is None
        self.runtime = runtime or Runtime(Path(images_dir) if images_dir is not None else DEFAULT_IMAGES)
        max_chars = self.runtime.config.max_output_bytes + 256  # head, tail and the cut/timeout notes
        self.observation_space = spaces.Text(max_length=max_chars, min_length=0, charset=CHARSET)
        self.action_space = spaces.Text(max_length=max_chars, min_length=0, charset=CHARSET)
        try:
            self.pool = EpisodePool(
                self.runtime, pool_size, EpisodeOptions(step_seconds=step_seconds, timeout_s=timeout_s)
            )
        except BaseException:
            if self._owns_runtime:
                self.runtime.close()
            raise
        self.episode: Episode | None = None
        self.task: Task | None = None
        self.scenario: str | None = None
        self.task_seed: int | None = None
        self.steps = 0
        self._budget = 0
        self._done = False
        self._transcript: list[str] = []

    # --- gymnasium's API ------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start a new episode on a fresh cluster.

        Args:
            seed: seeds the scenario choice, the scenario's own randomness and the virtual clock.
            options: `{"scenario": ID}` picks the scenario instead of drawing one.

        Returns:
            The alert followed by the first prompt, and `info`.
        """
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"scenario"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; the only one is 'scenario'")
        scenario = options.get("scenario")
        if scenario is None:
            scenario = self.scenarios[int(self.np_random.integers(len(self.scenarios)))]
        task = self.registry.make(scenario)
        task_seed = int(self.np_random.integers(2**31))
        clock_offset_s = int(self.np_random.integers(CLOCK_JITTER_S))
        self._close_episode()
        episode = self.pool.take()
        try:
            episode.controller.advance(clock_offset_s)
            alert = task.reset(episode, task_seed)
        except BaseException:
            episode.close()
            raise
        self.episode, self.task, self.scenario, self.task_seed = episode, task, scenario, task_seed
        self.steps = 0
        self._budget = self.max_steps if self.max_steps is not None else task.max_steps
        self._done = False
        observation = finalize_text(
            f"{alert.rstrip()}\n\n{prompt(episode.current_node)}", self.observation_space.max_length
        )
        self._transcript = [observation]
        return observation, self._info()

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        """Type `action` as one command line at the prompt and return what the terminal showed.

        A failing or timed-out command is an observation (see `info`); only a broken cluster raises.

        Returns:
            observation, reward, terminated (solved, failed, or the login shell exited), truncated
            (the step budget ran out first), info.
        """
        if self.episode is None or self.task is None:
            raise HpcgymError("step() before reset()", hint="call env.reset() to start an episode")
        if self._done:
            raise HpcgymError("this episode is over", hint="call env.reset() to start the next one")
        node = self.episode.current_node
        result = self.episode.step(action)
        grade = self.task.grade(self.episode, action, result)
        self.steps += 1
        terminated = bool(grade.solved or grade.failed or result.ended)
        truncated = not terminated and self.steps >= self._budget
        self._done = terminated or truncated
        observation = finalize_text(result.output, self.observation_space.max_length)
        self._transcript.append(f"{action}\n{observation}")
        if not result.ended:
            self._transcript.append(prompt(self.episode.current_node))
        info = self._info()
        info.update(
            command_node=node,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            output_truncated=result.truncated,
            ended=result.ended,
            solved=bool(grade.solved),
            failed=bool(grade.failed),
            reward_components=dict(grade.components),
        )
        return observation, float(grade.reward), terminated, truncated, info

    def render(self) -> str | None:
        """The episode so far as the terminal showed it (for render_mode "ansi")."""
        if self.render_mode != "ansi":
            return None
        return "".join(self._transcript)

    def close(self) -> None:
        """Close the current episode, the pool and (if this env made it) the runtime."""
        pool = getattr(self, "pool", None)
        if pool is not None:
            self._close_episode()
            pool.close()
        if getattr(self, "_owns_runtime", False):
            self.runtime.close()
            self._owns_runtime = False
        super().close()

    # --- helpers --------------------------------------------------------------------------------

    def _info(self) -> dict[str, Any]:
        assert self.episode is not None
        return {
            "scenario": self.scenario,
            "seed": self.task_seed,
            "node": self.episode.current_node,
            "step": self.steps,
            "max_steps": self._budget,
            "now_s": self.episode.controller.clock.now_s,
        }

    def _close_episode(self) -> None:
        episode, self.episode = getattr(self, "episode", None), None
        if episode is not None:
            self.pool.discard(episode)
