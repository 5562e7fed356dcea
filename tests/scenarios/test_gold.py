"""Gold solutions typed into the agent's real shell reach full reward; doing nothing does not.

CI runs every scenario with one seed from its test range (`invoke gold` runs more seeds).
"""

from __future__ import annotations

import pytest

from hpcgym.scenarios.evaluate import evaluate, full_reward
from hpcgym.scenarios.schema import load_scenario, scenario_ids

IDS = scenario_ids()


@pytest.mark.parametrize("scenario_id", IDS)
def test_gold_solves_with_full_reward(runtime, scenario_id):
    scenario = load_scenario(scenario_id)
    seed = scenario.seeds.test[0]
    (record,) = evaluate(runtime, ["gold"], [scenario_id], [seed], progress=False)
    assert record.outcome == "solved", [(s.command, s.output) for s in record.transcript]
    assert full_reward(record, bool(scenario.diagnosis)), record.components
    assert record.steps <= len(scenario.gold)


@pytest.mark.parametrize("scenario_id", IDS)
def test_noop_does_not_solve(play, scenario_id):
    incident = play(scenario_id, 3, max_steps=4)
    steps = [incident.step(command) for command in ("sinfo", "true", "squeue", "systemctl --failed")]
    assert steps[-1].truncated and not steps[-1].terminated
    assert not steps[-1].info["solved"]
    assert incident.info()["outcome"] == "truncated"
    assert incident.info()["reward_components"]["success"] == 0
