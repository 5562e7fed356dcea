"""`invoke fleet-bench`: how a fleet of env servers holds many concurrent sessions, and what losing one costs.

The fleet side lives here: `bench_local_fleet` starts a private Slurm cluster (`localslurm`), runs
fleet-up before and fleet-down after; `bench_launched_fleet` measures a fleet already running on the
user's own cluster; `kill_server` takes one server down halfway. The sessions themselves are driven by
a `Drive` the caller passes in: `invoke fleet-bench` gives `training.fleet_bench.run_fleet_bench`, the
trainer's own client, so placement, failover and masking are the ones training gets (and hpcgym never
imports training). Tables and JSON are made here; `invoke fleet-bench` prints.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from hpcgym.fleet import launcher, slurm
from hpcgym.fleet.config import FleetError, load_config
from hpcgym.fleet.coord import CoordDir, ServerMarker
from hpcgym.fleet.localslurm import local_slurm, missing_binaries
from hpcgym.fleet.ready import ready_servers, wait_ready

STEP_COMMAND = "sinfo -N -h -o '%N %t'"
PERCENTILES = (50, 95, 99)

Log = Callable[[str], None]


@dataclass(frozen=True)
class FleetBenchOptions:
    """What one benchmark does.

    Attributes:
        sessions: concurrent sessions, all open before the first step.
        steps: commands per session; with a kill, the first half run before it and the rest after.
        scenarios: incidents the sessions reset to (two seeds each, round robin).
        reset_concurrency: resets in flight at once; a 2-core machine running 64 at once would
            push some past the client's 60 s reply limit.
        command: what every step types.
        open_timeout_s: how long opening every session may take before the steps start anyway.
    """

    sessions: int = 64
    steps: int = 8
    scenarios: tuple[str, ...] = ("hpc_munge", "hpc_outage")
    reset_concurrency: int = 4
    command: str = STEP_COMMAND
    open_timeout_s: float = 900.0

    def __post_init__(self) -> None:
        if self.sessions < 1:
            raise FleetError(f"--sessions must be at least 1, not {self.sessions}")
        if self.steps < 2:
            raise FleetError(f"--steps must be at least 2 (half before a kill, half after), not {self.steps}")
        if self.reset_concurrency < 1:
            raise FleetError(f"reset concurrency must be at least 1, not {self.reset_concurrency}")


@dataclass
class FleetBenchReport:
    """Everything one benchmark measured (seconds throughout); `summary()` is what JSON gets."""

    servers: int
    sessions: int
    steps: int
    command: str
    ready_s: float | None = None
    open_s: float = 0.0
    placement: dict[str, int] = field(default_factory=dict)  # sessions per server at reset
    final_placement: dict[str, int] = field(default_factory=dict)  # where they ended
    reset_s: list[float] = field(default_factory=list)
    step_before_s: list[float] = field(default_factory=list)
    step_after_s: list[float] = field(default_factory=list)
    step_moved_s: list[float] = field(default_factory=list)  # steps that moved their episode (in after)
    killed: str | None = None
    kill_s: float | None = None  # scancel until Slurm no longer runs the task
    finished: int = 0
    reset_failed: int = 0
    lost: int = 0  # infrastructure-failed episodes: masked from training, never scored
    errors: list[str] = field(default_factory=list)
    pool: dict[str, float] = field(default_factory=dict)
    down_s: float | None = None
    down_graceful: bool | None = None

    @property
    def phases(self) -> tuple[str, str]:
        return ("before kill", "after kill") if self.killed else ("first half", "second half")

    def summary(self) -> dict[str, Any]:
        """The figures as plain JSON values (milliseconds rounded to 0.1)."""
        before, after = (latency_summary(xs) for xs in (self.step_before_s, self.step_after_s))
        return {
            "servers": self.servers,
            "sessions": self.sessions,
            "steps_per_session": self.steps,
            "command": self.command,
            "ready_s": _round(self.ready_s),
            "open_s": _round(self.open_s),
            "placement": dict(sorted(self.placement.items())),
            "final_placement": dict(sorted(self.final_placement.items())),
            "reset_ms": latency_summary(self.reset_s),
            "step_ms": {
                "before": before,
                "after": after,
                "after_over_before": ratios(before, after),
                "moving_episode": latency_summary(self.step_moved_s),
            },
            "phases": list(self.phases),
            "killed": self.killed,
            "kill_s": _round(self.kill_s),
            "episodes": {
                "finished": self.finished,
                "reset_failed": self.reset_failed,
                "moved": int(self.pool.get("fleet/episodes_moved", 0)),
                "lost_masked": self.lost,
                "errors": len(self.errors),
            },
            "errors": self.errors[:10],
            "pool": {name.removeprefix("fleet/"): int(value) for name, value in sorted(self.pool.items())},
            "down_s": _round(self.down_s),
            "down_graceful": self.down_graceful,
        }

    def to_json(self) -> str:
        return json.dumps(self.summary(), indent=1) + "\n"


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (p in 0..100) of a non-empty sample."""
    if not values:
        raise ValueError("percentile of an empty sample")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not within 0..100")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def latency_summary(values_s: Sequence[float]) -> dict[str, float | int]:
    """Count, p50/p95/p99 and max in milliseconds (just the count when there is no sample)."""
    if not values_s:
        return {"n": 0}
    out: dict[str, float | int] = {"n": len(values_s)}
    for p in PERCENTILES:
        out[f"p{p}"] = round(percentile(values_s, p) * 1000, 1)
    out["max"] = round(max(values_s) * 1000, 1)
    return out


def ratios(before: dict[str, float | int], after: dict[str, float | int]) -> dict[str, float]:
    """After over before for each latency figure both sides have (not the counts)."""
    return {
        key: round(after[key] / before[key], 2)
        for key in before
        if key != "n" and key in after and before[key] > 0
    }


class Drive(Protocol):
    """What opens the sessions over the fleet's ready servers, steps them all at once and reports.

    `kill`, when given, is called once every session has run half its steps; it takes a server down
    and returns what it killed (its URL). Fleet-level fields (ready and down times) are left unset.
    """

    def __call__(
        self,
        urls: Sequence[str],
        api_key: str,
        options: FleetBenchOptions,
        kill: Callable[[], str] | None = None,
        log: Log | None = None,
    ) -> FleetBenchReport: ...


# ---- fleets: a private one on local Slurm, or one the user launched ------------------------------------


def kill_server(coord: CoordDir, victim: ServerMarker, timeout_s: float = 120.0) -> str:
    """Cancel one array task (as a node failure or a preemption would) and wait until Slurm ends it."""
    task = f"{victim.array_job_id}_{victim.task_id}"
    slurm.cancel([task])
    deadline = time.monotonic() + timeout_s
    while any(
        s.task_id == victim.task_id and s.state in slurm.ALIVE_STATES
        for s in slurm.tasks([victim.array_job_id])
    ):
        if time.monotonic() > deadline:
            raise FleetError(f"array task {task} still runs {timeout_s:g} s after scancel")
        time.sleep(0.5)
    return victim.url


def _killer(coord: CoordDir, markers: list[ServerMarker]) -> Callable[[], str]:
    # The lowest task id, so the choice does not depend on which server announced itself first.
    victim = min(markers, key=lambda m: m.task_id)
    return lambda: kill_server(coord, victim)


def bench_launched_fleet(
    drive: Drive, coord: CoordDir, options: FleetBenchOptions, kill_one: bool, log: Log | None = None
) -> FleetBenchReport:
    """Benchmark a fleet fleet-up launched on the user's cluster; it stays up (minus a killed server)."""
    markers = ready_servers(coord)
    if kill_one and len(markers) < 2:
        raise FleetError(
            f"{len(markers)} ready server(s): killing one would leave none", hint="pass --no-kill-one"
        )
    return drive(
        [m.url for m in markers],
        coord.read_token(),
        options,
        _killer(coord, markers) if kill_one else None,
        log,
    )


BENCH_CONFIG = """\
name: fleet-bench
version: 1
server:
  partition: {partition}
  cpus_per_task: 1
  mem: 3000M
  time: "01:00:00"
  sessions_per_server: {sessions_per_server}
  pool_size: 2
  ready_timeout_s: 300
  drain_s: 30
trainer:
  partition: {partition}
  gpus: 0
  cpus_per_task: 1
  mem: 1000M
  time: "00:05:00"
  min_ready: 0
  wait_s: 60
  args: []
"""


@contextlib.contextmanager
def _slurm_conf(conf: Path) -> Iterator[None]:
    # hpcgym.fleet.slurm reads SLURM_CONF from the environment, as Slurm's own clients do.
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


def bench_local_fleet(
    drive: Drive,
    paths: launcher.Paths,
    servers: int,
    sessions_per_server: int,
    options: FleetBenchOptions,
    kill_one: bool,
    log: Log | None = None,
    work_dir: Path | None = None,
) -> FleetBenchReport:
    """Start a private Slurm cluster, fleet-up, benchmark, fleet-down and stop the cluster (always).

    Raises:
        FleetError: Slurm or munge is missing, the fleet has too few slots for the sessions (after
            the kill), or it did not become ready.
    """
    say = log or (lambda _: None)
    missing = missing_binaries()
    if missing:
        raise FleetError(
            f"Slurm is not installed ({', '.join(missing)})", hint="apt-get install slurm-wlm munge"
        )
    if os.geteuid() != 0:
        raise FleetError("a private Slurm cluster needs root (slurmd runs jobs and the servers' sandboxes)")
    serving = servers - 1 if kill_one else servers
    if serving < 1 or serving * sessions_per_server < options.sessions:
        raise FleetError(
            f"{serving} serving server(s) x {sessions_per_server} sessions cannot hold {options.sessions}"
            + (" after the kill" if kill_one else ""),
            hint="raise --servers or --sessions-per-server",
        )
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-bench-", dir=work_dir)))
        say(f"starting a private Slurm cluster with {servers} nodes under {root}")
        cluster = stack.enter_context(local_slurm(root / "slurm", nodes=servers, cpus_per_node=1))
        stack.enter_context(_slurm_conf(cluster.conf))
        config_path = root / "fleet-bench.yaml"
        config_path.write_text(
            BENCH_CONFIG.format(partition=cluster.partition, sessions_per_server=sessions_per_server)
        )
        coord = CoordDir(root / "coord")
        start = time.monotonic()
        launch = launcher.up(launcher.plan_up(load_config(config_path), servers, coord.root, paths))
        say(f"fleet-up: array job {launch.server_job} with {servers} servers")
        try:
            markers = wait_ready(coord, 0, 600.0, poll_s=0.5)
            ready_s = time.monotonic() - start
            say(f"{len(markers)} servers ready after {ready_s:.1f} s")
            report = drive(
                [m.url for m in markers],
                coord.read_token(),
                options,
                _killer(coord, markers) if kill_one else None,
                log,
            )
            report.ready_s = ready_s
        finally:
            down = launcher.down(coord, drain_timeout_s=60.0, poll_s=0.5)
            say(f"fleet-down in {down.seconds:.1f} s ({'drained' if down.graceful else 'cancelled'})")
        report.down_s, report.down_graceful = down.seconds, down.graceful
        return report


# ---- output -------------------------------------------------------------------------------------------


def fleet_report_tables(report: FleetBenchReport) -> list[Any]:
    """The report as rich tables: the fleet's figures, then step latency per phase with ratios."""
    from rich.table import Table

    s = report.summary()
    fleet = Table(
        title=f"fleet-bench: {report.servers} servers, {report.sessions} sessions x {report.steps} steps"
    )
    fleet.add_column("figure")
    fleet.add_column("value", justify="right")

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} s"

    reset = s["reset_ms"]
    episodes = s["episodes"]
    fleet.add_row("servers ready after fleet-up", seconds(report.ready_s))
    fleet.add_row("every session open after", seconds(report.open_s))
    fleet.add_row("sessions per server (at reset)", " ".join(str(n) for n in s["placement"].values()) or "-")
    fleet.add_row("sessions per server (at the end)", " ".join(str(n) for n in s["final_placement"].values()))
    fleet.add_row("reset p50 / p95", f"{reset.get('p50', '-')} / {reset.get('p95', '-')} ms")
    fleet.add_row("server killed", f"{report.killed} ({seconds(report.kill_s)})" if report.killed else "none")
    fleet.add_row("episodes finished", str(episodes["finished"]))
    fleet.add_row("episodes moved to another server", str(episodes["moved"]))
    fleet.add_row("episodes lost (masked)", str(episodes["lost_masked"]))
    fleet.add_row("resets that found no server", str(episodes["reset_failed"]))
    fleet.add_row("errors", str(episodes["errors"]))
    fleet.add_row("pool", ", ".join(f"{k}={v}" for k, v in s["pool"].items()))
    fleet.add_row(
        "fleet-down",
        seconds(report.down_s) + ("" if report.down_graceful in (None, True) else " (cancelled)"),
    )

    before_name, after_name = report.phases
    steps = s["step_ms"]
    latency = Table(title=f"step latency, ms ({report.command!r})")
    for column in ("", before_name, after_name, "after / before", "steps that moved an episode"):
        latency.add_column(column, justify="right")
    for key in ("n", *(f"p{p}" for p in PERCENTILES), "max"):
        ratio = steps["after_over_before"].get(key)
        latency.add_row(
            key,
            str(steps["before"].get(key, "-")),
            str(steps["after"].get(key, "-")),
            "" if ratio is None else f"{ratio:.2f}x",
            str(steps["moving_episode"].get(key, "-")),
        )
    return [fleet, latency]
