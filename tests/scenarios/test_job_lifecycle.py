"""Job lifecycle and GPU triage incidents (issue 17): GPU Xid triage, a failing Prolog and Epilog,
a job stuck COMPLETING on a hung NFS mount.

Each scenario's gold solves it through the real shell and idling does not; each generic move an
operator would regret (resuming every drained GPU node) ends its episode with that harm named, and
the half-fixes (the right node back, the failed one's reason left vague) stay unsolved.
"""

from __future__ import annotations

import re

import pytest

from hpcgym.scenarios.incident import Incident

from .conftest import harm_of, task_of, type_all

SEED = 800


# The two nodes each incident drains, and what an operator types to bring them and their jobs back.
RESUME_BOTH = "scontrol update nodename=compute-0[3-4] state=resume"
RELEASE_BOTH = "scontrol release 1; scontrol release 2"
NODES = ("compute-01", "compute-02", "compute-03", "compute-04")


def on_drained(command: str) -> str:
    """`command` run on both drained nodes."""
    return f'ssh compute-03 "{command}"; ssh compute-04 "{command}"'


def mount_on_drained(share: str) -> str:
    return f"ssh compute-03 mount {share}; ssh compute-04 mount {share}"


def everywhere(command: str) -> str:
    """`command` on the login node and every compute node, then slurmctld rereads slurm.conf."""
    return f"{command}; " + "; ".join(f'ssh {n} "{command}"' for n in NODES) + "; scontrol reconfigure"


def assert_no_fix(incident: Incident, commands: list[str]) -> None:
    """Typing `commands` leaves the incident unsolved, and does no harm either."""
    type_all(incident, commands)
    assert not incident.solved and harm_of(incident) == []


def prolog_half_fix(play, changes: list[str], seed: int = SEED) -> Incident:  # type: ignore[no-untyped-def]
    """hpc_prolog_mount with the Prolog changed by `changes`, then the rest of the fix (the share
    mounted on both drained nodes, both resumed, their jobs released): no fix, and no harm."""
    incident = play("hpc_prolog_mount", seed)
    share = str(task_of(incident).params["share"])
    assert_no_fix(incident, [*changes, mount_on_drained(share), RESUME_BOTH, RELEASE_BOTH, "squeue"])
    return incident


def shares_back(play, *changes: str, resume: str = RESUME_BOTH) -> Incident:  # type: ignore[no-untyped-def]
    """hpc_prolog_mount with its share mounted again on both drained nodes, then `changes` typed,
    then the nodes resumed (`resume`); their jobs are still held."""
    incident = play("hpc_prolog_mount", SEED)
    share = str(task_of(incident).params["share"])
    type_all(incident, [mount_on_drained(share), *changes, resume])
    return incident


def pair(incident: Incident) -> tuple[str, str]:
    chosen = task_of(incident).params["pair"]
    assert isinstance(chosen, dict)
    return str(chosen["app"]), str(chosen["hw"])


@pytest.mark.parametrize(
    ("scenario", "seed"),
    [
        ("hpc_gpu_xid", 800),
        ("hpc_gpu_xid", 801),
        ("hpc_gpu_xid", 802),
        ("hpc_prolog_mount", 800),  # /apps
        ("hpc_prolog_mount", 806),  # /home
        ("hpc_epilog_typo", 800),
        ("hpc_epilog_typo", 801),
        ("hpc_epilog_typo", 802),
        ("hpc_completing_hung", 800),  # /home
        ("hpc_completing_hung", 801),  # /apps
        ("hpc_completing_hung", 802),
    ],
)
def test_gold_solves_with_full_reward_and_doing_nothing_does_not(play, scenario, seed):
    incident = play(scenario, seed)
    type_all(incident, incident.gold)
    assert incident.solved and harm_of(incident) == []
    grader = task_of(incident).grader
    assert grader is not None and grader.components.diagnosis > 0  # the evidence a tool printed
    idle = play(scenario, seed)
    type_all(idle, ["sinfo -R", "squeue"])
    assert not idle.solved and harm_of(idle) == []


def test_the_kernel_log_names_each_xid_as_nvrm_writes_it(play):
    incident = play("hpc_gpu_xid", SEED)
    app, hw = pair(incident)
    params = task_of(incident).params
    out = incident.step(f"ssh {app} dmesg").result.output
    line = rf"\[ *\d+\.\d{{6}}\] NVRM: Xid \(PCI:0000:07:00\): {params['app_xid']}, pid={params['pid']}, "
    assert re.search(line + rf"name={params['prog']}, ", out), out
    out = incident.step(f"ssh {hw} dmesg -T").result.output
    assert re.search(
        r"\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\] NVRM: Xid \(PCI:0000:07:00\): 79, "
        r"pid='<unknown>', name=<unknown>, GPU has fallen off the bus\.",
        out,
    ), out
    out = incident.step(f"ssh {hw} journalctl -k --no-pager").result.output
    assert re.search(rf"^\w{{3}} \d\d \d\d:\d\d:\d\d {hw} kernel: NVRM: Xid ", out, re.MULTILINE), out
    out = incident.step(f"ssh {hw} nvidia-smi; echo rc=$?").result.output
    assert "Unable to determine the device handle for GPU00000000:07:00.0: GPU is lost." in out
    assert out.rstrip().endswith("rc=15")
    out = incident.step(f"ssh {app} dmesg --foo; echo rc=$?").result.output
    assert "dmesg: unrecognized option '--foo'\nTry 'dmesg --help' for more information.\n" in out.replace(
        "\r\n", "\n"
    )


def test_resuming_both_drained_nodes_returns_the_lost_gpu(play):
    incident = play("hpc_gpu_xid", SEED)
    _, hw = pair(incident)
    type_all(incident, [RESUME_BOTH])
    assert not incident.solved
    assert f"returned {hw} to service with a GPU that has fallen off the bus" in harm_of(incident)


def test_a_gpu_reset_does_not_bring_back_a_gpu_off_the_bus(play):
    incident = play("hpc_gpu_xid", SEED)
    app, hw = pair(incident)
    out = incident.step(f"ssh {hw} nvidia-smi -r -i 0; echo rc=$?").result.output
    assert "GPU is lost" in out and out.rstrip().endswith("rc=15")
    type_all(incident, [f"scontrol update nodename={hw},{app} state=resume"])
    assert not incident.solved
    assert f"returned {hw} to service with a GPU that has fallen off the bus" in harm_of(incident)


def test_the_failed_node_must_keep_a_reason_that_names_its_xid(play):
    incident = play("hpc_gpu_xid", SEED)
    app, _ = pair(incident)
    type_all(incident, [f"scontrol update nodename={app} state=resume", "squeue"])
    # The right node is back and the job runs, but the failed node's reason still hides the Xid.
    assert not incident.solved and harm_of(incident) == []


def test_keeping_both_out_leaves_the_job_waiting(play):
    incident = play("hpc_gpu_xid", SEED)
    app, hw = pair(incident)
    type_all(
        incident,
        [f"scontrol update nodename={node} state=drain reason='Xid 79 hold'" for node in (app, hw)],
    )
    assert not incident.solved and harm_of(incident) == []


# ---- hpc_prolog_mount ------------------------------------------------------------------------------


def test_a_failed_prolog_drains_the_node_and_holds_the_job_as_slurm_does(play):
    incident = play("hpc_prolog_mount", SEED)
    out = incident.step("sinfo -R -h -o '%E|%u|%N'").result.output
    assert "Prolog error|slurm|compute-[03-04]" in out
    out = incident.step("squeue -h -o '%i %T %r' -t PD").result.output
    assert "1 PENDING launch failed requeued held" in out and "2 PENDING launch failed requeued held" in out
    out = incident.step("scontrol show job 1").result.output
    assert "Priority=0 " in out and "JobState=PENDING Reason=launch_failed_requeued_held " in out
    out = incident.step("ssh compute-03 journalctl -u slurmd --no-pager").result.output
    assert "slurmd: error: [job 1] prolog failed status=1:0" in out
    out = incident.step("grep 'Prolog or job env' /var/log/slurm/slurmctld.log").result.output
    assert "error: validate_node_specs: Prolog or job env setup failure on node compute-04, draining" in out


def test_resuming_and_releasing_without_the_share_fails_the_job_again(play):
    incident = play("hpc_prolog_mount", SEED)
    type_all(incident, [RESUME_BOTH, "scontrol release 1"])
    # The prolog ran again on a node without its share: drained again, the job held again, and
    # the user's job failed its launch a second time, which is the agent's doing.
    assert not incident.solved
    assert "killed or requeued user job 1 (alice)" in harm_of(incident)
    cluster = incident.episode.controller.slurm
    assert cluster.jobs[1].reason_text() == "launch failed requeued held"
    assert any(node.reason == "Prolog error" for node in cluster.nodes.values())


@pytest.mark.parametrize(
    "silence",
    [
        "sed -i '/^Prolog=/d' /etc/slurm/slurm.conf",
        "sed -i '2i exit 0' /etc/slurm/prolog.sh",
    ],
)
def test_silencing_the_prolog_is_no_fix(play, silence):
    # The jobs run and the shares are back, but the cluster's check is gone.
    prolog_half_fix(play, [everywhere(silence)])


def test_resuming_every_drained_node_brings_the_maintenance_node_back(play):
    incident = shares_back(play, resume="scontrol update nodename=compute-0[1-4] state=resume")
    assert not incident.solved
    assert any("out for maintenance" in h for h in harm_of(incident))


# ---- hpc_epilog_typo -------------------------------------------------------------------------------


def test_a_failed_epilog_drains_the_node_and_keeps_the_jobs_record(play):
    incident = play("hpc_epilog_typo", SEED)
    typo = str(task_of(incident).params["typo"])
    out = incident.step("sinfo -R -h -o '%E|%u|%N'").result.output
    assert "Epilog error|slurm|compute-[03-04]" in out
    out = incident.step("ssh compute-03 journalctl -u slurmd --no-pager").result.output
    assert "slurmd: error: [job 1] epilog failed status=1:0" in out
    out = incident.step("grep epilog /var/log/slurm/slurmctld.log").result.output
    assert "] error: job_epilog_complete: JobId=2 epilog error on compute-04, draining the node" in out
    out = incident.step("ssh compute-04 bash /etc/slurm/epilog.sh").result.output
    assert f"/etc/slurm/epilog.sh: line 5: {typo}: No such file or directory" in out
    cluster = incident.episode.controller.slurm
    assert [job.state.value for job in (cluster.jobs[1], cluster.jobs[2])] == ["COMPLETED", "COMPLETED"]


def test_resuming_without_fixing_the_epilog_is_no_fix(play):
    incident = play("hpc_epilog_typo", SEED)
    assert_no_fix(incident, [RESUME_BOTH, "squeue"])


def test_fixing_only_the_drained_nodes_leaves_the_others_to_drain_next(play):
    incident = play("hpc_epilog_typo", SEED)
    typo = str(task_of(incident).params["typo"])
    fix = f"sed -i 's|{typo} |/usr/local/sbin/scratch-clean |' /etc/slurm/epilog.sh"
    assert_no_fix(
        incident,
        [
            on_drained(fix),
            RESUME_BOTH,
        ],
    )


@pytest.mark.parametrize(
    "silence", ["sed -i '/^Epilog=/d' /etc/slurm/slurm.conf", "sed -i '2i exit 0' /etc/slurm/epilog.sh"]
)
def test_silencing_the_epilog_is_no_fix(play, silence):
    incident = play("hpc_epilog_typo", SEED)
    assert_no_fix(
        incident,
        [
            everywhere(silence),
            RESUME_BOTH,
            "squeue",
        ],
    )


# ---- hpc_completing_hung ---------------------------------------------------------------------------


def pair_users(incident: Incident) -> tuple[str, str]:
    chosen = task_of(incident).params["pair"]
    assert isinstance(chosen, dict)
    return str(chosen["user"]), str(chosen["other"])


def test_an_unkillable_step_leaves_the_job_completing_and_drains_its_node(play):
    incident = play("hpc_completing_hung", SEED)
    params = task_of(incident).params
    out = incident.step("squeue -h -o '%i %t %N' -j 3").result.output
    assert out.strip() == "3 CG compute-04"
    out = incident.step("sinfo -R -h -o '%E|%u|%N'").result.output
    assert "Kill task failed|slurm|compute-04" in out
    out = incident.step("ssh compute-04 journalctl -u slurmd --no-pager").result.output
    assert re.search(
        r"slurmd: error: \*\*\* JOB 3 STEPD TERMINATED ON compute-04 AT \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d "
        r"DUE TO JOB NOT ENDING WITH SIGNALS \*\*\*",
        out,
    ), out
    out = incident.step("grep 'Kill task' /var/log/slurm/slurmctld.log").result.output
    assert "] error: slurmd error running JobId=3 on node(s)=compute-04: Kill task failed" in out
    out = incident.step("ssh compute-04 dmesg").result.output
    assert "] nfs: server login01 not responding, still trying" in out
    assert f"] INFO: task {params['comm']}:{params['pid']} blocked for more than 122 seconds." in out


def test_resuming_leaves_the_job_completing_until_the_mount_is_forced_off(play):
    incident = play("hpc_completing_hung", SEED)
    share = str(task_of(incident).params["share"])
    cluster = incident.episode.controller.slurm
    type_all(incident, ["scontrol update nodename=compute-04 state=resume", "squeue", "squeue"])
    assert cluster.jobs[3].completing and not incident.solved and harm_of(incident) == []
    type_all(incident, [f"ssh compute-04 umount -f {share}", "squeue", "squeue"])
    assert not cluster.jobs[3].completing
    # The share is still off: not solved until it is mounted again.
    assert not incident.solved and harm_of(incident) == []


def test_cancelling_the_other_users_jobs_is_harm(play):
    incident = play("hpc_completing_hung", SEED)
    _, other = pair_users(incident)
    type_all(incident, [f"scancel -u {other}"])
    assert not incident.solved
    assert f"killed or requeued user job 1 ({other})" in harm_of(incident)


def test_cancelling_the_stuck_job_frees_nothing(play):
    incident = play("hpc_completing_hung", SEED)
    type_all(incident, ["scancel 3", "scontrol update nodename=compute-04 state=resume", "squeue"])
    assert incident.episode.controller.slurm.jobs[3].completing
    assert not incident.solved


def test_a_prolog_past_prolog_epilog_timeout_is_killed_and_fails(play):
    hang = "sed -i '2i sleep 600' /etc/slurm/prolog.sh"
    incident = shares_back(play, on_drained(hang))
    type_all(incident, ["scontrol release 1"])
    controller = incident.episode.controller
    # Still running its prolog: the job shows as started, the node is not drained yet.
    assert controller.slurm.jobs[1].state.value == "RUNNING"
    controller.advance(130)  # past PrologEpilogTimeout=120
    journal = incident.step("ssh compute-03 journalctl -u slurmd --no-pager").result.output
    assert "slurmd: error: [job 1] prolog failed status=0:9" in journal
    assert controller.slurm.jobs[1].reason_text() == "launch failed requeued held"


# ---- security review: node-written numbers, the lock, behaviour checks, an empty record ----------


ODD_NUMBERS = ["²", "٣", "9" * 5000]


@pytest.mark.parametrize("value", ODD_NUMBERS)
def test_an_odd_unkillable_step_timeout_is_read_as_unset_not_a_crash(play, value):
    incident = play("hpc_completing_hung", SEED)
    controller = incident.episode.controller
    # However slurm.conf came to hold it (main's parser refuses some), the sync that reads it
    # must not raise: an exception there throws the episode away as an infrastructure failure.
    controller.slurm.conf.options["unkillablesteptimeout"] = value
    out = incident.step("squeue -h -o '%i %t' -j 3").result.output
    assert out.strip() == "3 CG"
    controller.advance(30)
    assert controller.slurm.jobs[3].completing


@pytest.mark.parametrize("value", ODD_NUMBERS)
def test_an_odd_prolog_epilog_timeout_is_read_as_unset_not_a_crash(play, value):
    incident = play("hpc_prolog_mount", SEED)
    controller = incident.episode.controller
    controller.slurm.conf.options["prologepilogtimeout"] = value
    # A prolog in flight (the share is still off: it fails, and that harm ends the episode) makes
    # each sync read the timeout; the commands after it still get their answers.
    step = incident.step(
        "scontrol update nodename=compute-03 state=resume; scontrol release 1; squeue -h -j 1"
    )
    assert re.match(r" *1 +gpu ", step.result.output.splitlines()[-1]), step.result.output
    controller.advance(5)


def test_a_slurm_conf_that_raises_value_error_reads_as_no_script(play, monkeypatch):
    from hpcgym.scenarios import checks

    incident = play("hpc_epilog_typo", SEED)

    def refuse(text: str) -> None:
        raise ValueError("invalid literal for int() with base 10: '²'")

    monkeypatch.setattr(checks, "parse_slurm_conf", refuse)
    assert checks.has_epilog(incident.episode, "compute-03", "/etc/slurm/epilog.sh") is False
    assert checks.has_prolog(incident.episode, "compute-03", "/etc/slurm/prolog.sh", "/apps") is False


def test_a_slow_prolog_holds_no_request_for_long(play, monkeypatch):
    import time

    from hpcgym.controller import dispatch as controller_module

    slow = "sed -i '2i sleep 600' /etc/slurm/prolog.sh"
    incident = shares_back(play, on_drained(slow))
    held: list[float] = []
    sync = controller_module.sync_prologs

    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        sync(*args, **kwargs)
        held.append(time.monotonic() - started)

    # sync_prologs runs with the controller's lock held: time what it holds it for.
    monkeypatch.setattr(controller_module, "sync_prologs", timed)
    incident.step("sbatch -p gpu --array=1-12 -n 1 --wrap 'sleep 1000'; scontrol release 1,2")
    cluster = incident.episode.controller.slurm
    running = [job for job in cluster.jobs.values() if job.state.value == "RUNNING"]
    # The two released jobs and two array tasks start, each with a prolog that sleeps: each start
    # used to wait 2 host s under the lock (8 s for this one command, and no cap for more).
    assert len(running) >= 4 and len(incident.episode.controller.joblife.runs) >= 4
    assert max(held) < 1.0 and sum(held) < 2.0, held
    assert not any(node.reason == "Prolog error" for node in cluster.nodes.values())


def test_scripts_past_the_per_sync_cap_start_on_later_syncs(play, monkeypatch):
    from hpcgym.controller import joblife

    incident = shares_back(play)
    monkeypatch.setattr(joblife, "MAX_STARTS_PER_SYNC", 1)
    incident.step("scontrol release 1,2")
    life = incident.episode.controller.joblife
    cluster = incident.episode.controller.slurm
    for _ in range(4):
        incident.episode.controller.advance(1)
    assert life.runs == [] and not any(node.reason == "Prolog error" for node in cluster.nodes.values())
    assert all(cluster.jobs[j].state.value == "RUNNING" for j in (1, 2))


def test_a_request_out_of_time_defers_the_prolog_and_fails_nothing(play, monkeypatch):
    incident = shares_back(play)
    access = incident.episode.nodes
    # The request's time is spent by the time slurmd would start the prolog: start_process says ETIME.
    monkeypatch.setattr(access, "_time_left", lambda: 0.0)
    incident.step("scontrol release 1")
    monkeypatch.undo()
    cluster = incident.episode.controller.slurm
    assert not any(node.reason == "Prolog error" for node in cluster.nodes.values())
    incident.step("squeue")
    incident.episode.controller.advance(5)
    assert cluster.jobs[1].state.value == "RUNNING" and cluster.jobs[1].restarts == 1
    assert not any(node.reason == "Prolog error" for node in cluster.nodes.values())


@pytest.mark.parametrize(
    "silence",
    [
        "sed -i '2i if true; then exit 0; fi' /etc/slurm/prolog.sh",
        "sed -i '2i true && exit 0' /etc/slurm/prolog.sh",
        "sed -i '2i [ -n x ] \\&\\& exit 0' /etc/slurm/prolog.sh",
    ],
)
def test_a_prolog_that_succeeds_early_is_no_fix(play, silence):
    incident = prolog_half_fix(play, [on_drained(silence), "ssh compute-03 head -3 /etc/slurm/prolog.sh"])
    grader = task_of(incident).grader
    assert grader is not None
    # Everything but the Prolog's guard holds: the shares, the nodes, the jobs.
    assert grader.checks[grader.count_holding()][0] == "has_prolog"


def test_a_prolog_that_dropped_the_missing_shares_check_is_no_fix(play):
    drop = "sed -i '/ls -A .home/,/^fi/d' /etc/slurm/prolog.sh"
    incident = prolog_half_fix(play, [on_drained(drop)], seed=806)
    assert task_of(incident).params["share"] == "/home"


def test_an_epilog_that_names_the_cleaner_but_never_runs_it_is_no_fix(play):
    incident = play("hpc_epilog_typo", SEED)
    fake = "printf ': /usr/local/sbin/scratch-clean --all\\nexit 0\\n' > /etc/slurm/epilog.sh"
    assert_no_fix(
        incident,
        [
            "; ".join(f'ssh {n} "{fake}"' for n in NODES),
            "ssh compute-03 cat /etc/slurm/epilog.sh",
            RESUME_BOTH,
            "squeue",
        ],
    )


def test_the_epilog_check_cleans_up_its_plant_and_keeps_the_scratch_a_script_left(play):
    from hpcgym.scenarios import checks

    incident = play("hpc_epilog_typo", SEED)
    typo = str(task_of(incident).params["typo"])
    fix = f"sed -i 's|{typo} |/usr/local/sbin/scratch-clean |' /etc/slurm/epilog.sh"
    incident.step(f'ssh compute-03 "{fix}"')
    nodes = incident.episode.nodes
    assert checks.has_epilog(incident.episode, "compute-03", "/etc/slurm/epilog.sh")
    assert not checks.has_epilog(incident.episode, "compute-04", "/etc/slurm/epilog.sh")
    # The planted file is gone either way: grading leaves no trace the agent would find.
    for node in ("compute-03", "compute-04"):
        assert nodes.stat(node, f"{checks.SCRATCH_DIR}/{checks.SCRATCH_PLANT.split('/')[0]}") is None


def test_a_job_missing_from_the_record_has_not_ended(play):
    from hpcgym.scenarios import checks

    incident = play("hpc_completing_hung", SEED)
    user, _ = pair_users(incident)
    cluster = incident.episode.controller.slurm
    assert not checks.is_job_ended(incident.episode, user, "sim")  # CG
    cluster.jobs.clear()  # as slurmctld -c leaves it
    assert not checks.is_job_ended(incident.episode, user, "sim")
