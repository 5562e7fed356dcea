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
        self.scenario = schema.load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.seed = seed
        self.params = self.scenario.draw_params(seed)
        self.max_steps = max_steps or self.scenario.max_steps
        self.alert = schema.render(self.scenario.alert, self.params).strip() + "\n"
        self.steps = 0
        self.episode = Episode(runtime, step_seconds=step_seconds, timeout_s=timeout_s)
        try:
            steps = self.scenario.inject_steps(self.params)
            inject_fault(self.episode, steps, random.Random(f"{self.scenario.id}:{seed}:inject"))
            self.grader = Grader(self.episode, self.scenario, self.params)
            if self.grader.baseline == len(self.grader.checks):
                raise ScenarioError(
                    f"{self.scenario.id} seed {seed} is solved before the agent starts",
                    hint="the inject steps do not break what the success checks test",
                )
        except BaseException:
            self.episode.close()
            raise

    @property
    def gold(self) -> list[str]:
        """The scenario's gold commands for this seed (for the gold policy and tests, never the agent)."""
        return [schema.render(command, self.params) for command in self.scenario.gold]

    @property
    def outcome(self) -> Outcome:
        return self.grader.outcome

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
            "outcome": grader.outcome.value,
            "solved": grader.outcome is Outcome.SOLVED,
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
        judgement = self.grader.judge(command, result)
        terminated = judgement.outcome.is_terminal
        truncated = not terminated and self.steps >= self.max_steps
        if truncated:
            self.grader.outcome = Outcome.TRUNCATED
        info = self.info()
        info["step_unsafe"] = judgement.unsafe
        return IncidentStep(result, judgement.reward, terminated, truncated, info)

    def close(self) -> None:
        """Free the episode's cluster."""
        self.episode.close()

    def __enter__(self) -> Incident:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


__all__: Sequence[str] = ("Incident", "IncidentStep")
