"""The library as data: every file validates, variants are seeded, splits are disjoint, nothing leaks."""

from __future__ import annotations

import re

import pytest
import yaml

from hpcgym.errors import ScenarioError
from hpcgym.scenarios import TASKS
from hpcgym.scenarios.checks import CHECKS
from hpcgym.scenarios.schema import LIBRARY, Scenario, lite_ids, load_scenario, render, scenario_ids

IDS = scenario_ids()
REQUIRED = {"hpc_outage", "hpc_munge", "hpc_pid_stale", "hpc_gpu_ecc", "hpc_ood_apache"}


def test_library_size_tiers_and_required_ids():
    assert len(IDS) >= 15
    assert set(IDS) >= REQUIRED
    assert {load_scenario(sid).tier for sid in IDS} == {1, 2, 3, 4, 5}
    assert set(TASKS) == set(IDS)


def test_lite_set_is_small_and_spans_tiers():
    lite = lite_ids()
    assert 5 <= len(lite) < len(IDS)
    assert {load_scenario(sid).tier for sid in lite} >= {1, 2, 3}


@pytest.mark.parametrize("scenario_id", IDS)
def test_scenario_is_well_formed(scenario_id):
    scenario = load_scenario(scenario_id)
    assert scenario.gold and scenario.success and scenario.inject
    assert all(check.check in CHECKS for check in scenario.success)
    train, test = scenario.seeds.train, scenario.seeds.test
    assert train[1] <= test[0] or test[1] <= train[0], "train and test seeds overlap"
    for seed in (0, 1, 799, 800, 999):
        params = scenario.draw_params(seed)
        assert params == scenario.draw_params(seed)
        scenario.inject_steps(params)
        for text in [*scenario.gold, scenario.alert]:
            names = re.findall(r"\{([a-z_]+)(?:\.[a-z_]+)?\}", render(text, params))
            assert not [n for n in names if n in scenario.params], f"unfilled placeholders in {text!r}"


@pytest.mark.parametrize("scenario_id", IDS)
def test_alert_never_names_the_fix(scenario_id):
    scenario = load_scenario(scenario_id)
    params = scenario.draw_params(0)
    alert = render(scenario.alert, params)
    fixes = [
        render(c, params)
        for c in scenario.gold
        if re.search(r"chmod|chown|sed|install|printf|nvidia-smi -r", c)
    ]
    for fix in fixes:
        assert fix not in alert
    for word in ("chmod", "chown", "0400", "GATEWAY0=10.10.1.254", "state=resume", "nvidia-smi -r"):
        assert word not in alert


def test_seeds_pick_different_variants():
    scenario = load_scenario("hpc_munge")
    assert len({str(scenario.draw_params(seed)) for seed in range(40)}) > 5


def test_unknown_fields_and_ids_are_rejected(tmp_path):
    raw = yaml.safe_load((LIBRARY / "hpc_munge.yaml").read_text())
    (tmp_path / "x.yaml").write_text(yaml.safe_dump({**raw, "surprise": 1}))
    with pytest.raises(ScenarioError, match="does not validate"):
        load_scenario("x", tmp_path)
    (tmp_path / "y.yaml").write_text(yaml.safe_dump({**raw, "id": "other"}))
    with pytest.raises(ScenarioError, match="id is the file name"):
        load_scenario("y", tmp_path)
    with pytest.raises(ScenarioError, match="no scenario"):
        load_scenario("nope", tmp_path)


def test_bad_inject_step_is_rejected():
    raw = yaml.safe_load((LIBRARY / "hpc_munge.yaml").read_text())
    raw["inject"] = [{"kind": "chmod", "node": "compute-01", "path": "/x"}]
    with pytest.raises(ValueError):
        Scenario.model_validate({**raw, "id": "hpc_munge"})


def test_render_leaves_other_braces_alone():
    assert (
        render("awk '{print $1}' {node} {x.y}", {"node": "compute-02"}) == "awk '{print $1}' compute-02 {x.y}"
    )
    assert render("{p.old}", {"p": {"old": "a"}}) == "a"
