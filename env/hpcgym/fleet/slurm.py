"""The few Slurm commands a fleet needs (sbatch, squeue, scancel), through hpcgym's one run wrapper.

`*_cmd` functions return argv lists, so `--dry-run` can print exactly what would run. `SLURM_CONF` is
passed through when set: a site (or the test cluster) may keep its slurm.conf somewhere else.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpcgym.errors import MissingTool
from hpcgym.fleet.config import FleetError
from hpcgym.run import CommandFailed, run

# squeue states in which a job still holds (or will hold) resources.
ALIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "SUSPENDED",
        "REQUEUED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
    }
)
_SQUEUE_FORMAT = "%F|%K|%A|%T|%N"


@dataclass(frozen=True)
class TaskState:
    """One row of squeue -r: an array task (or a plain job, task_id None)."""

    array_job_id: str
    task_id: int | None
    job_id: str
    state: str
    node: str

    @property
    def is_running(self) -> bool:
        return self.state == "RUNNING"


def _env() -> dict[str, str]:
    return {"SLURM_CONF": os.environ["SLURM_CONF"]} if os.environ.get("SLURM_CONF") else {}


def _slurm(argv: Sequence[str], timeout_s: float = 60) -> str:
    if shutil.which(argv[0], path=os.environ.get("PATH", "") + ":/usr/bin:/bin") is None:
        raise MissingTool(
            f"{argv[0]} is not installed",
            hint="apt-get install slurm-client (or load your site's slurm module)",
        )
    try:
        return run(argv, env=_env(), timeout_s=timeout_s).stdout
    except CommandFailed as e:
        raise FleetError(f"Slurm refused: {e}") from None


def sbatch_cmd(script: Path, dependency: str | None = None) -> list[str]:
    """The sbatch command line that submits `script` (after `dependency` has started, if given)."""
    return [
        "sbatch",
        "--parsable",
        *([f"--dependency=after:{dependency}"] if dependency else []),
        str(script),
    ]


def submit(argv: Sequence[str]) -> str:
    """Run an sbatch command line; return the job id."""
    out = _slurm(argv).strip()
    job_id = out.splitlines()[-1].split(";")[0] if out else ""
    if not job_id.isdigit():
        raise FleetError(f"sbatch printed no job id: {out!r}")
    return job_id


def tasks(job_ids: Sequence[str]) -> list[TaskState]:
    """The rows squeue shows for these jobs (array tasks one by one); forgotten jobs give no row."""
    if not job_ids:
        return []
    wanted = set(job_ids)
    # Asking for all jobs and filtering here, because `squeue -j` fails on a job id Slurm has purged.
    out = _slurm(["squeue", "--noheader", "--array", "--all", f"--format={_SQUEUE_FORMAT}"])
    rows = []
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5 or (parts[0] not in wanted and parts[2] not in wanted):
            continue
        array_job, task, job, state, node = parts
        rows.append(TaskState(array_job, int(task) if task.isdigit() else None, job, state, node))
    return sorted(rows, key=lambda r: (int(r.array_job_id), r.task_id or 0))


def scancel_cmd(job_ids: Sequence[str], *, signal: str | None = None, batch: bool = False) -> list[str]:
    """The scancel command line: plain cancel, or one signal to the batch shells only (`batch`)."""
    return ["scancel", *(["--batch"] if batch else []), *([f"--signal={signal}"] if signal else []), *job_ids]


def cancel(job_ids: Sequence[str], *, signal: str | None = None, batch: bool = False) -> None:
    if job_ids:
        _slurm(scancel_cmd(job_ids, signal=signal, batch=batch))
