"""One graded incident: the episode loop that every entry point drives.

`Incident` is the one implementation of reset, step, termination and seeding. `invoke eval/gold`,
the gym env, the OpenEnv server, the TRL wrapper and `hpcgym exec` are views of it: `alert` is the
first observation, `step(command)` types one command into the agent's real shell and returns the
observation, the step reward, whether the episode terminated (solved, catastrophic, abandoned, or
the login shell exited) or was truncated (out of steps), and an `info` dict that never names the
expected fix.

The seed the caller gives is the episode's seed, reported as `info["seed"]`; everything derived
from it (the scenario's parameters, the clock offset, the fault's own randomness) is derived here
and in `schema.Scenario.draw_params`, nowhere else.

A `Task` is what an incident is about: it breaks a fresh episode at reset and grades each step.
`ScenarioTask` wraps a library scenario; the interfaces add `explore` (hpcgym.interfaces.task).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from hpcgym.closing import Closing
from hpcgym.episode import DEFAULT_STEP_SECONDS, Episode, StepResult
from hpcgym.episode.site import Site
from hpcgym.errors import ScenarioError
from hpcgym.runtime import Runtime
from hpcgym.scenarios import schema
from hpcgym.scenarios.difficulty import CHAIN_STEPS, Difficulty, alert_text, chain, plant_red_herrings
from hpcgym.scenarios.faults import disguise_injected_files, inject_fault
from hpcgym.scenarios.grade import Grader, Outcome

# A reset moves the virtual clock forward by up to this much (drawn from the seed), so that time stamps
# differ between seeds and agree for one seed, without any scheduled event falling due.
CLOCK_JITTER_S = 3600
# The keys of `reward_components` that are totals, not components (the eval report leaves them out).
TOTAL_KEYS = ("return", "unsafe_count")


def finalize_clock_offset(task_id: str, seed: int) -> int:
    """The virtual seconds an episode of `task_id` at `seed` starts after the clock's first instant."""
    return random.Random(f"{task_id}:{seed}:clock").randrange(CLOCK_JITTER_S)


# The cluster the images define (images/common/files/etc/slurm/slurm.conf), for rendering a variant
# without one; an episode renders from its own topology.
LOGIN_NODE = "login01"
COMPUTE_NODES = ("compute-01", "compute-02", "compute-03", "compute-04")


def prompt(node: str, user: str = "root") -> str:
    """The prompt the agent sees on `node` as `user` (bash's default PS1 at home: `#` for root)."""
    return f"[{user}@{node} ~]{'#' if user == 'root' else '$'} "


def first_observation(alert: str, node: str = LOGIN_NODE) -> str:
    """What every entry point shows at reset: the alert, then the prompt of the node the shell is on."""
    return f"{alert.rstrip()}\n\n{prompt(node)}"


def variant_params(
    scenario: schema.Scenario, seed: int, login: str = LOGIN_NODE, computes: Sequence[str] = COMPUTE_NODES
) -> tuple[dict[str, schema.Value], Site]:
    """The parameters of (scenario, seed), the episode's site among them as `site`, and the site."""
    params = scenario.draw_params(seed)
    keep = scenario.nodes_in_use(params, list(computes))
    site = Site.draw(seed, login, list(computes), keep_in_service=keep)
    return {**params, "site": site.params()}, site


def gold_commands(scenario: str | schema.Scenario, seed: int) -> list[str]:
    """The gold commands of `scenario` at `seed`, rendered as the episode would (no cluster needed)."""
    loaded = schema.load_scenario(scenario) if isinstance(scenario, str) else scenario
    params, _ = variant_params(loaded, seed)
    return [schema.render(command, params) for command in loaded.gold]


class GradeLike(Protocol):
    """What a task's `grade` returns (`Grade`, `ScenarioGrade` or any object with these attributes)."""

    @property
    def reward(self) -> float: ...
    @property
    def solved(self) -> bool: ...
    @property
    def failed(self) -> bool: ...
    @property
    def components(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class Grade:
    """The grade of one step.

    Attributes:
        reward: this step's reward.
        solved: the incident is resolved (the episode terminates).
        failed: the agent did something unsafe or unrecoverable (the episode terminates, unsolved).
        components: named parts of the reward (and grader health checks as 0/1), for `info`.
    """

    reward: float = 0.0
    solved: bool = False
    failed: bool = False
    components: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """One kind of episode: sets up an incident, then grades each command.

    A registry holds factories, and each incident makes its own task object, so a task may keep
    per-episode state on itself between `reset` and `grade`.

    Attributes:
        id: the scenario id (`hpc_outage`, ...), also the registry key.
        max_steps: the step budget; reaching it truncates the episode.
    """

    id: str
    max_steps: int

    def reset(self, episode: Episode, seed: int) -> str:
        """Break a fresh episode the scenario's way (deterministic in `seed`); return the alert text."""
        ...

    def grade(self, episode: Episode, command: str, result: StepResult) -> GradeLike:
        """Grade the episode's state after `command` produced `result`."""
        ...


@dataclass(frozen=True)
class ScenarioGrade:
    """One step's grade of a library scenario (a `GradeLike` that also says the outcome and why unsafe).

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
    """A library scenario as a `Task`: inject at reset, grade each step.

    Args:
        scenario: a scenario id from the library, or a loaded `Scenario`.
        difficulty: the knobs (see `hpcgym.scenarios.difficulty`); the default plays the file as
            written. Chained faults are drawn at reset, from the seed.
    """

    def __init__(self, scenario: str | schema.Scenario, difficulty: Difficulty | None = None) -> None:
        self.written = schema.load_scenario(scenario) if isinstance(scenario, str) else scenario
        self.scenario = self.written
        # As asked for, and as played (a scenario may have room for fewer chained faults).
        self.requested = difficulty or Difficulty()
        self.difficulty = self.requested
        self.id = self.scenario.id
        self.max_steps = self.scenario.max_steps + CHAIN_STEPS * self.requested.chained
        self.grader: Grader | None = None
        self.params: dict[str, schema.Value] = {}

    def reset(self, episode: Episode, seed: int) -> str:
        """Break `episode` this scenario's way for `seed`; return the alert the agent reads.

        Raises:
            ScenarioError: the variant does not apply, or the fault left nothing to fix.
        """
        self.scenario, chained = chain(self.written, seed, self.requested.chained)
        self.difficulty = self.requested.model_copy(update={"chained": chained})
        computes = [name for name in episode.cluster.nodes if name != episode.services.controller_host]
        self.params, site = variant_params(self.scenario, seed, episode.services.controller_host, computes)
        episode.apply_site(site)
        steps = self.scenario.inject_steps(self.params)
        inject_fault(episode, steps, random.Random(f"{self.id}:{seed}:inject"))
        planted = plant_red_herrings(episode, self.scenario, self.params, seed, self.difficulty.red_herrings)
        if planted:
            disguise_injected_files(episode, frozenset(planted))
        episode.submit_site_jobs(site)
        self.grader = Grader(episode, self.scenario, self.params, self.max_steps)
        if self.grader.baseline == len(self.grader.checks):
            raise ScenarioError(
                f"{self.id} seed {seed} is solved before the agent starts",
                hint="the inject steps do not break what the success checks test",
            )
        return alert_text(self.scenario, self.params, self.difficulty)

    def gold(self) -> list[str]:
        """This variant's gold commands (for the gold policy and tests; never shown to the agent)."""
        return [schema.render(command, self.params) for command in self.scenario.gold]

    def grade(self, episode: Episode, command: str, result: StepResult) -> ScenarioGrade:
        """Grade the state after `command`; see grade.py for the reward components."""
        if self.grader is None:
            raise ScenarioError("grade before reset", hint="call reset(episode, seed) first")
        judgement = self.grader.judge(command, result)
        return ScenarioGrade(
            reward=judgement.reward,
            solved=judgement.outcome is Outcome.SOLVED,
            failed=judgement.outcome.is_failure,
            components=self.components(),
            outcome=judgement.outcome,
            unsafe=tuple(judgement.unsafe),
        )

    def components(self) -> dict[str, float]:
        """The reward so far by component, plus `return` and `unsafe_count`."""
        if self.grader is None:
            raise ScenarioError("components before reset", hint="call reset(episode, seed) first")
        components = self.grader.components.__dict__.copy()
        components["return"] = self.grader.components.total()
        components["unsafe_count"] = float(len(self.grader.unsafe))
        return components


@dataclass(frozen=True)
class IncidentStep:
    """One graded step.

    Attributes:
        result: what the shell showed (see `hpcgym.episode.StepResult`).
        reward: this step's reward (the sum of its components' changes).
        terminated: solved, catastrophic or abandoned (the login shell exited); `info` tells which.
        truncated: the step budget ran out first.
        info: `Incident.info()` plus this step's `command_node`, `exit_code`, `timed_out`,
            `output_truncated`, `ended` and `step_unsafe`.
    """

    result: StepResult
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any] = field(default_factory=dict)


def finalize_outcome(grade: GradeLike, result: StepResult) -> Outcome:
    """How the episode stands after a step that `grade` judged."""
    if isinstance(grade, ScenarioGrade):
        return grade.outcome
    if grade.solved:
        return Outcome.SOLVED
    if grade.failed:
        return Outcome.CATASTROPHIC
    if result.ended:
        return Outcome.ABANDONED
    return Outcome.RUNNING


class Incident(Closing):
    """A task's fault in a fresh episode, graded as the agent works: the one episode loop.

    Example:
        >>> with Incident(runtime, "hpc_munge", seed=3) as incident:  # doctest: +SKIP
        ...     print(incident.alert)
        ...     step = incident.step("systemctl status munge")

    Args:
        runtime: makes the cluster (unused when `episode` is given).
        scenario: a scenario id from the library, a loaded `Scenario`, or any `Task`.
        seed: the episode's seed: picks the variant (which node, which typo, ...) and the clock offset.
        episode: a fresh episode to use (from a pool) instead of making one; the incident owns it
            once made (`close` closes it), and a failed start leaves it to the caller.
        step_seconds: virtual seconds per command (when the incident makes its episode).
        timeout_s: per-command wall-clock limit (when the incident makes its episode).
        max_steps: overrides the task's step budget.
        difficulty: the knobs a library scenario is played at (default: as written).
    """

    def __init__(
        self,
        runtime: Runtime | None,
        scenario: str | schema.Scenario | Task,
        seed: int,
        *,
        episode: Episode | None = None,
        step_seconds: int = DEFAULT_STEP_SECONDS,
        timeout_s: float | None = None,
        max_steps: int | None = None,
        difficulty: Difficulty | None = None,
    ) -> None:
        if isinstance(scenario, ScenarioTask) and difficulty is not None and difficulty != scenario.requested:
            scenario = ScenarioTask(scenario.written, difficulty)
        elif not isinstance(scenario, str | schema.Scenario | ScenarioTask) and difficulty not in (
            None,
            Difficulty(),
        ):
            raise ScenarioError(
                f"{scenario.id} is not a library scenario", hint="difficulty knobs apply to library scenarios"
            )
        self.task: Task = (
            ScenarioTask(scenario, difficulty) if isinstance(scenario, str | schema.Scenario) else scenario
        )
        self.scenario: schema.Scenario | None = (
            self.task.scenario if isinstance(self.task, ScenarioTask) else None
        )
        self.seed = seed
        self.max_steps = max_steps or self.task.max_steps
        self.task.max_steps = self.max_steps
        self.steps = 0
        self.outcome = Outcome.RUNNING
        self.total_reward = 0.0
        if episode is None:
            if runtime is None:
                raise ScenarioError("an incident needs a runtime or an episode", hint="pass one of them")
            self.episode = Episode(runtime, step_seconds=step_seconds, timeout_s=timeout_s)
        else:
            self.episode = episode
        try:
            self.episode.controller.advance(finalize_clock_offset(self.task.id, seed))
            self.alert = self.task.reset(self.episode, seed)
        except BaseException:
            if episode is None:
                self.episode.close()
            raise
        self.components: dict[str, float] = (
            self.task.components() if isinstance(self.task, ScenarioTask) else {}
        )

    @property
    def first_observation(self) -> str:
        """The alert and the first prompt: the observation of reset, in every entry point."""
        return first_observation(self.alert, self.episode.current_node)

    @property
    def difficulty(self) -> Difficulty:
        """The knobs as this episode plays them (see `hpcgym.scenarios.difficulty`)."""
        return self.task.difficulty if isinstance(self.task, ScenarioTask) else Difficulty()

    @property
    def id(self) -> str:
        """The scenario (task) id."""
        return self.task.id

    @property
    def tier(self) -> int | None:
        """The scenario's tier (None for a task that is not a library scenario)."""
        return self.scenario.tier if self.scenario is not None else None

    @property
    def gold(self) -> list[str]:
        """The scenario's gold commands for this seed (for the gold policy and tests, never the agent)."""
        if not isinstance(self.task, ScenarioTask):
            raise ScenarioError(f"{self.task.id} has no gold commands", hint="only library scenarios do")
        return self.task.gold()

    @property
    def grader(self) -> Grader:
        assert isinstance(self.task, ScenarioTask) and self.task.grader is not None
        return self.task.grader

    @property
    def done(self) -> bool:
        return self.outcome.is_terminal or self.steps >= self.max_steps

    @property
    def solved(self) -> bool:
        return self.outcome is Outcome.SOLVED

    def info(self) -> dict[str, Any]:
        """Where the episode stands; what the agent's trainer may see: never the checks or the gold.

        Keys: `scenario`, `tier`, `seed`, `difficulty` (the knobs as played, as `Difficulty.parse`
        reads them), `node` (where the shell now is), `user` (whose shell it is), `step`,
        `max_steps`, `now_s` (virtual time),
        `outcome`, `solved`, `failed`, `unsafe` (every unsafe action so far, why),
        `reward_components`, `return` and `state_score` (the progress potential phi after the last
        step: the share of the success condition that holds, in order, 0 at the start, 1 solved).
        """
        scenario_task = isinstance(self.task, ScenarioTask)
        return {
            "scenario": self.task.id,
            "tier": self.tier,
            "seed": self.seed,
            "difficulty": self.difficulty.spec(),
            "node": self.episode.current_node,
            "user": self.episode.current_user,
            "step": self.steps,
            "max_steps": self.max_steps,
            "now_s": self.episode.controller.clock.now_s,
            "outcome": self.outcome.value,
            "solved": self.outcome is Outcome.SOLVED,
            "failed": self.outcome.is_failure,
            "unsafe": list(self.grader.unsafe) if scenario_task else [],
            "reward_components": dict(self.components),
            "return": self.grader.components.total() if scenario_task else self.total_reward,
            "state_score": self.grader.state_score if scenario_task else 0.0,
        }

    def step(self, command: str) -> IncidentStep:
        """Type `command` at the prompt and grade the result.

        Raises:
            ScenarioError: the episode is over (terminated or truncated).
        """
        if self.done:
            raise ScenarioError("this episode is over", hint="reset to start the next one")
        node = self.episode.current_node
        result = self.episode.step(command)
        self.steps += 1
        grade = self.task.grade(self.episode, command, result)
        self.outcome = finalize_outcome(grade, result)
        self.components = dict(grade.components)
        self.total_reward += float(grade.reward)
        terminated = self.outcome.is_terminal
        truncated = not terminated and self.steps >= self.max_steps
        if truncated:
            self.outcome = Outcome.TRUNCATED
        info = self.info()
        info.update(
            command_node=node,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            output_truncated=result.truncated,
            ended=result.ended,
            step_unsafe=list(grade.unsafe) if isinstance(grade, ScenarioGrade) else [],
        )
        return IncidentStep(result, float(grade.reward), terminated, truncated, info)

    def finish(self) -> float:
        """The agent stops here: an unfinished episode ends unsolved, charged as any unsolved end is.

        Returns the reward of ending (0 when the episode was already over). Every entry point calls
        this when its policy stops, so stopping early never scores better than running out of steps.
        """
        if self.done:
            return 0.0
        reward = 0.0
        if isinstance(self.task, ScenarioTask) and self.task.grader is not None:
            reward = self.task.grader.stop()
            self.components = self.task.components()
        self.outcome = Outcome.STOPPED
        self.total_reward += reward
        return reward

    def close(self) -> None:
        """Free the episode's cluster."""
        self.episode.close()


__all__: Sequence[str] = (
    "CLOCK_JITTER_S",
    "Grade",
    "GradeLike",
    "Incident",
    "IncidentStep",
    "ScenarioGrade",
    "ScenarioTask",
    "Task",
    "gold_commands",
)
