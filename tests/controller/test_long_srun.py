"""An srun step that outlives the task runner's host-side bound keeps its job running.

What real Slurm 22.05.8 did (Debian's slurm-wlm, `hpcgym.fleet.localslurm`): `srun -w node3 -t 1 sleep
600 &` stayed RUNNING until its time limit, then ended TIMEOUT, Reason=TimeLimit, ExitCode=0:15 (srun
exited 143); `srun -w node2 sleep 600 &` stayed RUNNING until node2's slurmd had been silent for
SlurmdTimeout, then ended NODE_FAIL, Reason=NodeDown, ExitCode=0:0. The runner stops the real process
after a few host seconds (`TaskResult.timed_out`); that must not end the job.
"""

from __future__ import annotations

from hpcgym.controller import Controller, TaskRequest, TaskResult, parse_slurm_conf
from tests.controller.test_rules import CONF, run


def stopped_at_bound(task: TaskRequest) -> TaskResult:
    # What the episode's runner returns for `sleep 600` after its wall-clock bound: SIGKILLed, 137.
    return TaskResult(stdout="started\n", exit_code=137, timed_out=True)


def make() -> Controller:
    return Controller(parse_slurm_conf(CONF), run_task=stopped_at_bound)


def job_fields(controller: Controller, job_id: int) -> str:
    return run(controller, "scontrol", "show", "job", str(job_id))


def test_step_past_the_runners_bound_is_not_a_failed_job() -> None:
    c = make()
    reply = c.handle("login", ["srun", "sleep", "600"], "/root")
    assert (reply.stdout, reply.stderr, reply.exit_code) == ("started\n", "", 0)
    c.tick()
    assert run(c, "squeue", "-h", "-o", "%i %t %N") == "1 R compute-01\n"
    assert "mix compute-01" in run(c, "sinfo")
    # No time limit: it runs on, however long the virtual clock goes.
    c.advance(10_000)
    assert "JobState=RUNNING Reason=None" in job_fields(c, 1)
    assert "ExitCode=0:0" in job_fields(c, 1)


def test_long_step_ends_at_its_time_limit_with_timeout() -> None:
    c = make()
    run(c, "srun", "-t", "1", "sleep", "600")
    c.advance(50)
    assert "JobState=RUNNING" in job_fields(c, 1)
    # The limit passes at 60 s; slurmctld's periodic pass sees it at 90 s.
    c.advance(35)
    assert "JobState=RUNNING" in job_fields(c, 1)
    c.advance(10)
    job = job_fields(c, 1)
    assert "JobState=TIMEOUT Reason=TimeLimit" in job
    assert "ExitCode=0:15" in job
    c.advance(10)
    assert "idle compute-[01-02]" in run(c, "sinfo")


def test_long_step_ends_with_node_fail_when_its_node_dies() -> None:
    c = make()
    run(c, "srun", "-w", "compute-02", "sleep", "600")
    c.slurm.stop_slurmd("compute-02")
    c.advance(10)
    assert "JobState=RUNNING" in job_fields(c, 1)
    c.advance(40)
    job = job_fields(c, 1)
    assert "JobState=NODE_FAIL Reason=NodeDown" in job
    assert "ExitCode=0:0" in job


def test_long_step_can_be_cancelled() -> None:
    c = make()
    run(c, "srun", "sleep", "600")
    run(c, "scancel", "1")
    assert "JobState=CANCELLED" in job_fields(c, 1)


def test_task_that_really_exits_137_still_fails_its_job() -> None:
    c = Controller(parse_slurm_conf(CONF), run_task=lambda t: TaskResult(exit_code=137))
    reply = c.handle("login", ["srun", "./oom"], "/root")
    assert reply.stderr == "srun: error: compute-01: task 0: Exited with exit code 137\n"
    assert reply.exit_code == 137
    c.tick()
    assert "JobState=FAILED" in job_fields(c, 1)
