"""One agent's run of tasks over pooled episodes: what the gym env and the OpenEnv server share.

`TaskSession` owns at most one live episode. `reset` takes a fresh episode from the pool, moves its
clock by a seeded amount and lets the task set up its incident; `step` types one command and asks the
task for a grade, then decides terminated (solved, failed, or the login shell exited) against
truncated (out of steps). The interfaces only turn its `Transition`s into their own types.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpcgym.episode import Episode
from hpcgym.episode.pool import EpisodePool
from hpcgym.errors import HpcgymError, ScenarioError
from hpcgym.interfaces.task import Task, TaskRegistry

# A seeded reset moves the virtual clock forward by up to this much, so that time stamps differ
# between seeds (and agree for one seed) without any scheduled event falling due.
CLOCK_JITTER_S = 3600


def prompt(node: str) -> str:
    """The prompt the agent sees on `node` (root's, in its home directory)."""
    return f"[root@{node} ~]# "


def finalize_text(text: str, max_length: int) -> str:
    """Return `text` with only Basic Multilingual Plane characters and at most `max_length` of them."""
    if not text.isascii():
        text = "".join("\ufffd" if ord(ch) > 0xFFFF or 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in text)
    if len(text) > max_length:
        marker = "\n[... observation cut ...]\n"
        text = text[: max_length - len(marker)] + marker
    return text


@dataclass(frozen=True)
class Transition:
    """What one reset or step gives the agent.

    Attributes:
        observation: the terminal text (at reset: the alert, then the first prompt).
        reward: this step's reward (0 at reset).
        terminated: solved, failed, or the login shell exited.
        truncated: the step budget ran out before that.
        info: exit code, node, flags and reward components (see `TaskSession.step`).
    """

    observation: str
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


class TaskSession:
    """Episodes of registered tasks for one agent, one at a time.

    Args:
        pool: where fresh episodes come from (shared by every session of a process).
        registry: scenario id -> task factory.
        scenarios: the ids a reset draws from when it is given none.
        max_steps: the step budget (None: each task's own).
        max_chars: the longest observation (longer ones are cut, with a note).
    """

    def __init__(
        self,
        pool: EpisodePool,
        registry: TaskRegistry,
        scenarios: Sequence[str] | None = None,
        max_steps: int | None = None,
        max_chars: int = 1 << 20,
    ) -> None:
        self.pool = pool
        self.registry = registry
        self.scenarios = tuple(scenarios) if scenarios is not None else registry.scenario_ids
        if not self.scenarios:
            raise ScenarioError("no scenario to draw from", hint="name at least one scenario id")
        unknown = [scenario for scenario in self.scenarios if scenario not in registry]
        if unknown:
            raise ScenarioError(
                f"unknown scenarios {unknown}", hint=f"choose from: {', '.join(sorted(registry))}"
            )
        self.max_steps = max_steps
        self.max_chars = max_chars
        self.episode: Episode | None = None
        self.task: Task | None = None
        self.scenario: str | None = None
        self.task_seed: int | None = None
        self.steps = 0
        self.budget = 0
        self.done = False
        self.solved = False

    def reset(self, rng: np.random.Generator, scenario: str | None = None) -> Transition:
        """Close the running episode (in the background) and start the next on a fresh cluster.

        Args:
            rng: draws the scenario (unless given), the task's seed and the clock offset.
            scenario: the scenario id to run.

        Raises:
            ScenarioError: `scenario` is not registered.
        """
        if scenario is None:
            scenario = self.scenarios[int(rng.integers(len(self.scenarios)))]
        task = self.registry.make(scenario)
        task_seed = int(rng.integers(2**31))
        clock_offset_s = int(rng.integers(CLOCK_JITTER_S))
        self.discard_episode()
        episode = self.pool.take()
        try:
            episode.controller.advance(clock_offset_s)
            alert = task.reset(episode, task_seed)
        except BaseException:
            self.pool.discard(episode)
            raise
        self.episode, self.task, self.scenario, self.task_seed = episode, task, scenario, task_seed
        self.steps = 0
        self.budget = self.max_steps if self.max_steps is not None else task.max_steps
        self.done = self.solved = False
        observation = finalize_text(f"{alert.rstrip()}\n\n{prompt(episode.current_node)}", self.max_chars)
        return Transition(observation, info=self.info())

    def step(self, command: str) -> Transition:
        """Type `command` as one line at the prompt; grade the result.

        The info holds `command_node` (where it ran), `exit_code`, `timed_out`, `output_truncated`,
        `ended`, `solved`, `failed` and `reward_components`, besides `info()`'s keys.

        Raises:
            HpcgymError: no episode is running (reset first) or it is over.
        """
        if self.episode is None or self.task is None:
            raise HpcgymError("step before reset", hint="reset to start an episode")
        if self.done:
            raise HpcgymError("this episode is over", hint="reset to start the next one")
        node = self.episode.current_node
        result = self.episode.step(command)
        grade = self.task.grade(self.episode, command, result)
        self.steps += 1
        terminated = bool(grade.solved or grade.failed or result.ended)
        truncated = not terminated and self.steps >= self.budget
        self.done = terminated or truncated
        self.solved = bool(grade.solved)
        info = self.info()
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
        observation = finalize_text(result.output, self.max_chars)
        return Transition(observation, float(grade.reward), terminated, truncated, info)

    def info(self) -> dict[str, Any]:
        """Where the episode stands: scenario, seed, node, step, max_steps, now_s."""
        if self.episode is None:
            return {"scenario": None, "seed": None, "node": None, "step": 0, "max_steps": 0, "now_s": None}
        return {
            "scenario": self.scenario,
            "seed": self.task_seed,
            "node": self.episode.current_node,
            "step": self.steps,
            "max_steps": self.budget,
            "now_s": self.episode.controller.clock.now_s,
        }

    def discard_episode(self) -> None:
        """Hand the running episode (if any) back to the pool to be closed in the background."""
        episode, self.episode = self.episode, None
        if episode is not None:
            self.pool.discard(episode)
