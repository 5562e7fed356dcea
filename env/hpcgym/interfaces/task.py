"""What an interface needs from a scenario: an alert at the start, a grade after every command.

The interfaces (gym env, OpenEnv server) only translate; what an episode is *about* comes from a
`Task`: it sets up an incident in a fresh `Episode` and grades each agent command, and the one
episode loop (`hpcgym.scenarios.incident.Incident`) drives it. The `Task` protocol and `Grade` live
there, next to that loop, and are re-exported here; the scenario library provides the real tasks and
never imports this module (imports point downstream only). One built-in task, `explore`, needs no
scenario: the healthy cluster, reward 0, never solved.

Scenario ids are looked up in `TaskRegistry`; `default_registry()` holds `explore` plus every task
that `hpcgym.scenarios.TASKS` (a mapping of scenario id to a zero-argument factory) declares.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping

from hpcgym.episode import Episode, StepResult
from hpcgym.errors import ScenarioError
from hpcgym.scenarios.incident import Grade, GradeLike, Task

SCENARIOS_MODULE = "hpcgym.scenarios"
EXPLORE = "explore"


class ExploreTask:
    """The healthy cluster with nothing to fix: reward 0, never solved (a smoke test and a sandbox)."""

    id = EXPLORE
    alert = (
        "You are root on login01, the login node of a small Slurm cluster (compute-01..04). "
        "Nothing is known to be wrong; look around."
    )

    def __init__(self, max_steps: int = 50) -> None:
        self.max_steps = max_steps

    def reset(self, episode: Episode, seed: int) -> str:
        return self.alert

    def grade(self, episode: Episode, command: str, result: StepResult) -> Grade:
        return Grade()


TaskFactory = Callable[[], Task]


class TaskRegistry(Mapping[str, TaskFactory]):
    """Scenario id -> task factory, an explicit table.

    Example:
        >>> registry = TaskRegistry({"explore": ExploreTask})
        >>> registry.make("explore").max_steps
        50
    """

    def __init__(self, factories: Mapping[str, TaskFactory]) -> None:
        self._factories = dict(factories)

    def __getitem__(self, scenario: str) -> TaskFactory:
        return self._factories[scenario]

    def __iter__(self) -> Iterator[str]:
        return iter(self._factories)

    def __len__(self) -> int:
        return len(self._factories)

    def make(self, scenario: str) -> Task:
        """Return a new task object for `scenario`.

        Raises:
            ScenarioError: no such scenario id.
        """
        factory = self._factories.get(scenario)
        if factory is None:
            raise ScenarioError(
                f"unknown scenario {scenario!r}", hint=f"choose one of: {', '.join(sorted(self))}"
            )
        task = factory()
        if task.id != scenario:
            raise ScenarioError(f"the factory registered as {scenario!r} made a task with id {task.id!r}")
        return task

    @property
    def scenario_ids(self) -> tuple[str, ...]:
        """The ids an env draws from when none is given: the real scenarios, or `explore` if none."""
        real = tuple(sorted(s for s in self._factories if s != EXPLORE))
        return real or (EXPLORE,)


def scenario_factories() -> Mapping[str, TaskFactory]:
    """The scenario library's tasks: `hpcgym.scenarios.TASKS`, or none while that package is absent."""
    if importlib.util.find_spec(SCENARIOS_MODULE) is None:
        return {}
    module = importlib.import_module(SCENARIOS_MODULE)
    factories = getattr(module, "TASKS", None)
    if factories is None:
        # The package exists but does not declare its tasks yet: nothing to offer, not an error.
        return {}
    return dict(factories)


def default_registry() -> TaskRegistry:
    """`explore` plus every scenario the scenario library declares."""
    return TaskRegistry({EXPLORE: ExploreTask, **scenario_factories()})


__all__ = [
    "EXPLORE",
    "ExploreTask",
    "Grade",
    "GradeLike",
    "Task",
    "TaskFactory",
    "TaskRegistry",
    "default_registry",
    "scenario_factories",
]
