"""fleet-bench's measurement and report on a tiny fleet: two in-process servers, one drained halfway.

The real-Slurm path (`invoke fleet-bench --local-slurm`) is the same `run_fleet_bench` behind fleet-up;
tests/fleet/test_slurm_fleet.py already covers that fleet itself.
"""

from __future__ import annotations

import contextlib
import json

import pytest
from rich.console import Console

from hpcgym.bench.fleet import FleetBenchOptions, fleet_report_tables, percentile, ratios
from hpcgym.fleet.config import FleetError
from hpcgym.interfaces.openenv.server.app import ServerSettings, build_app
from tests.fleet.test_pool import running
from training.fleet_bench import run_fleet_bench


def test_percentiles_are_nearest_rank_and_ratios_skip_counts() -> None:
    sample = [0.4, 0.1, 0.3, 0.2]
    assert [percentile(sample, p) for p in (0, 25, 50, 75, 95, 100)] == [0.1, 0.1, 0.2, 0.3, 0.4, 0.4]
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)
    assert ratios({"n": 4, "p50": 10.0, "max": 0.0}, {"n": 8, "p50": 25.0, "max": 3.0}) == {"p50": 2.5}
    with pytest.raises(FleetError, match="--steps"):
        FleetBenchOptions(steps=1)


def test_a_tiny_fleet_is_measured_and_a_drained_servers_episodes_move(runtime) -> None:
    with contextlib.ExitStack() as stack:
        a, b = (
            stack.enter_context(
                running(build_app(ServerSettings(max_sessions=4, pool_size=0, drain_s=0.5), runtime=runtime))
            )
            for _ in range(2)
        )

        def kill() -> str:
            a.drain.start()
            a.wait_drained()
            return a.url

        options = FleetBenchOptions(sessions=4, steps=4, scenarios=("hpc_munge",), reset_concurrency=2)
        report = run_fleet_bench([a.url, b.url], "", options, kill=kill)

    assert report.errors == []
    assert report.placement == {a.url: 2, b.url: 2}  # most free capacity first, ties round robin
    assert report.final_placement == {b.url: 4}  # a's two episodes were replayed on b
    assert (report.finished, report.lost, report.reset_failed) == (4, 0, 0)
    assert len(report.reset_s) == 4 and len(report.step_before_s) == 8 and len(report.step_after_s) == 8
    summary = json.loads(report.to_json())
    assert summary["killed"] == a.url and summary["phases"] == ["before kill", "after kill"]
    assert summary["episodes"]["moved"] == 2 and summary["pool"]["episodes_lost"] == 0
    assert summary["step_ms"]["moving_episode"]["n"] == 2  # one step per moved episode carried the replay
    assert summary["step_ms"]["before"]["n"] == 8 and set(summary["step_ms"]["after_over_before"]) == {
        "p50",
        "p95",
        "p99",
        "max",
    }
    console = Console(record=True, width=160)
    for table in fleet_report_tables(report):
        console.print(table)
    text = console.export_text()
    assert "episodes moved to another server" in text and "after / before" in text
