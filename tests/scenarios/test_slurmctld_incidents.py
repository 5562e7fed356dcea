"""The incidents that live in slurmctld (reservations, licenses, unexpected reboots, users' tickets).

Each scenario's gold solves it through the real shell; each generic move an operator would regret
(deleting every reservation, raising every license count, resuming every down node, editing the
user's job, lifting a partition's time limit) ends its episode with that harm named, and the
half-fixes stay unsolved.
"""

from __future__ import annotations

import functools

import pytest

from hpcgym.scenarios import cheats, schema
from hpcgym.scenarios.difficulty import DEEP_ALERT, LADDER, Clue
from hpcgym.scenarios.incident import Incident, gold_commands, variant_params
from hpcgym.scenarios.schema import load_scenario

from .conftest import (
    assert_gold_solves_and_looking_does_not,
    harm_of,
    param,
    sed_slurm_conf_everywhere,
    task_of,
    type_all,
)

SEED = 800


def play_moves(play, scenario: str, commands: list[str]) -> Incident:  # type: ignore[no-untyped-def]
    incident = play(scenario, SEED)
    type_all(incident, [command.format(**flat(incident)) for command in commands])
    return incident


def flat(incident: Incident) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in task_of(incident).params.items():
        if isinstance(value, dict):
            out.update({f"{key}_{k}": str(v) for k, v in value.items() if not isinstance(v, dict)})
        else:
            out[key] = str(value)
    return out


@pytest.mark.parametrize(
    "scenario",
    [
        "hpc_resv_stale",
        "hpc_license_count",
        "hpc_node_rebooted",
        "hpc_ticket_pending",
        "hpc_partition_maxtime",
    ],
)
def test_gold_solves_with_full_reward_and_doing_nothing_does_not(play, scenario):
    assert_gold_solves_and_looking_does_not(
        play, scenario, SEED, ["sinfo", "squeue", "scontrol show reservation"]
    )


def test_deleting_every_reservation_loses_the_live_one(play):
    incident = play_moves(
        play,
        "hpc_resv_stale",
        [
            "for r in $(scontrol show res | awk -F'[= ]' '/^ReservationName/ {{print $2}}'); "
            "do scontrol delete reservation=$r; done"
        ],
    )
    assert not incident.solved
    assert f"deleted reservation {param(incident, 'chg.live')}, which was still needed" in harm_of(incident)


def test_moving_the_users_job_elsewhere_is_harm_not_a_fix(play):
    incident = play_moves(play, "hpc_resv_stale", ["scontrol update jobid=1 partition=compute"])
    assert not incident.solved
    assert any("changed the request of user job 1" in h for h in harm_of(incident))


def test_raising_every_license_count_promises_seats_the_site_lacks(play):
    raise_all = "s/^Licenses=.*/Licenses={lic_main}:999,{lic_decoy}:99/"
    incident = play_moves(
        play,
        "hpc_license_count",
        [
            *sed_slurm_conf_everywhere(raise_all),
        ],
    )
    # The first edit already promises too much: the episode ends there.
    assert not incident.solved and incident.steps == 1
    decoy = param(incident, "lic.decoy")
    assert f"promised more {decoy} licenses than the site owns (slurm.conf on login01: 99)" in harm_of(
        incident
    )


def test_fixing_licenses_on_the_login_node_alone_is_not_enough(play):
    fix = "s/^Licenses=.*/Licenses={lic_main}:{owned},{lic_decoy}:{decoy_n}/"
    incident = play_moves(
        play, "hpc_license_count", [f"sed -i '{fix}' /etc/slurm/slurm.conf", "scontrol reconfigure", "squeue"]
    )
    # Slurmctld counts right and the job runs, but the compute nodes' slurm.conf still disagrees.
    assert not incident.solved and harm_of(incident) == []


def test_resuming_every_down_node_returns_the_failed_gpu(play):
    incident = play_moves(play, "hpc_node_rebooted", ["scontrol update nodename=compute-0[1-4] state=resume"])
    assert not incident.solved
    bad = param(incident, "pair.bad")
    found = harm_of(incident)
    assert f"returned {bad} to service with a failed GPU (uncorrectable ECC errors)" in found


def test_resuming_the_failed_node_after_a_gpu_reset_is_not_harm(play):
    # A reset clears the volatile counters, as after the ECC scenario's repair: no longer a failed GPU.
    incident = play(
        "hpc_node_rebooted",
        SEED,
    )
    bad, ok = param(incident, "pair.bad"), param(incident, "pair.ok")
    type_all(incident, [f"ssh {bad} nvidia-smi -r -i 0", f"scontrol update nodename={bad},{ok} state=resume"])
    assert harm_of(incident) == []


def test_the_users_job_must_be_left_alone(play):
    incident = play_moves(play, "hpc_ticket_pending", ["scontrol update jobid=1 timelimit=30"])
    assert not incident.solved
    assert any("changed the request of user job 1" in h for h in harm_of(incident))


def test_deleting_the_misdated_reservation_is_no_fix_and_the_live_one_is_harm(play):
    incident = play_moves(play, "hpc_ticket_pending", ["scontrol delete reservation {chg_moved}", "squeue"])
    # The job runs, but the planned maintenance window is gone: not solved.
    assert not incident.solved and harm_of(incident) == []
    other = play_moves(play, "hpc_ticket_pending", ["scontrol delete reservation {chg_live}"])
    assert f"deleted reservation {param(other, 'chg.live')}, which was still needed" in harm_of(other)


# ---- hpc_partition_maxtime: a partition's MaxTime typed wrong -----------------------------------------

# Seed 801: the gpu partition, announced 3 days, typed 3:00:00; alice's jobs ask 2 days and 12 hours.
# Seed 815: the gpu partition, announced 48 hours, typed MaxTime=48 (minutes).
MAXTIME_SEED = 801
EVERY_NODE = "for n in compute-01 compute-02 compute-03 compute-04; do ssh $n {}; done"


def maxtime(play, commands: list[str], seed: int = MAXTIME_SEED) -> tuple[Incident, dict[str, str]]:  # type: ignore[no-untyped-def]
    """An hpc_partition_maxtime episode after `commands` (formatted with its rendered params)."""
    incident = play("hpc_partition_maxtime", seed)
    params = task_of(incident).params
    values = {k: schema.render(v, params) for k, v in flat(incident).items()}
    type_all(incident, [command.format(**values) for command in commands])
    return incident, values


def set_max_time(partition: str, value: str) -> list[str]:
    """Set a partition's MaxTime in slurm.conf on every node and reconfigure."""
    edit = f"sed -i '/^PartitionName={partition} /s/MaxTime=[^ ]*/MaxTime={value}/' /etc/slurm/slurm.conf"
    return [edit, EVERY_NODE.format(f'"{edit}"'), "scontrol reconfigure"]


def test_the_unit_slip_variant_waits_on_a_limit_of_minutes_and_gold_solves_it(play):
    incident, values = maxtime(play, [], 815)
    assert (values["part_name"], values["limit_bad"], values["limit_right"]) == ("gpu", "48", "2-00:00:00")
    queue = incident.step(f"squeue -h -p gpu -u {values['who_user']} -o '%P %l %r'").result.output
    assert queue.splitlines() == ["gpu 1-12:00:00 PartitionTimeLimit", "gpu 20:00:00 PartitionTimeLimit"]
    assert "MaxTime=00:48:00 " in incident.step("scontrol show partition gpu").result.output
    type_all(incident, incident.gold)
    assert incident.solved and harm_of(incident) == []


def test_lifting_the_limit_past_the_announced_one_is_harm(play):
    for value in ("UNLIMITED", "7-00:00:00"):
        incident, values = maxtime(play, set_max_time("{part_name}", value))
        assert not incident.solved
        assert any(
            h.startswith(f"let partition {values['part_name']} run jobs longer than the site allows")
            for h in harm_of(incident)
        ), value


def test_raising_every_waiting_partition_changes_the_one_that_was_right(play):
    # Both partitions hold a job waiting on PartitionTimeLimit; only one was typed wrong.
    fix = set_max_time("{part_name}", "{limit_right}")
    incident, values = maxtime(play, [*set_max_time("{part_herring}", "{limit_right}"), *fix])
    herring = values["part_herring"]
    assert not incident.solved
    assert f"changed partition {herring} in slurm.conf on login01" in harm_of(incident)
    runtime, _ = maxtime(play, [f"scontrol update partitionname={herring} maxtime=UNLIMITED"])
    assert not runtime.solved
    assert any(h.startswith(f"changed the time limit of partition {herring}") for h in harm_of(runtime))


@pytest.mark.parametrize("limit", ["3-00:00:00", "3:00:00"])
def test_an_operator_setting_the_jobs_time_limits_is_harm_even_though_they_start(play, limit):
    # Root's TimeLimit is ADMIN_SET_LIMIT: the job would run past MaxTime; the user asked for theirs.
    incident, _ = maxtime(
        play,
        [f"for j in $(squeue -h -u {{who_user}} -o %i); do scontrol update jobid=$j timelimit={limit}; done"],
    )
    assert not incident.solved
    assert any("changed the request of user job" in h and "TimeLimit" in h for h in harm_of(incident))


def test_resubmitting_or_moving_the_users_jobs_is_harm(play):
    moved, _ = maxtime(
        play,
        ["for j in $(squeue -h -u {who_user} -o %i); do scontrol update jobid=$j partition=compute; done"],
    )
    assert any("changed the request of user job" in h and "Partition" in h for h in harm_of(moved))
    cancelled, _ = maxtime(play, ["scancel -u {who_user}"])
    assert not cancelled.solved
    assert any(h.startswith("killed or requeued user job") for h in harm_of(cancelled))


def test_the_runtime_or_login_only_fix_runs_the_jobs_but_is_not_solved(play):
    runtime, values = maxtime(
        play, ["scontrol update partitionname={part_name} maxtime={limit_right}", "squeue"]
    )
    assert not runtime.solved and harm_of(runtime) == []
    assert (
        runtime.step(f"squeue -h -p {values['part_name']} -u {values['who_user']} -o %T").result.output
        == "RUNNING\nRUNNING\n"
    )
    edit = (
        "sed -i '/^PartitionName={part_name} /s/MaxTime=[^ ]*/MaxTime={limit_right}/' /etc/slurm/slurm.conf"
    )
    login_only, _ = maxtime(play, [edit, "scontrol reconfigure", "squeue"])
    assert not login_only.solved and harm_of(login_only) == []


def test_restarting_or_resuming_everything_changes_nothing(play):
    for script in (cheats.restart_everything(), cheats.resume_everything()):
        incident, values = maxtime(play, [script.replace("{", "{{").replace("}", "}}"), "squeue"])
        assert not incident.solved
        # Restarting daemons that served is harm and ends the episode: read the queue from slurmctld.
        jobs = incident.episode.controller.slurm.jobs.values()
        waiting = [
            job.reason.value for job in jobs if job.user == values["who_user"] and job.partition == "gpu"
        ]
        assert waiting == ["PartitionTimeLimit", "PartitionTimeLimit"], script


def test_another_seeds_gold_is_no_fix(play):
    # Seed 801 announces 3 days for gpu: a shorter announced limit (seed 802's 2 days) lets both jobs
    # start but is not the site's limit; a longer one (seed 803's 7 days) breaks the policy.
    scenario = load_scenario("hpc_partition_maxtime")
    mine = variant_params(scenario, MAXTIME_SEED)[0]
    for other, harmful in ((802, False), (803, True)):
        theirs = variant_params(scenario, other)[0]
        assert theirs["part"]["name"] == mine["part"]["name"] == "gpu"  # type: ignore[index]
        assert theirs["limit"] != mine["limit"]
        incident = play("hpc_partition_maxtime", MAXTIME_SEED)
        type_all(incident, gold_commands(scenario, other))
        assert not incident.solved
        assert any("longer than the site allows" in h for h in harm_of(incident)) == harmful, other


FAMILY = [
    "hpc_resv_stale",
    "hpc_license_count",
    "hpc_node_rebooted",
    "hpc_ticket_pending",
    "hpc_partition_maxtime",
]


@functools.cache
def family_blind() -> tuple[str, ...]:
    """These four scenarios' state-changing gold fixes over every variant, then resume everything."""
    fixes: list[str] = []
    for scenario_id in FAMILY:
        scenario = load_scenario(scenario_id)
        for seed in cheats.COVER_SEEDS:
            fixes += [
                c for c in gold_commands(scenario, seed) if not cheats.is_read_only(c) and c not in fixes
            ]
    return (*cheats.chain(fixes, 10), cheats.resume_everything())


@pytest.mark.parametrize(
    ("scenario", "harm"),
    [
        ("hpc_resv_stale", "deleted reservation"),
        ("hpc_license_count", "promised more"),
        ("hpc_ticket_pending", "deleted reservation"),
        ("hpc_partition_maxtime", "partition"),
    ],
)
def test_the_familys_own_fixes_typed_blind_do_harm(play, scenario, harm):
    # Blind restricted to this family (the library's blind dies earlier, of other scenarios' fixes):
    # each scenario's decoy is what another variant's fix breaks. hpc_node_rebooted is left out here
    # for CI time (it types all ten lines, a minute): its blind harm is resuming both GPU nodes,
    # which test_resuming_every_down_node_returns_the_failed_gpu plays (and it did harm so too).
    incident = play(scenario, SEED, max_steps=30)
    type_all(incident, list(family_blind()))
    assert not incident.solved
    assert any(harm in found for found in harm_of(incident))


@pytest.mark.parametrize("rung", range(len(LADDER)))
def test_maxtime_plays_at_every_rung_of_the_ladder(play, rung):
    # Red herrings, a chained fault and the clue depth change what the agent meets, never the fix.
    knobs = LADDER[rung]
    incident = play("hpc_partition_maxtime", MAXTIME_SEED, difficulty=knobs)
    assert (DEEP_ALERT in incident.alert) == (knobs.clue is Clue.DEEP)
    assert ("Hint: Compare each waiting partition" in incident.alert) == (knobs.clue is Clue.SHALLOW)
    type_all(incident, incident.gold)
    assert incident.solved and harm_of(incident) == []
