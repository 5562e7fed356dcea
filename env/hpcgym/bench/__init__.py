"""The benchmarks, in one room: what a reset, a step, a session and a fleet really cost.

`episodes.py` measures episodes in this process (`invoke bench`: resets, steps, idle capacity,
density, the controller, the two tool clients, beside a copy-mode baseline); `loadtest.py` loads an
OpenEnv server over its WebSocket (`invoke bench`'s load figures, `invoke burst`); `targets.py` checks
one run's figures against the project's targets; `fleet.py` measures a fleet of servers on Slurm
and what losing one costs (`invoke fleet-bench`, with the sessions driven by training's client,
which the caller passes in). Nothing outside the benchmarks imports from here.
"""

from hpcgym.bench.episodes import run_bench
from hpcgym.bench.fleet import (
    Drive,
    FleetBenchOptions,
    FleetBenchReport,
    bench_launched_fleet,
    bench_local_fleet,
    fleet_report_tables,
)
from hpcgym.bench.loadtest import BurstReport, LoadReport, run_burst, run_bursttest, run_load, run_loadtest
from hpcgym.bench.targets import Target, check_targets, print_targets

__all__ = [
    "BurstReport",
    "Drive",
    "FleetBenchOptions",
    "FleetBenchReport",
    "LoadReport",
    "Target",
    "bench_launched_fleet",
    "bench_local_fleet",
    "check_targets",
    "fleet_report_tables",
    "print_targets",
    "run_bench",
    "run_burst",
    "run_bursttest",
    "run_load",
    "run_loadtest",
]
