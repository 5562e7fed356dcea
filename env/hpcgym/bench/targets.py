"""What one `invoke bench` run promises, checked against its own figures.

The targets are the project's (issue 14): a step near the cost of `true`, throughput that a trainer's
sessions can use, and a thousand full episodes in one process. A missed target is printed as missed,
with the figure, never hidden; the run's other tables say where the time went.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table, box

from hpcgym.bench.loadtest import LoadReport


@dataclass(frozen=True)
class Target:
    what: str
    measured: float | None  # None: this run did not measure it
    bound: float
    unit: str
    at_most: bool  # True: the figure must stay at or under the bound

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured <= self.bound if self.at_most else self.measured >= self.bound


def _throughput(clients: dict[str, Any], command: str, sessions: int) -> float | None:
    for row in clients.get("throughput", []):
        if row["command"] == command and row["concurrency"] == sessions:
            return float(row["native"]["steps_per_s"])
    return None


def check_targets(figures: dict[str, Any], websocket: dict[int, LoadReport]) -> list[Target]:
    """The targets, each with what this run measured (from `run_bench`'s figures and the load runs)."""
    clients = figures.get("clients", {})
    sinfo = clients.get("steps", {}).get("sinfo", {}).get("native")
    density = clients.get("density")
    boot = clients.get("boot")
    ws64 = websocket.get(64)
    return [
        Target("`sinfo` step p50, one session", sinfo["p50_ms"] if sinfo else None, 2.0, "ms", True),
        Target(
            "`sinfo` steps/s, 64 WebSocket sessions", ws64.steps_per_s if ws64 else None, 1000, "/s", False
        ),
        Target("`true` steps/s, 64 sessions in-process", _throughput(clients, "true", 64), 3000, "/s", False),
        Target(
            "full episodes alive, each answering `sinfo`",
            density["answered_sinfo"] if density else None,
            1000,
            "",
            False,
        ),
        Target(
            "host memory per full episode (cgroup)",
            density["cgroup_charged_per_episode_mb"] if density else None,
            6.0,
            "MB",
            True,
        ),
        Target("full-episode boot p50, cold", boot["p50_ms"] if boot else None, 60.0, "ms", True),
    ]


def print_targets(console: Console, targets: list[Target]) -> None:
    table = Table(box=box.MARKDOWN, title="targets")
    for column in ("target", "measured", "bound", "met"):
        table.add_column(column, justify="left" if column == "target" else "right", no_wrap=True)
    for t in targets:
        digits = 2 if t.unit in ("ms", "MB") else 0
        measured = "not measured" if t.measured is None else f"{t.measured:,.{digits}f} {t.unit}".rstrip()
        bound = f"{'<=' if t.at_most else '>='} {t.bound:,.0f} {t.unit}".rstrip()
        table.add_row(t.what, measured, bound, {True: "yes", False: "**no**", None: "-"}[t.met])
    console.print(table)
