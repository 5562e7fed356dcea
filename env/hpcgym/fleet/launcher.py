"""fleet-up, fleet-train, fleet-status and fleet-down: the Slurm side of an env-server fleet.

Each verb is a plan (what would be written and run, printable for `--dry-run`) and an action that
carries it out. Batch scripts come from `templates/*.sbatch` through `string.Template`, with every
value checked by `config` or quoted here, so the rendered script is the one submitted, byte for byte.
"""

from __future__ import annotations

import datetime
import shlex
import shutil
import string
import time
from dataclasses import dataclass, replace
from pathlib import Path

from hpcgym.fleet import slurm
from hpcgym.fleet.config import FleetConfig, FleetError, check_partition, check_time, dump_config, load_config
from hpcgym.fleet.coord import CoordDir, Launch, ServerMarker
from hpcgym.fleet.ready import live_markers

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Paths:
    """Where the jobs find hpcgym: the repository, its venv's python and the built images (absolute)."""

    repo: Path
    python: Path
    images: Path

    @classmethod
    def for_repo(cls, repo: Path, images: Path | None = None) -> Paths:
        """A checkout's .venv python and its build/images (or `images`)."""
        repo = repo.resolve()
        return cls(repo, repo / ".venv" / "bin" / "python", (images or repo / "build" / "images").resolve())

    def __post_init__(self) -> None:
        for name in ("repo", "python", "images"):
            value = getattr(self, name)
            if not value.is_absolute() or any(c.isspace() for c in str(value)):
                raise FleetError(f"{name} path {value} must be absolute and free of whitespace")


@dataclass(frozen=True)
class Plan:
    """One script to write into the coordination directory and the sbatch line that submits it."""

    coord: CoordDir
    launch: Launch
    config: FleetConfig
    script_path: Path
    script: str
    sbatch: list[str]

    def describe(self) -> str:
        """The script and the command line, as `--dry-run` prints them."""
        return f"# {self.script_path}\n{self.script}\n$ {shlex.join(self.sbatch)}\n"


def new_launch_id(now: datetime.datetime | None = None) -> str:
    return (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")


def with_overrides(
    config: FleetConfig,
    *,
    partition: str = "",
    sessions_per_server: int = 0,
    time_limit: str = "",
    trainer_partition: str = "",
    trainer_time: str = "",
    gpus: int | None = None,
) -> FleetConfig:
    """The config with the command line's overrides applied (empty or zero: keep the config's)."""
    server, trainer = config.server, config.trainer
    if partition:
        server = replace(server, partition=check_partition(partition))
    if sessions_per_server:
        server = replace(server, sessions_per_server=sessions_per_server)
    if time_limit:
        server = replace(server, time=check_time(time_limit))
    if trainer_partition:
        trainer = replace(trainer, partition=check_partition(trainer_partition))
    if trainer_time:
        trainer = replace(trainer, time=check_time(trainer_time))
    if gpus is not None:
        trainer = replace(trainer, gpus=gpus)
    return replace(config, server=server, trainer=trainer)


def render(template: str, values: dict[str, object]) -> str:
    """Fill `templates/<template>`; a placeholder without a value is an error, never left blank."""
    try:
        return string.Template((TEMPLATE_DIR / template).read_text()).substitute(values)
    except KeyError as e:
        raise FleetError(f"template {template} needs a value for {e}") from None


def _extra_lines(options: tuple[str, ...]) -> str:
    return "\n".join(f"#SBATCH {option}" for option in options) or "# (no extra sbatch options)"


def _check_coord_path(root: Path) -> Path:
    root = root.resolve()
    if any(c.isspace() or c in "'\"$`\\" for c in str(root)):
        raise FleetError(f"coordination dir {root} must not contain whitespace, quotes or shell characters")
    return root


def plan_up(config: FleetConfig, servers: int, coord_dir: Path, paths: Paths) -> Plan:
    """Plan a fleet of `servers` env servers (one Slurm array job) in a new coordination directory."""
    if servers < 1:
        raise FleetError(f"--servers must be at least 1, not {servers}")
    coord = CoordDir(_check_coord_path(coord_dir))
    launch = Launch(coord.launch_id, config.name, config.version, servers)
    s = config.server
    script = render(
        "server.sbatch",
        {
            "launch_id": launch.launch_id,
            "servers": servers,
            "config": config.name,
            "config_version": config.version,
            "last_task": servers - 1,
            "partition": s.partition,
            "cpus_per_task": s.cpus_per_task,
            "mem": s.mem,
            "time": s.time,
            "drain_s": s.drain_s,
            "logs_dir": coord.logs_dir,
            "extra_sbatch": _extra_lines(s.extra_sbatch),
            "images": shlex.quote(str(paths.images)),
            "sessions_per_server": s.sessions_per_server,
            "pool_size": s.pool_size,
            "python": shlex.quote(str(paths.python)),
            "coord_dir": shlex.quote(str(coord.root)),
            "ready_timeout_s": s.ready_timeout_s,
        },
    )
    return Plan(coord, launch, config, coord.server_script, script, slurm.sbatch_cmd(coord.server_script))


def up(plan: Plan) -> Launch:
    """Create the coordination directory (token included), write the script and submit the array."""
    plan.coord.create()
    plan.coord.config_file.write_text(dump_config(plan.config))
    plan.script_path.write_text(plan.script)
    launch = replace(plan.launch, server_job=slurm.submit(plan.sbatch))
    plan.coord.write_launch(launch)
    return launch


def plan_train(coord: CoordDir, paths: Paths, config: FleetConfig | None = None) -> Plan:
    """Plan the training job for an existing launch: it depends on the fleet's array job."""
    launch = coord.read_launch()
    if launch.server_job is None:
        raise FleetError(f"launch {launch.launch_id} has no server job", hint="run fleet-up first")
    if launch.train_job is not None:
        raise FleetError(f"launch {launch.launch_id} already has training job {launch.train_job}")
    config = config or load_config(coord.config_file)
    t = config.trainer
    if t.min_ready > launch.servers:
        raise FleetError(
            f"trainer.min_ready {t.min_ready} is more than the {launch.servers} servers launched"
        )
    script = render(
        "train.sbatch",
        {
            "launch_id": launch.launch_id,
            "config": config.name,
            "config_version": config.version,
            "min_ready_text": f"{t.min_ready} servers are" if t.min_ready else "every server is",
            "partition": t.partition,
            "cpus_per_task": t.cpus_per_task,
            "mem": t.mem,
            "time": t.time,
            "logs_dir": coord.logs_dir,
            "gpus_line": f"#SBATCH --gpus={t.gpus}" if t.gpus else "# (no GPUs requested)",
            "extra_sbatch": _extra_lines(t.extra_sbatch),
            "repo": shlex.quote(str(paths.repo)),
            "python": shlex.quote(str(paths.python)),
            "coord_dir": shlex.quote(str(coord.root)),
            "min_ready": t.min_ready,
            "wait_s": t.wait_s,
            "token": shlex.quote(str(coord.token)),
            "trainer_args": shlex.join(t.args),
        },
    )
    return Plan(
        coord,
        launch,
        config,
        coord.train_script,
        script,
        slurm.sbatch_cmd(coord.train_script, launch.server_job),
    )


def train(plan: Plan) -> Launch:
    """Write the training script and submit it after the fleet."""
    plan.script_path.write_text(plan.script)
    launch = replace(plan.coord.read_launch(), train_job=slurm.submit(plan.sbatch))
    plan.coord.write_launch(launch)
    return launch


@dataclass(frozen=True)
class TaskRow:
    """One line of fleet-status: an array task or the training job, and its server if ready."""

    role: str
    state: slurm.TaskState
    marker: ServerMarker | None


@dataclass(frozen=True)
class FleetStatus:
    launch: Launch
    rows: tuple[TaskRow, ...]

    @property
    def ready(self) -> list[ServerMarker]:
        return [row.marker for row in self.rows if row.marker is not None]


def status(coord: CoordDir) -> FleetStatus:
    """The launch's jobs as squeue sees them, each server joined to its marker when it is ready."""
    launch = coord.read_launch()
    states = slurm.tasks(launch.job_ids)
    live = {m.task_id: m for m in live_markers(coord.markers(), states)}
    rows = []
    for state in states:
        if state.array_job_id == launch.server_job:
            marker = live.get(state.task_id) if state.task_id is not None else None
            rows.append(TaskRow("server", state, marker))
        else:
            rows.append(TaskRow("train", state, None))
    return FleetStatus(launch, tuple(rows))


@dataclass(frozen=True)
class DownReport:
    launch: Launch
    graceful: bool
    seconds: float
    removed: Path


def down(coord: CoordDir, drain_timeout_s: float = 120.0, poll_s: float = 1.0) -> DownReport:
    """Stop the launch's jobs, wait until Slurm has none left, then delete the coordination directory.

    Running servers get SIGTERM (their batch shell, `serve`, passes it on and the server drains); what
    still runs after `drain_timeout_s` is cancelled outright. Slurm's process tracking ends every
    process a job started, so no server outlives its job.
    """
    launch = coord.read_launch()
    start = time.monotonic()
    jobs = launch.job_ids

    def alive() -> list[slurm.TaskState]:
        return [s for s in slurm.tasks(jobs) if s.state in slurm.ALIVE_STATES]

    graceful = True
    current = alive()
    if any(s.state == "PENDING" for s in current):
        slurm.cancel([s.job_id for s in current if s.state == "PENDING"])
    if any(s.state == "RUNNING" for s in current):
        slurm.cancel([s.job_id for s in current if s.state == "RUNNING"], signal="TERM", batch=True)
    while alive():
        if time.monotonic() - start > drain_timeout_s:
            graceful = False
            slurm.cancel(jobs)
            _wait_gone(alive, 120.0, poll_s)
            break
        time.sleep(poll_s)
    shutil.rmtree(coord.root)
    return DownReport(launch, graceful, time.monotonic() - start, coord.root)


def _wait_gone(alive, timeout_s: float, poll_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while remaining := alive():
        if time.monotonic() > deadline:
            left = ", ".join(f"{s.job_id}:{s.state}" for s in remaining)
            raise FleetError(f"jobs still in squeue after scancel: {left}", hint="ask your Slurm admin")
        time.sleep(poll_s)


def find_coord(coord_dir: str | Path | None, base: Path) -> CoordDir:
    """The coordination dir named, or else the newest launch under `base`."""
    if coord_dir:
        coord = CoordDir(Path(coord_dir).resolve())
    else:
        launches = sorted(p for p in base.glob("*/launch.json")) if base.is_dir() else []
        if not launches:
            raise FleetError(f"no fleet launch under {base}", hint="run fleet-up first, or pass --coord-dir")
        coord = CoordDir(launches[-1].parent)
    if not coord.exists():
        raise FleetError(f"{coord.root} holds no fleet launch (launch.json)")
    return coord


def status_table(fleet: FleetStatus):  # type: ignore[no-untyped-def]
    """fleet-status as a rich table."""
    from rich.table import Table

    launch = fleet.launch
    table = Table(
        title=f"fleet {launch.launch_id} ({launch.config} v{launch.config_version}): "
        f"{len(fleet.ready)} of {launch.servers} servers ready"
    )
    for column in ("role", "task", "job", "state", "node", "ready", "url"):
        table.add_column(column)
    for row in fleet.rows:
        s = row.state
        task = f"{s.array_job_id}_{s.task_id}" if s.task_id is not None else s.array_job_id
        ready = "yes" if row.marker else ("-" if row.role == "train" else "no")
        table.add_row(
            row.role, task, s.job_id, s.state, s.node or "-", ready, row.marker.url if row.marker else ""
        )
    return table
