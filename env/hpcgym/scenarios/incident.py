"""One graded incident: a fresh episode with a scenario's fault in it, and its grader.

`Incident` is what the gym env, the OpenEnv server, the TRL wrapper and `invoke eval` drive: `alert`
is the first observation, `step(command)` types one command into the agent's real shell and returns
the observation, the step reward, whether the episode terminated (solved, catastrophic, abandoned)
or was truncated (out of steps), and an `info` dict that never names the expected fix.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from hpcgym.episode import DEFAULT_STEP_SECONDS, Episode, StepResult
from hpcgym.errors import ScenarioError
from hpcgym.runtime import Runtime
from hpcgym.scenarios import schema
from hpcgym.scenarios.faults import inject_fault
from hpcgym.scenarios.grade import Grader, Outcome


@dataclass(frozen=True)
class ScenarioGrade:
    """One step's grade in the shape the interfaces' `Task` protocol expects.

    Attributes:
        reward: this step's reward.
        solved: the incident is resolved (terminates the episode).
        failed: catastrophic action or abandoned session (terminates it, unsolved).
        components: the reward so far by component, plus `return` and `unsafe_count`.
    """

    reward: float
    solved: bool
    failed: bool
    components: dict[str, float]
    outcome: Outcome
    unsafe: tuple[str, ...] = ()


class ScenarioTask:
    """A library scenario as a `Task` (see hpcgym.interfaces.task): inject at reset, grade each step.

    Args:
        scenario: a scenario id from the library, or a loaded `Scenario`.
    """

    def __init__(self, scenario: str | schema.Scenario) -> None:
        self.scenario = schema.load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.id = self.scenario.id
        self.max_steps = self.scenario.max_steps
        self.grader: Grader | None = None
        self.params: dict[str, schema.Value] = {}

    def reset(self, episode: Episode, seed: int) -> str:
        """Break `episode` this scenario's way for `seed`; return the alert the agent reads.

        Raises:
            ScenarioError: the variant does not apply, or the fault left nothing to fix.
        """
        self.params = self.scenario.draw_params(seed)
        steps = self.scenario.inject_steps(self.params)
        inject_fault(episode, steps, random.Random(f"{self.id}:{seed}:inject"))
        self.grader = Grader(episode, self.scenario, self.params)
        if self.grader.baseline == len(self.grader.checks):
            raise ScenarioError(
                f"{self.id} seed {seed} is solved before the agent starts",
                hint="the inject steps do not break what the success checks test",
            )
        return schema.render(self.scenario.alert, self.params).strip() + "\n"

    def gold(self) -> list[str]:
        """This variant's gold commands (for the gold policy and tests; never shown to the agent)."""
        return [schema.render(command, self.params) for command in self.scenario.gold]

    def grade(self, episode: Episode, command: str, result: StepResult) -> ScenarioGrade:
        """Grade the state after `command`; see grade.py for the reward components."""
        if self.grader is None:
            raise ScenarioError("grade before reset", hint="call reset(episode, seed) first")
        judgement = self.grader.judge(command, result)
        components = dict(judgement.components)
        components["return"] = self.grader.components.total()
        components["unsafe_count"] = float(len(self.grader.unsafe))
        return ScenarioGrade(
            reward=judgement.reward,
            solved=judgement.outcome is Outcome.SOLVED,
            failed=judgement.outcome in (Outcome.CATASTROPHIC, Outcome.ABANDONED),
            components=components,
            outcome=judgement.outcome,
            unsafe=tuple(judgement.unsafe),
        )


@dataclass(frozen=True)
class IncidentStep:
    """One graded step.

    Attributes:
        result: what the shell showed (see `hpcgym.episode.StepResult`).
        reward: this step's reward (the sum of its components' changes).
        terminated: solved, catastrophic or abandoned; `info["solved"]` tells which.
        truncated: the step budget ran out first.
        info: scenario id, tier, seed, step, outcome, solved, unsafe actions, reward components.
    """

    result: StepResult
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)


class Incident:
    """A scenario's fault in a fresh episode, graded as the agent works.

    Example:
        >>> with Incident(runtime, "hpc_munge", seed=3) as incident:  # doctest: +SKIP
        ...     print(incident.alert)
        ...     step = incident.step("systemctl status munge")

    Args:
        runtime: makes the cluster.
        scenario: a scenario id from the library, or a loaded `Scenario`.
        seed: picks the variant (which node, which typo, ...).
        step_seconds: virtual seconds per command.
        timeout_s: per-command wall-clock limit.
        max_steps: overrides the scenario's step budget.
    """

    def __init__(
        self,
        runtime: Runtime,
        scenario: str | schema.Scenario,
        seed: int,
        *,
        step_seconds: int = DEFAULT_STEP_SECONDS,
        timeout_s: float | None = None,
        max_steps: int | None = None,
    ) -> None:
        self.task = ScenarioTask(scenario)
        self.scenario = self.task.scenario
        self.seed = seed
        self.max_steps = max_steps or self.scenario.max_steps
        self.steps = 0
        self.outcome = Outcome.RUNNING
        self.episode = Episode(runtime, step_seconds=step_seconds, timeout_s=timeout_s)
        try:
            self.alert = self.task.reset(self.episode, seed)
        except BaseException:
            self.episode.close()
            raise

    @property
    def gold(self) -> list[str]:
        """The scenario's gold commands for this seed (for the gold policy and tests, never the agent)."""
        return self.task.gold()

    @property
    def grader(self) -> Grader:
        assert self.task.grader is not None
        return self.task.grader

    @property
    def done(self) -> bool:
        return self.outcome.is_terminal or self.steps >= self.max_steps

    def info(self) -> dict[str, Any]:
        """What the agent's trainer may see: never the checks, their arguments or the gold."""
        grader = self.grader
        return {
            "scenario": self.scenario.id,
            "tier": self.scenario.tier,
            "seed": self.seed,
            "step": self.steps,
            "outcome": self.outcome.value,
            "solved": self.outcome is Outcome.SOLVED,
            "unsafe": list(grader.unsafe),
            "reward_components": grader.components.__dict__.copy(),
            "return": grader.components.total(),
        }

    def step(self, command: str) -> IncidentStep:
        """Type `command` at the prompt and grade the result.

        Raises:
            ScenarioError: the episode already ended (terminated or truncated).
        """
        if self.done:
            raise ScenarioError("this incident has ended", hint="start a new Incident")
        result = self.episode.step(command)
        self.steps += 1
        grade = self.task.grade(self.episode, command, result)
        self.outcome = grade.outcome
        terminated = grade.outcome.is_terminal
        truncated = not terminated and self.steps >= self.max_steps
        if truncated:
            self.outcome = Outcome.TRUNCATED
        info = self.info()
        info["step_unsafe"] = list(grade.unsafe)
        return IncidentStep(result, grade.reward, terminated, truncated, info)

    def close(self) -> None:
        """Free the episode's cluster."""
        self.episode.close()

    def __enter__(self) -> Incident:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__: Sequence[str] = ("Incident", "IncidentStep", "ScenarioGrade", "ScenarioTask")
