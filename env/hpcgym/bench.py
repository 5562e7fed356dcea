"""`invoke bench`: what a reset and a step really cost, measured end to end.

A reset is timed from `Runtime.new_cluster()` to a shell waiting at its prompt (not just the overlay
mount), for the warm pool and for cold starts with each overlay mode. A step is one command typed
into that shell and read back to the next prompt. Idle capacity is how many clusters stay alive at
once and what each costs in memory. Every figure is also given as a ratio to a baseline built like
the original project's: a plain copy of the root per reset, and pexpect's default 50 ms send delay
per step.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.table import Table, box

from hpcgym.episode import Episode
from hpcgym.runtime import Cluster, OverlayMode, Runtime

PEXPECT_DEFAULT_DELAY_S = 0.05  # pexpect.spawn.delaybeforesend, which the original project kept


@dataclass(frozen=True)
class Stats:
    n: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, samples_s: list[float]) -> Stats:
        ms = sorted(s * 1000 for s in samples_s)

        def pct(q: float) -> float:
            return ms[min(len(ms) - 1, round(q * (len(ms) - 1)))]

        return cls(len(ms), statistics.median(ms), pct(0.95), pct(0.99), ms[-1])


def time_resets(runtime: Runtime, n: int, warm: bool) -> tuple[Stats, Stats]:
    """Return (reset, close) latencies; for `warm`, each reset waits for a full pool first."""
    resets, closes = [], []
    for _ in range(n):
        if warm:
            runtime.pool.wait_full(timeout_s=120)
        start = time.perf_counter()
        cluster = runtime.new_cluster()
        resets.append(time.perf_counter() - start)
        assert cluster.execute("true").exit_code == 0
        start = time.perf_counter()
        cluster.close()
        closes.append(time.perf_counter() - start)
    return Stats.of(resets), Stats.of(closes)


def time_steps(cluster: Cluster, command: str, n: int, delay_s: float = 0.0) -> Stats:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        if delay_s:
            time.sleep(delay_s)  # what pexpect does before every send unless told otherwise
        result = cluster.execute(command)
        samples.append(time.perf_counter() - start)
        if result.exit_code != 0:
            raise RuntimeError(f"bench step {command!r} failed: {result.output}")
    return Stats.of(samples)


def used_memory_bytes() -> int:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) * 1024


def pss_bytes(pid: int) -> int:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    return sum(int(line.split()[1]) * 1024 for line in rollup.splitlines() if line.startswith("Pss:"))


def measure_idle(runtime: Runtime, count: int) -> dict[str, float]:
    """Start `count` clusters, check each answers, and report memory per cluster."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # a few descriptors per cluster
    before = used_memory_bytes()
    clusters: list[Cluster] = []
    start = time.perf_counter()
    try:
        for _ in range(count):
            clusters.append(runtime.new_cluster())
        elapsed = time.perf_counter() - start
        time.sleep(0.5)
        after = used_memory_bytes()
        alive = sum(c.execute("true").exit_code == 0 for c in clusters)
        pss = charged = 0
        for c in clusters:
            if c.cgroup is not None:
                usage = c.cgroup.dirs[0] / "memory.usage_in_bytes"
                charged += int((usage if usage.exists() else c.cgroup.dirs[0] / "memory.current").read_text())
            shell = c.nodes[c.login_node].shell
            if shell is not None:
                pss += sum(
                    pss_bytes(p) for p in (shell.child.pid if shell.child else 0, shell.pid1, shell.shell_pid)
                )
    finally:
        for c in clusters:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return {
        "started": count,
        "alive": alive,
        "start_all_s": elapsed,
        "memory_per_episode_mb": (after - before) / count / 2**20,
        "process_pss_per_episode_mb": pss / count / 2**20,
        "cgroup_charged_per_episode_mb": charged / count / 2**20,
    }


def run_bench(
    images_dir: Path,
    json_path: Path | None = None,
    *,
    resets: int = 40,
    steps: int = 300,
    idle: int = 256,
    console: Console | None = None,
) -> dict[str, object]:
    """Run every benchmark, print a markdown table and optionally write the figures as JSON.

    Args:
        images_dir: the build's `build/images`.
        json_path: where to write the JSON (nothing is written without it).
        resets: samples per reset mode (the copy baseline and fuse-overlayfs take fewer).
        steps: samples per step command.
        idle: how many idle clusters to hold at once.
        console: where the table goes (default: stdout, 160 columns wide).

    Returns:
        The figures, as written to the JSON file.
    """
    console = console or Console(width=160)
    rows: list[tuple[str, str, Stats, float | None]] = []  # (group, what, stats, baseline p50 ms)
    figures: dict[str, object] = {
        "host": {"machine": platform.machine(), "kernel": platform.release(), "cpus": os.cpu_count()},
    }

    # The baseline first: a copy of the whole root per reset, steps with pexpect's default delay.
    with Runtime(images_dir, overlay_mode=OverlayMode.COPY) as runtime:
        copy_reset, copy_close = time_resets(runtime, max(3, resets // 8), warm=False)
        with runtime.new_cluster() as cluster:
            base_step = time_steps(cluster, "true", max(10, steps // 20), PEXPECT_DEFAULT_DELAY_S)
    rows.append(("reset", "baseline: cold, copy of the root", copy_reset, copy_reset.p50_ms))
    rows.append(("close", "baseline: copy", copy_close, copy_close.p50_ms))

    modes: list[tuple[str, OverlayMode, int, int, bool]] = [
        ("warm pool (kernel overlay)", OverlayMode.KERNEL, 2, resets, True),
        ("cold, kernel overlay", OverlayMode.KERNEL, 0, resets, False),
        ("cold, fuse-overlayfs", OverlayMode.FUSE, 0, max(5, resets // 4), False),
    ]
    for label, mode, pool_size, n, warm in modes:
        with Runtime(images_dir, overlay_mode=mode, pool_size=pool_size) as runtime:
            reset, close = time_resets(runtime, n, warm)
        rows.append(("reset", label, reset, copy_reset.p50_ms))
        rows.append(("close", label, close, copy_close.p50_ms))

    with Runtime(images_dir, overlay_mode=OverlayMode.KERNEL) as runtime:
        with runtime.new_cluster() as cluster:
            stub = "sinfo -N" if cluster.execute("test -x /usr/bin/sinfo").exit_code == 0 else None
            commands = ["true", "cat /etc/os-release", *([stub] if stub else [])]
            for command in commands:
                n = steps if command == "true" else max(20, steps // 5)
                rows.append(("step", f"`{command}`", time_steps(cluster, command, n), base_step.p50_ms))
        figures["idle"] = measure_idle(runtime, idle)
    rows.append(("step", "baseline: `true` with a 50 ms send delay", base_step, base_step.p50_ms))

    # The whole episode: cluster + controller + services booted on every node, and stub commands
    # answered by the real controller rather than the runtime's echo handler.
    with Runtime(images_dir, overlay_mode=OverlayMode.KERNEL) as runtime:
        rows.append(("episode", "cold reset, all nodes' daemons up", time_episode_resets(runtime, 10), None))
        with Episode(runtime) as episode:
            for command in ("sinfo", "systemctl is-active munge"):
                samples = [timed(partial(episode.step, command)) for _ in range(max(20, steps // 5))]
                rows.append(
                    ("episode", f"step `{command}` (real controller)", Stats.of(samples), base_step.p50_ms)
                )
            figures["controller_requests_per_s"] = controller_throughput(episode)

    figures["rows"] = [
        {
            "group": group,
            "what": what,
            **asdict(stats),
            "baseline_p50_ms": base,
            "speedup": speedup(base, stats),
        }
        for group, what, stats, base in rows
    ]
    print_table(console, rows, figures["idle"])  # type: ignore[arg-type]
    rates = figures["controller_requests_per_s"]
    console.print("controller, in-process: " + ", ".join(f"`{k}` {v:,.0f}/s" for k, v in rates.items()))  # type: ignore[attr-defined]
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def time_episode_resets(runtime: Runtime, n: int) -> Stats:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        episode = Episode(runtime)
        samples.append(time.perf_counter() - start)
        episode.close()
    return Stats.of(samples)


def controller_throughput(episode: Episode, seconds: float = 2.0) -> dict[str, float]:
    """Requests per second the controller answers in-process (no socket, no stub start-up)."""
    rates = {}
    for argv in (
        ["sinfo"],
        ["squeue"],
        ["scontrol", "show", "node", "compute-01"],
        ["systemctl", "is-active", "munge"],
    ):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 4:
            episode.controller.handle("login01", argv, "/root")
            count += 1
        rates[" ".join(argv)] = count / (time.perf_counter() - start)
    return rates


def speedup(base_ms: float | None, stats: Stats) -> float | None:
    return None if base_ms is None or stats.p50_ms == 0 else base_ms / stats.p50_ms


def print_table(
    console: Console, rows: list[tuple[str, str, Stats, float | None]], idle: dict[str, float]
) -> None:
    table = Table(box=box.MARKDOWN, title="hpcgym runtime benchmark (latencies in ms)")
    for column in ("", "what", "n", "p50", "p95", "p99", "max", "vs baseline"):
        table.add_column(column, justify="right" if column not in ("", "what") else "left", no_wrap=True)
    fmt: Callable[[float], str] = lambda v: f"{v:.2f}"  # noqa: E731
    for group, what, s, base in rows:
        ratio = speedup(base, s)
        table.add_row(
            group, what, str(s.n), fmt(s.p50_ms), fmt(s.p95_ms), fmt(s.p99_ms), fmt(s.max_ms),
            "baseline" if what.startswith("baseline") else f"{ratio:.1f}x faster" if ratio else "",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"idle: {int(idle['alive'])}/{int(idle['started'])} clusters alive at once, "
        f"{idle['memory_per_episode_mb']:.2f} MB each (host MemAvailable delta), "
        f"{idle['process_pss_per_episode_mb']:.2f} MB each in process PSS, "
        f"{idle['cgroup_charged_per_episode_mb']:.2f} MB each charged to its cgroup; "
        f"started in {idle['start_all_s']:.1f} s"
    )
