"""One agent's run of tasks over pooled episodes: what the gym env, the OpenEnv server and TRL share.

`TaskSession` owns at most one live `Incident` (the one episode loop, hpcgym.scenarios.incident).
`reset(seed, scenario)` takes a fresh episode from the pool and starts the incident on it with the
caller's seed; `step` types one command through it. Termination, truncation, seeding and `info` are
the incident's; this module only adds the first prompt, caps the text and turns steps into
`Transition`s, which the interfaces turn into their own types.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpcgym.episode import Episode
from hpcgym.episode.pool import EpisodePool
from hpcgym.errors import ControllerError, HpcgymError, SandboxError, ScenarioError
from hpcgym.interfaces.task import TaskRegistry
from hpcgym.scenarios.difficulty import Difficulty
from hpcgym.scenarios.incident import Incident, prompt

__all__ = [
    "INFRA_ERRORS",
    "TaskSession",
    "Transition",
    "draw_seed",
    "finalize_infra_reason",
    "finalize_text",
    "prompt",
]
from hpcgym.scenarios.schema import Seeds

# Failures of the infrastructure, never of the agent: the episode is discarded, never scored.
INFRA_ERRORS = (
    SandboxError,
    ControllerError,
    OSError,
)  # OSError: the host's (ENOSPC, EMFILE), never the agent's


def finalize_infra_reason(error: BaseException) -> str:
    """The one-line reason an infrastructure failure is reported by (`info["infra_failure"]`)."""
    message = error.message if isinstance(error, HpcgymError) else str(error)
    return " ".join(f"{type(error).__name__}: {message}".split())[:300]


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
        info: `Incident.info()`, after a step with the step's keys (see `Incident.step`).
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
    """Episodes of registered tasks for one agent, one at a time: a view of one `Incident`.

    Reset, stepping, termination and seeding are `Incident`'s; this class takes the episode from the
    pool, picks the scenario when none is given, adds the first prompt to the alert and caps the text.

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
        self.incident: Incident | None = None
        # The last episode's infrastructure failure (one line), and how many this session has had.
        self.infra_failure: str | None = None
        self.infra_failures = 0

    @property
    def episode(self) -> Episode | None:
        return self.incident.episode if self.incident is not None else None

    @property
    def steps(self) -> int:
        return self.incident.steps if self.incident is not None else 0

    @property
    def done(self) -> bool:
        return self.incident.done if self.incident is not None else False

    @property
    def solved(self) -> bool:
        return self.incident.solved if self.incident is not None else False

    def choose_scenario(self, seed: int) -> str:
        """The scenario a reset at `seed` plays when it is given none (one of `scenarios`)."""
        return self.scenarios[int(np.random.default_rng(seed).integers(len(self.scenarios)))]

    def reset(
        self,
        seed: int | None = None,
        scenario: str | None = None,
        *,
        max_steps: int | None = None,
        difficulty: Difficulty | Mapping[str, Any] | str | None = None,
    ) -> Transition:
        """Close the running episode (in the background) and start the next on a fresh cluster.

        Args:
            seed: the episode's seed, reported as `info["seed"]` (None: one drawn from the train
                range); with no `scenario`, it also picks the scenario.
            scenario: the scenario id to run.
            max_steps: this episode's step budget (None: the session's, else the task's own).
            difficulty: the knobs (`hpcgym.scenarios.difficulty`; a mapping or `knob=value,...`).

        Raises:
            ScenarioError: `scenario` is not registered.
        """
        if seed is None:
            seed = draw_seed(np.random.default_rng())
        if scenario is None:
            scenario = self.choose_scenario(seed)
        chosen = Difficulty.parse(difficulty)
        task = self.registry.make(scenario)
        self.discard_episode()
        self.infra_failure = None
        try:
            episode = self.pool.take()
        except INFRA_ERRORS as e:
            raise self._lost(e) from None
        try:
            incident = Incident(
                None, task, seed, episode=episode, max_steps=max_steps or self.max_steps, difficulty=chosen
            )
        except INFRA_ERRORS as e:
            self.pool.discard(episode)
            raise self._lost(e) from None
        except BaseException:
            self.pool.discard(episode)
            raise
        self.incident = incident
        return Transition(
            finalize_text(incident.first_observation, self.max_chars),
            info={**incident.info(), "infra_failure": None},
        )

    def step(self, command: str) -> Transition:
        """Type `command` as one line at the prompt; grade the result (see `Incident.step` for `info`).

        Raises:
            HpcgymError: no episode is running (reset first) or it is over.
        """
        if self.incident is None:
            raise HpcgymError("step before reset", hint="reset to start an episode")
        if self.incident.done:
            raise HpcgymError("this episode is over", hint="reset to start the next one")
        refuse_untypable(command)
        try:
            step = self.incident.step(command)
        except INFRA_ERRORS as e:
            raise self._lost(e) from None
        observation = finalize_text(step.result.output, self.max_chars)
        info = {**step.info, "infra_failure": None}
        return Transition(observation, step.reward, step.terminated, step.truncated, info)

    def finish(self) -> Transition:
        """The agent stops: the episode ends here, charged as any unsolved end (see `Incident.finish`).

        Raises:
            HpcgymError: no episode is running (reset first).
        """
        if self.incident is None:
            raise HpcgymError("stop before reset", hint="reset to start an episode")
        try:
            reward = self.incident.finish()
        except INFRA_ERRORS as e:
            raise self._lost(e) from None
        info = self.incident.info()
        return Transition("", reward, terminated=True, truncated=False, info=info)

    def info(self) -> dict[str, Any]:
        """Where the episode stands (`Incident.info()`); None values before the first reset."""
        if self.incident is None:
            return {
                "scenario": None,
                "seed": None,
                "node": None,
                "user": None,
                "step": 0,
                "max_steps": 0,
                "now_s": None,
                "infra_failure": self.infra_failure,
            }
        return {**self.incident.info(), "infra_failure": None}

    def _lost(self, error: HpcgymError | OSError) -> HpcgymError:
        # One place for every entry point: the episode is closed now (in the background, so that
        # nothing of it stays on the host), counted, and the same error goes on with a one-line
        # message, for gym to raise, the OpenEnv server to send as its error frame and TRL to mask.
        self.infra_failure = finalize_infra_reason(error)
        self.infra_failures += 1
        self.discard_episode()
        # No hint: the message stays one line wherever it is shown (an error frame, a log line).
        message = f"infrastructure failure, episode discarded: {self.infra_failure}"
        try:
            lost = type(error)(message) if isinstance(error, HpcgymError) else SandboxError(message)
        except TypeError:  # a subclass with a constructor of its own
            lost = (ControllerError if isinstance(error, ControllerError) else SandboxError)(message)
        lost.__cause__ = error
        return lost

    def discard_episode(self) -> None:
        """Hand the running episode (if any) back to the pool to be closed in the background."""
        incident, self.incident = self.incident, None
        if incident is not None:
            self.pool.discard(incident.episode)


def draw_seed(rng: np.random.Generator) -> int:
    """A seed from the train range, for a reset that is given none."""
    low, high = Seeds().train
    return int(rng.integers(low, high))


def refuse_untypable(command: str) -> None:
    """A command must be text a terminal can carry: an unpaired surrogate has no UTF-8 bytes.

    JSON and Python strings can hold one (a lone U+D800 from a JSON escape), so every entry point
    refuses it here, before it reaches the shell; the episode goes on as if the step was never asked.
    """
    try:
        command.encode("utf-8")
    except UnicodeEncodeError as e:
        char = command[e.start]
        raise HpcgymError(
            f"the command holds an unpaired surrogate (U+{ord(char):04X} at character {e.start}), "
            "which is not text",
            hint="send the command as valid Unicode text",
        ) from None
