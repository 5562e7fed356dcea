"""Job arrays, as Debian's slurm-wlm 22.05.8 showed them (`invoke fidelity`, state `array`, and by hand).

`sbatch --array=1-10` on eight CPUs: tasks 1-8 ran as jobs 2-9, the array's own record (job 1)
kept tasks 9-10 pending (`1_[9-10]` in squeue, ArrayTaskId=9-10 in scontrol, listed after the
started tasks); the last task to start runs in job 1 itself.
"""

from __future__ import annotations

from tests.controller.test_rules import run, settled


def test_started_tasks_get_their_own_job_ids_and_the_array_keeps_the_rest() -> None:
    c = settled()
    assert run(c, "sbatch", "--array=1-6", "--wrap", "sleep 120") == "Submitted batch job 1\n"
    assert run(c, "squeue", "-h", "-o", "%i %A %F %K %t %r") == (
        "1_[5-6] 1 1 5-6 PD Resources\n"
        "1_1 2 1 1 R None\n"
        "1_2 3 1 2 R None\n"
        "1_3 4 1 3 R None\n"
        "1_4 5 1 4 R None\n"
    )
    assert run(c, "squeue", "-h", "-r", "-t", "PD", "-o", "%i") == "1_5\n1_6\n"
    shown = run(c, "scontrol", "show", "job")
    firsts = [line for line in shown.splitlines() if line.startswith("JobId=")]
    assert firsts == [
        "JobId=2 ArrayJobId=1 ArrayTaskId=1 JobName=wrap",
        "JobId=3 ArrayJobId=1 ArrayTaskId=2 JobName=wrap",
        "JobId=4 ArrayJobId=1 ArrayTaskId=3 JobName=wrap",
        "JobId=5 ArrayJobId=1 ArrayTaskId=4 JobName=wrap",
        "JobId=1 ArrayJobId=1 ArrayTaskId=5-6 JobName=wrap",
    ]
    assert "StdOut=/root/slurm-1_1.out" in shown
    assert "StdOut=/root/slurm-1_4294967294.out" in shown
    # The next job id comes after the split tasks'.
    assert run(c, "sbatch", "--wrap", "true") == "Submitted batch job 6\n"


def test_the_last_task_runs_in_the_arrays_own_record() -> None:
    c = settled()
    run(c, "sbatch", "--array=1-3", "-o", "out-%A-%a-%j.txt", "--wrap", "sleep 120")
    assert run(c, "squeue", "-h", "-o", "%i %A") == "1_1 2\n1_2 3\n1_3 1\n"
    one = run(c, "scontrol", "show", "job", "1_3")
    assert one.startswith("JobId=1 ArrayJobId=1 ArrayTaskId=3 JobName=wrap")
    assert "StdOut=/root/out-1-3-1.txt" in one
    assert "StdOut=/root/out-1-1-2.txt" in run(c, "scontrol", "show", "job", "2")


def test_refused_specs_use_no_job_id() -> None:
    c = settled()
    refused = "sbatch: error: Batch job submission failed: Invalid job array specification\n"
    assert run(c, "sbatch", "--array=bad", "--wrap", "true") == refused
    assert run(c, "sbatch", "--array=1-5000", "--wrap", "true") == refused
    assert run(c, "sbatch", "--array=1,3,5-9:2", "--wrap", "sleep 60") == "Submitted batch job 1\n"
    # Four CPUs: task 9 waits.
    assert run(c, "squeue", "-h", "-r", "-o", "%i %t") == "1_9 PD\n1_1 R\n1_3 R\n1_5 R\n1_7 R\n"


def test_throttle_holds_tasks_back() -> None:
    c = settled()
    run(c, "sbatch", "--array=1-3%1", "--wrap", "sleep 120")
    assert run(c, "squeue", "-h", "-o", "%i %t %r") == "1_[2-3] PD JobArrayTaskLimit\n1_1 R None\n"
    assert "ArrayTaskThrottle=1 JobName=wrap" in run(c, "scontrol", "show", "job", "1")


def test_scancel_of_a_pending_task_a_running_task_and_the_array() -> None:
    c = settled()
    run(c, "sbatch", "--array=1-6", "--wrap", "sleep 120")
    assert run(c, "scancel", "1_6") == ""
    assert run(c, "squeue", "-h", "-t", "PD", "-o", "%i") == "1_[5]\n"
    run(c, "scancel", "1_3")
    # squeue sorts by state name: CANCELLED before PENDING and RUNNING.
    assert run(c, "squeue", "-h", "-t", "all", "-o", "%i %t").splitlines()[0] == "1_3 CA"
    run(c, "scancel", "1")
    assert {line.split()[1] for line in run(c, "squeue", "-h", "-t", "all", "-o", "%i %t").splitlines()} == {
        "CA"
    }
