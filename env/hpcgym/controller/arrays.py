"""Job arrays (`sbatch --array`): the index spec, the task labels clients print, splitting a task off.

slurmctld keeps one record for a whole array until its scheduler starts a task. The started task then
takes a new job id of its own while a copy of the record, appended to the job list, keeps the
array's job id and the tasks still pending; the last task to start runs in that record itself. Seen
on Debian's 22.05.8 with `sbatch --array=1-6`: tasks 1-5 ran as jobs 2-6, task 6 as job 1, and
`scontrol show job` listed jobs 2-6 before job 1. The scheduler (`scheduler.py`) calls `take_task`;
the clients only format what is here.
"""

from __future__ import annotations

import copy
import re

from hpcgym.controller.numbers import to_int
from hpcgym.controller.state import Job, JobState

# %a of the array's own record, while no task runs in it (slurm-1_4294967294.out, 22.05.8).
NO_TASK = 4294967294
DEFAULT_OUTPUT = "slurm-%A_%a.out"
_RANGE = re.compile(r"^([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?$")


def parse_array_spec(spec: str, max_array_size: int) -> tuple[list[int], int] | None:
    """The task ids of `--array=SPEC` and its `%N` throttle (0: none); None if slurmctld refuses it."""
    body, _, throttle_text = spec.partition("%")
    throttle = 0
    if throttle_text:
        parsed = to_int(throttle_text)
        if parsed is None:
            return None
        throttle = parsed
    tasks: set[int] = set()
    for part in body.split(","):
        match = _RANGE.match(part)
        if match is None:
            return None
        low = to_int(match.group(1))
        high = to_int(match.group(2)) if match.group(2) else low
        step = to_int(match.group(3)) if match.group(3) else 1
        if low is None or high is None or not step or high < low or high >= max_array_size:
            return None
        tasks.update(range(low, high + 1, step))
    return sorted(tasks), throttle


def task_str(tasks: list[int]) -> str:
    """Task ids as slurmctld's array_task_str prints them: runs joined with '-', then ','."""
    runs: list[list[int]] = []
    for task in sorted(tasks):
        if runs and runs[-1][-1] + 1 == task:
            runs[-1].append(task)
        else:
            runs.append([task])
    return ",".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def is_meta(job: Job) -> bool:
    """The array's own record while it still holds pending tasks."""
    return job.array_job_id is not None and job.array_task_id is None


def label(job: Job) -> str:
    """The id squeue's %i prints: `1_3` for a task, `1_[4-6]` for an array's pending tasks."""
    if job.array_job_id is None:
        return str(job.job_id)
    if job.array_task_id is not None:
        return f"{job.array_job_id}_{job.array_task_id}"
    return f"{job.array_job_id}_[{task_str(job.array_pending)}]"


def task_field(job: Job) -> str:
    """The task ids scontrol prints as ArrayTaskId= and squeue as %K."""
    if job.array_task_id is not None:
        return str(job.array_task_id)
    return task_str(job.array_pending)


def expand_output(pattern: str, job_id: int, work_dir: str, array: tuple[int, int] | None = None) -> str:
    """The path of sbatch's -o/-e PATTERN: %j/%J the job id, %% a percent sign.

    For an array task (`array`: the array's job id, the task) %A and %a too; relative is under WorkDir.
    """
    path = pattern.replace("%%", "\0")
    if array is not None:
        path = path.replace("%A", str(array[0])).replace("%a", str(array[1]))
    path = path.replace("%j", str(job_id)).replace("%J", str(job_id)).replace("\0", "%")
    return path if path.startswith("/") else f"{work_dir.rstrip('/')}/{path}"


def set_outputs(job: Job, task_id: int) -> None:
    assert job.array_job_id is not None
    array = (job.array_job_id, task_id)
    job.stdout_path = expand_output(job.array_output or DEFAULT_OUTPUT, job.job_id, job.work_dir, array)
    err = job.array_error
    job.stderr_path = expand_output(err, job.job_id, job.work_dir, array) if err else job.stdout_path


def split_task(meta: Job, new_job_id: int, new_seq: int) -> Job:
    """Split the first pending task off the array's record (see the module docstring).

    The task keeps the record's place in the job list and gets `new_job_id`; the record that keeps
    the array's id moves to the end of the list (`new_seq`) with the tasks still pending.
    """
    task_id = meta.array_pending[0]
    task = copy.copy(meta)
    task.job_id, task.array_task_id, task.array_pending = new_job_id, task_id, []
    task.req_nodes, task.exc_nodes = list(meta.req_nodes), list(meta.exc_nodes)
    task.dependency, task.steps = list(meta.dependency), []
    task.nodes, task.cpus_by_node = [], {}
    set_outputs(task, task_id)
    meta.array_pending = meta.array_pending[1:]
    meta.seq = new_seq
    return task


def last_task(meta: Job) -> Job:
    """The array's record takes its only pending task and runs it itself."""
    meta.array_task_id, meta.array_pending = meta.array_pending[0], []
    set_outputs(meta, meta.array_task_id)
    return meta


def running_tasks(jobs: list[Job], array_job_id: int) -> int:
    return sum(1 for job in jobs if job.array_job_id == array_job_id and job.state is JobState.RUNNING)
