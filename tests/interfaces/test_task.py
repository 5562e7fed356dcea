"""The task registry and the built-in explore task, in-process (no sandbox)."""

from __future__ import annotations

import pytest

from hpcgym.errors import ScenarioError
from hpcgym.interfaces.task import EXPLORE, ExploreTask, Grade, Task, TaskRegistry, default_registry


def test_explore_is_always_registered_and_is_a_task():
    registry = default_registry()
    task = registry.make(EXPLORE)
    assert isinstance(task, Task)
    assert task.id == EXPLORE and task.max_steps > 0
    assert task.grade(None, "true", None) == Grade(reward=0.0, solved=False, failed=False)  # type: ignore[arg-type]


def test_unknown_scenario_is_a_scenario_error_naming_the_known_ones():
    with pytest.raises(ScenarioError, match="unknown scenario 'hpc_nope'") as raised:
        TaskRegistry({EXPLORE: ExploreTask}).make("hpc_nope")
    assert "explore" in (raised.value.hint or "")


def test_a_factory_must_make_the_task_it_is_registered_under():
    with pytest.raises(ScenarioError, match="made a task with id 'explore'"):
        TaskRegistry({"hpc_outage": ExploreTask}).make("hpc_outage")


def test_draws_come_from_real_scenarios_once_there_are_any():
    class Outage(ExploreTask):
        id = "hpc_outage"

    assert TaskRegistry({EXPLORE: ExploreTask}).scenario_ids == (EXPLORE,)
    assert TaskRegistry({EXPLORE: ExploreTask, "hpc_outage": Outage}).scenario_ids == ("hpc_outage",)
