"""The library plugs into the interfaces' task registry (hpcgym.interfaces.task)."""

from __future__ import annotations

from hpcgym.episode import Episode
from hpcgym.interfaces.task import Task, default_registry
from hpcgym.scenarios import TASKS


def test_registry_offers_every_scenario():
    registry = default_registry()
    assert set(TASKS) <= set(registry)
    task = registry.make("hpc_munge")
    assert isinstance(task, Task) and task.max_steps == 30


def test_task_grades_a_pooled_style_episode(runtime):
    task = TASKS["hpc_slurmctld_down"]()
    with Episode(runtime) as episode:
        episode.controller.advance(1234)  # as an incident's seeded clock offset does
        alert = task.reset(episode, 801)
        assert "Proxy Error" in alert
        grades = []
        for command in task.gold():
            grades.append(task.grade(episode, command, episode.step(command)))
            if grades[-1].solved:
                break
        assert grades[-1].solved and not grades[-1].failed
        assert grades[-1].components["success"] == 1.0
        assert all(not g.solved for g in grades[:-1])
        after = task.grade(episode, "sinfo", episode.step("sinfo"))
        assert after.reward == 0 and after.components["success"] == 1.0
