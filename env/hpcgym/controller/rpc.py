"""What Slurm clients send slurmctld and the errors it answers with.

`JobRequest` is the allocation sbatch and srun ask for; `SlurmError` carries Slurm's errno text
(`slurm_strerror`), which each client prints after its own prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hpcgym.controller.timefmt import TimeLimit

# slurm_strerror(SLURM_COMMUNICATIONS_CONNECTION_ERROR): what every client reports, after its own
# prefix, when slurmctld does not answer.
CONTROLLER_DOWN = "Unable to contact slurm controller (connect failure)"
# slurm_strerror(SLURM_PROTOCOL_AUTHENTICATION_ERROR): the client could not get a munge credential.
AUTH_ERROR = "Protocol authentication error"


class SlurmError(Exception):
    """A request slurmctld refuses; the message is Slurm's errno text (`slurm_strerror`).

    `detail` is the extra line slurmctld sends back for some refusals, which the client prints first
    (`Memory specification can not be satisfied`).
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail


@dataclass
class User:
    name: str
    uid: int
    group: str
    gid: int


@dataclass
class JobRequest:
    """What a client asks for; sbatch and srun fill it from their flags."""

    name: str
    user: User
    work_dir: str
    batch: bool
    command: str | None
    partition: str | None = None
    min_nodes: int | None = None
    max_nodes: int | None = None
    num_tasks: int | None = None
    cpus_per_task: int = 1
    time_limit_min: TimeLimit = None
    time_limit_set: bool = False
    req_nodes: list[str] = field(default_factory=list)
    exc_nodes: list[str] = field(default_factory=list)
    hold: bool = False
    begin_s: int | None = None
    run_for_s: int | None = None
    exit_code: int = 0
    alloc_sid: int = 1
    stdout_path: str | None = None
    stderr_path: str | None = None
    mem_mb: int | None = None
    gres: str | None = None
    exclusive: bool = False
    dependency: list[tuple[str, int]] = field(default_factory=list)
    # sbatch --array=SPEC as given (parsed and checked by slurmctld: `arrays.parse_array_spec`).
    array_spec: str | None = None
    # -L/--licenses and --reservation as given.
    licenses: str | None = None
    reservation: str | None = None
