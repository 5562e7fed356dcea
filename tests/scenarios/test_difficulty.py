"""Difficulty knobs: each one changes what the agent meets, the default changes nothing.

The clue depth changes only the alert; red herrings plant things that look wrong and are not (acting
on them fixes nothing); chained faults add independent incidents whose checks must all hold. Every
setting is deterministic in (scenario, seed, difficulty) and reported in `info["difficulty"]`.
"""

from __future__ import annotations

import pytest

from hpcgym.errors import ScenarioError
from hpcgym.scenarios import schema
from hpcgym.scenarios.difficulty import DEEP_ALERT, LADDER, Clue, Difficulty, adjust, chain
from hpcgym.scenarios.incident import ScenarioTask

from .conftest import type_all

SEED = 800


def test_the_default_is_the_file_as_written(play) -> None:  # type: ignore[no-untyped-def]
    incident = play("hpc_slurmd_down", SEED)
    task = incident.task
    assert isinstance(task, ScenarioTask)
    assert incident.alert == schema.render(task.written.alert, task.params).strip() + "\n"
    assert task.scenario is task.written
    assert incident.info()["difficulty"] == "red_herrings=0,chained=0,clue=normal"
    assert incident.max_steps == task.written.max_steps


def test_parse_reads_text_and_mappings_and_refuses_bad_knobs_in_one_line() -> None:
    knobs = Difficulty.parse("red_herrings=2, chained=1,clue=deep")
    assert knobs == Difficulty(red_herrings=2, chained=1, clue=Clue.DEEP)
    assert Difficulty.parse(knobs.spec()) == knobs
    assert Difficulty.parse({"clue": "shallow"}) == Difficulty(clue=Clue.SHALLOW)
    assert Difficulty.parse(None) == Difficulty()
    for bad in ("red_herrings=9", "colour=red", "clue=hard", "deep", {"chained": -1}):
        with pytest.raises(ScenarioError) as caught:
            Difficulty.parse(bad)
        assert "\n" not in caught.value.message


def test_a_shallow_clue_adds_the_hint_and_a_deep_one_names_nothing(play) -> None:  # type: ignore[no-untyped-def]
    written = schema.load_scenario("hpc_slurmd_down")
    hinted = written.model_copy(update={"hint": "Read the reason slurmctld recorded for {node}."})
    shallow = play(hinted, SEED, difficulty=Difficulty(clue=Clue.SHALLOW))
    node = shallow.task.params["node"]  # type: ignore[attr-defined]
    assert shallow.alert.rstrip().endswith(f"Hint: Read the reason slurmctld recorded for {node}.")
    deep = play("hpc_slurmd_down", SEED, difficulty=Difficulty(clue=Clue.DEEP))
    assert deep.alert == DEEP_ALERT + "\n"
    assert "compute" not in deep.alert and "slurmd" not in deep.alert
    # The fault is the same one: the gold still fixes it.
    assert deep.gold == play("hpc_slurmd_down", SEED).gold


def test_chained_faults_all_have_to_be_fixed(play) -> None:  # type: ignore[no-untyped-def]
    knobs = Difficulty(chained=1)
    incident = play("hpc_slurmd_down", SEED, difficulty=knobs)
    task = incident.task
    assert isinstance(task, ScenarioTask)
    assert incident.info()["difficulty"] == knobs.spec()
    assert len(task.scenario.success) > len(task.written.success)
    assert "Another ticket came in meanwhile:" in incident.alert
    # The first fault's own fix leaves the chained one broken.
    own = [schema.render(c, task.params) for c in task.written.gold]
    type_all(incident, own)
    assert not incident.solved
    again = play("hpc_slurmd_down", SEED, difficulty=knobs)
    type_all(again, again.gold)
    assert again.solved


def test_chaining_is_deterministic_and_leaves_a_node_for_maintenance() -> None:
    written = schema.load_scenario("hpc_drain_forgotten")
    first, got = chain(written, SEED, 2)
    second, _ = chain(written, SEED, 2)
    assert first == second and got >= 1
    params = first.draw_params(SEED)
    computes = ["compute-01", "compute-02", "compute-03", "compute-04"]
    assert len(first.nodes_in_use(params, computes)) < len(computes)


def test_a_scenario_with_no_room_gets_fewer_chained_faults_and_says_so(play) -> None:  # type: ignore[no-untyped-def]
    incident = play("hpc_multi_fault", SEED, difficulty=Difficulty(chained=2))
    played = Difficulty.parse(incident.info()["difficulty"])
    assert played.chained < 2
    type_all(incident, incident.gold)
    assert incident.solved


def test_red_herrings_are_planted_and_acting_on_them_fixes_nothing(play) -> None:  # type: ignore[no-untyped-def]
    knobs = Difficulty(red_herrings=3)
    incident = play("hpc_slurmd_down", SEED, difficulty=knobs)
    listing = incident.step("ls /etc/slurm/ && journalctl -u slurmctld --no-pager | tail -5").result.output
    assert "slurm.conf.rpmsave" in listing
    assert "not responding" in listing and "now responding" in listing
    log = incident.step("tail -2 /var/log/slurm/slurmctld.log").result.output
    assert "error: Nodes compute-" in log and "now responding" in log
    # Taking the upgrade's leftover for the real file breaks the cluster instead of fixing it.
    type_all(incident, ["cp /etc/slurm/slurm.conf.rpmsave /etc/slurm/slurm.conf", *incident.gold])
    assert not incident.solved
    clean = play("hpc_slurmd_down", SEED, difficulty=knobs)
    type_all(clean, clean.gold)
    assert clean.solved


def test_the_ladder_moves_one_rung_toward_a_half_pass_rate() -> None:
    assert adjust(LADDER[1], 0.9) == LADDER[2]
    assert adjust(LADDER[1], 0.1) == LADDER[0]
    assert adjust(LADDER[1], 0.5) == LADDER[1]
    assert adjust(LADDER[-1], 1.0) == LADDER[-1]
    assert adjust(LADDER[0], 0.0) == LADDER[0]
    assert [rung.level for rung in LADDER] == sorted(rung.level for rung in LADDER)


def test_the_curriculum_climbs_tiers_and_rungs() -> None:
    from training.dataset import DEFAULT_DIFFICULTY, build_rows

    rows = build_rows(["lite"], seeds_per_scenario=7, order="curriculum")
    stages = [row["tier"] + LADDER.index(Difficulty.parse(row["difficulty"])) for row in rows]
    assert stages == sorted(stages)
    assert Difficulty.parse(rows[0]["difficulty"]).clue is Clue.SHALLOW
    assert Difficulty.parse(rows[-1]["difficulty"]) == LADDER[-1]
    shuffled = build_rows(["lite"], seeds_per_scenario=3)
    assert {row["difficulty"] for row in shuffled} == {DEFAULT_DIFFICULTY}
    fixed = build_rows(["lite"], seeds_per_scenario=3, difficulty="clue=deep")
    assert {row["difficulty"] for row in fixed} == {Difficulty(clue=Clue.DEEP).spec()}
