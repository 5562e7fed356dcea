"""The incidents that live in slurmctld (reservations, licenses, unexpected reboots, a user's ticket).

Each scenario's gold solves it through the real shell; each generic move an operator would regret
(deleting every reservation, raising every license count, resuming every down node, editing the
user's job) ends its episode with that harm named, and the half-fixes stay unsolved.
"""

from __future__ import annotations

import functools

import pytest

from hpcgym.scenarios import cheats
from hpcgym.scenarios.incident import Incident, gold_commands
from hpcgym.scenarios.schema import load_scenario

from .conftest import harm_of, param, task_of, type_all

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
    "scenario", ["hpc_resv_stale", "hpc_license_count", "hpc_node_rebooted", "hpc_ticket_pending"]
)
def test_gold_solves_with_full_reward_and_doing_nothing_does_not(play, scenario):
    incident = play(scenario, SEED)
    type_all(incident, incident.gold)
    assert incident.solved and harm_of(incident) == []
    idle = play(scenario, SEED)
    type_all(idle, ["sinfo", "squeue", "scontrol show reservation"])
    assert not idle.solved


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
            f"sed -i '{raise_all}' /etc/slurm/slurm.conf",
            f"for n in compute-01 compute-02 compute-03 compute-04; do ssh $n \"sed -i '{raise_all}' "
            '/etc/slurm/slurm.conf"; done',
            "scontrol reconfigure",
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


FAMILY = ["hpc_resv_stale", "hpc_license_count", "hpc_node_rebooted", "hpc_ticket_pending"]


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
