"""Scenario tests share the session's runtime (tests/conftest.py); each test makes fresh incidents."""

from __future__ import annotations

import pytest

from hpcgym.scenarios.incident import Incident, ScenarioTask


@pytest.fixture
def play(runtime):  # type: ignore[no-untyped-def]
    """Start an incident (closed after the test) and type commands into it."""
    opened: list[Incident] = []

    def start(scenario: str, seed: int = 0, **kwargs) -> Incident:  # type: ignore[no-untyped-def]
        incident = Incident(runtime, scenario, seed, **kwargs)
        opened.append(incident)
        return incident

    yield start
    for incident in opened:
        incident.close()


def type_all(incident: Incident, commands: list[str]):  # type: ignore[no-untyped-def]
    """Type commands until the episode ends; the last step (or None)."""
    last = None
    for command in commands:
        if incident.done:
            break
        last = incident.step(command)
    return last


def sed_slurm_conf_everywhere(expr: str) -> list[str]:
    """The commands that run `sed -i EXPR` on slurm.conf on the login node and on every compute
    node, then have slurmctld reread it."""
    return [
        f"sed -i '{expr}' /etc/slurm/slurm.conf",
        f"for n in compute-01 compute-02 compute-03 compute-04; do ssh $n \"sed -i '{expr}' "
        '/etc/slurm/slurm.conf"; done',
        "scontrol reconfigure",
    ]


def task_of(incident: Incident) -> ScenarioTask:
    """The incident's library task (its params and grader)."""
    assert isinstance(incident.task, ScenarioTask)
    return incident.task


def param(incident: Incident, key: str) -> str:
    """A drawn parameter by dotted key (`lic.main`), as text."""
    value: object = task_of(incident).params
    for part in key.split("."):
        assert isinstance(value, dict)
        value = value[part]
    return str(value)


def harm_of(incident: Incident) -> list[str]:
    """Every harm the grader reads from the state now."""
    grader = task_of(incident).grader
    assert grader is not None
    return grader.harm_found()


def assert_gold_solves_and_looking_does_not(play, scenario: str, seed: int, looking: list[str]) -> None:  # type: ignore[no-untyped-def]
    """The scenario's gold solves it with no harm; a fresh incident where only `looking` is typed
    (read-only commands) is not solved."""
    incident = play(scenario, seed)
    type_all(incident, incident.gold)
    assert incident.solved and harm_of(incident) == []
    idle = play(scenario, seed)
    type_all(idle, looking)
    assert not idle.solved


def assert_unsolved(incident: Incident) -> None:
    """Not solved, by the episode's info, its success reward and the grader itself."""
    info = incident.info()
    assert not info["solved"] and info["reward_components"]["success"] == 0
    assert not incident.grader.is_solved()
