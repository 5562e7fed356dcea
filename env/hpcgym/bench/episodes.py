"""`invoke bench`: what a reset and a step really cost, measured end to end.

A reset is timed from `Runtime.new_cluster()` to a shell waiting at its prompt (not just the overlay
mount), for the warm pool and for cold starts with each overlay mode. A step is one command typed
into that shell and read back to the next prompt. Idle capacity is how many clusters stay alive at
once and what each costs in memory. Every figure is also given as a ratio to a baseline built like
the original project's: a plain copy of the root per reset, and pexpect's default 50 ms send delay
per step.

The tool clients are compared side by side on the same episodes: each image carries the native
client (which every tool is a hard link to) and the Python client it replaced, and root in a node
may point the tools at either, so each command is timed under one, then the other, in turn.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table, box

from hpcgym.episode import Episode
from hpcgym.errors import HpcgymError
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
    client_steps: int = 100,
    client_concurrencies: tuple[int, ...] = (1, 8, 64),
    density: int = 256,
) -> dict[str, object]:
    """Run every benchmark, print a markdown table and optionally write the figures as JSON.

    Args:
        images_dir: the build's `build/images`.
        json_path: where to write the JSON (nothing is written without it).
        resets: samples per reset mode (the copy baseline and fuse-overlayfs take fewer).
        steps: samples per step command.
        idle: how many idle clusters to hold at once.
        console: where the table goes (default: stdout, 160 columns wide).
        client_steps: samples per command and tool client (0: skip the side-by-side clients).
        client_concurrencies: sessions stepping at once for the clients' steps/s.
        density: how many full episodes to hold at once (0: skip).

    Returns:
        The figures, as written to the JSON file.
    """
    console = console or Console(width=160)
    status = Console(stderr=True, highlight=False)
    phases = 6 + bool(client_steps)
    started = time.perf_counter()

    def phase(number: int, what: str) -> None:
        # The table comes only at the end; say what runs meanwhile (some phases take a minute).
        status.print(f"bench {number}/{phases} [{time.perf_counter() - started:5.1f} s]: {what}")

    rows: list[Row] = []
    figures: dict[str, object] = {
        "host": {"machine": platform.machine(), "kernel": platform.release(), "cpus": os.cpu_count()},
    }
    # The baseline first: a copy of the whole root per reset, steps with pexpect's default delay.
    phase(1, "baseline: copy-mode resets and steps with pexpect's send delay")
    baseline = _baseline(images_dir, resets, steps, rows)
    _reset_modes(images_dir, resets, baseline, rows, phase)
    phase(5, f"steps, then {idle} idle clusters at once")
    figures["idle"] = _steps_and_idle(images_dir, steps, idle, baseline, rows)
    # The whole episode: cluster + controller + services booted on every node, and stub commands
    # answered by the real controller rather than the runtime's echo handler.
    phase(6, "full episodes: resets, steps and the controller's throughput")
    figures["controller_requests_per_s"] = _full_episodes(images_dir, steps, baseline, rows)
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
    if client_steps:
        phase(7, "the Python and the native tool client side by side")
        figures["clients"] = run_client_bench(
            images_dir,
            steps=client_steps,
            concurrencies=client_concurrencies,
            boots=max(3, resets // 2),
            density=density,
            console=console,
        )
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


Row = tuple[str, str, Stats, float | None]  # (group, what, stats, baseline p50 ms)


@dataclass(frozen=True)
class Baseline:
    """The copy-mode figures every other row is a ratio to."""

    reset: Stats
    close: Stats
    step: Stats


def _baseline(images_dir: Path, resets: int, steps: int, rows: list[Row]) -> Baseline:
    with Runtime(images_dir, overlay_mode=OverlayMode.COPY) as runtime:
        copy_reset, copy_close = time_resets(runtime, max(3, resets // 8), warm=False)
        with runtime.new_cluster() as cluster:
            base_step = time_steps(cluster, "true", max(10, steps // 20), PEXPECT_DEFAULT_DELAY_S)
    rows.append(("reset", "baseline: cold, copy of the root", copy_reset, copy_reset.p50_ms))
    rows.append(("close", "baseline: copy", copy_close, copy_close.p50_ms))
    return Baseline(copy_reset, copy_close, base_step)


def _reset_modes(
    images_dir: Path, resets: int, baseline: Baseline, rows: list[Row], phase: Callable[[int, str], None]
) -> None:
    modes: list[tuple[str, OverlayMode, int, int, bool]] = [
        ("warm pool (kernel overlay)", OverlayMode.KERNEL, 2, resets, True),
        ("cold, kernel overlay", OverlayMode.KERNEL, 0, resets, False),
        ("cold, fuse-overlayfs", OverlayMode.FUSE, 0, max(5, resets // 4), False),
    ]
    for number, (label, mode, pool_size, n, warm) in enumerate(modes, start=2):
        phase(number, f"{n} resets, {label}")
        with Runtime(images_dir, overlay_mode=mode, pool_size=pool_size) as runtime:
            reset, close = time_resets(runtime, n, warm)
        rows.append(("reset", label, reset, baseline.reset.p50_ms))
        rows.append(("close", label, close, baseline.close.p50_ms))


def _steps_and_idle(
    images_dir: Path, steps: int, idle: int, baseline: Baseline, rows: list[Row]
) -> dict[str, float]:
    with Runtime(images_dir, overlay_mode=OverlayMode.KERNEL) as runtime:
        with runtime.new_cluster() as cluster:
            stub = "sinfo -N" if cluster.execute("test -x /usr/bin/sinfo").exit_code == 0 else None
            commands = ["true", "cat /etc/os-release", *([stub] if stub else [])]
            for command in commands:
                n = steps if command == "true" else max(20, steps // 5)
                rows.append(("step", f"`{command}`", time_steps(cluster, command, n), baseline.step.p50_ms))
        idle_figures = measure_idle(runtime, idle)
    rows.append(("step", "baseline: `true` with a 50 ms send delay", baseline.step, baseline.step.p50_ms))
    return idle_figures


def _full_episodes(images_dir: Path, steps: int, baseline: Baseline, rows: list[Row]) -> dict[str, float]:
    with Runtime(images_dir, overlay_mode=OverlayMode.KERNEL) as runtime:
        rows.append(("episode", "cold reset, all nodes' daemons up", time_episode_resets(runtime, 10), None))
        with Episode(runtime) as episode:
            for command in ("sinfo", "systemctl is-active munge"):
                samples = [timed(partial(episode.step, command)) for _ in range(max(20, steps // 5))]
                rows.append(
                    (
                        "episode",
                        f"step `{command}` (real controller)",
                        Stats.of(samples),
                        baseline.step.p50_ms,
                    )
                )
            return controller_throughput(episode)


def host_delta_text(mb: float) -> str:
    # The host's MemAvailable moves with every other process too; a delta below zero says only that
    # something else freed more than the clusters took, so it is not a figure per cluster.
    return f"{mb:.2f} MB" if mb >= 0 else "n/a (other processes freed memory meanwhile)"


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
        f"{host_delta_text(idle['memory_per_episode_mb'])} each (host MemAvailable delta), "
        f"{idle['process_pss_per_episode_mb']:.2f} MB each in process PSS, "
        f"{idle['cgroup_charged_per_episode_mb']:.2f} MB each charged to its cgroup; "
        f"started in {idle['start_all_s']:.1f} s"
    )


# --- the tool clients, side by side -------------------------------------------------------------

CLIENT_FILES = {"python": "hpcgym-client.py", "native": "hpcgym-client"}
CLIENT_COMMANDS = ("true", "sinfo", "squeue", "scontrol show node", "systemctl is-active munge")
THROUGHPUT_COMMANDS = ("true", "sinfo")


def use_client(episode: Episode, client: str) -> None:
    """Point the login node's tools under /usr/bin at one client, as root in the node may.

    The daemons' programs (/usr/sbin/munged, ...) stay as they are: the controller knows a daemon by
    its program being the image's client.
    """
    target = f"/usr/libexec/hpcgym/{CLIENT_FILES[client]}"
    result = episode.cluster.execute(
        "for t in $(grep '^/usr/bin/' /usr/libexec/hpcgym/tools.list); do "
        f"ln -f {target} $t || exit 1; done; cmp -s /usr/bin/sinfo {target}"
    )
    if result.exit_code != 0:
        raise RuntimeError(f"cannot switch the tools to the {client} client: {result.output}")


def time_client_steps(
    episode: Episode, n: int, progress: Progress | None = None
) -> dict[str, dict[str, Stats]]:
    """Per command and client, `Episode.step` latencies; the clients take turns on one episode."""
    out: dict[str, dict[str, Stats]] = {}
    task = progress.add_task("steps, both clients", total=len(CLIENT_COMMANDS) * 2 * n) if progress else None
    for command in CLIENT_COMMANDS:
        out[command] = {}
        for client in CLIENT_FILES:
            use_client(episode, client)
            samples = []
            for _ in range(n):
                start = time.perf_counter()
                result = episode.step(command)
                samples.append(time.perf_counter() - start)
                if result.exit_code != 0:
                    raise RuntimeError(f"bench step {command!r} ({client} client) failed: {result.output}")
                if progress is not None and task is not None:
                    progress.advance(task)
            out[command][client] = Stats.of(samples)
    return out


def steps_per_second(episodes: list[Episode], command: str, seconds: float) -> tuple[float, Stats]:
    """Every episode stepped by its own thread for `seconds`: steps/s in all, and per-step latency."""
    samples: list[list[float]] = [[] for _ in episodes]
    stop = time.perf_counter() + seconds
    failures: list[str] = []

    def drive(episode: Episode, mine: list[float]) -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            result = episode.step(command)
            mine.append(time.perf_counter() - start)
            if result.exit_code != 0:
                failures.append(result.output)
                return

    start = time.perf_counter()
    threads = [threading.Thread(target=drive, args=(e, m)) for e, m in zip(episodes, samples, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"bench step {command!r} failed: {failures[0]}")
    flat = [s for mine in samples for s in mine]
    return len(flat) / elapsed, Stats.of(flat)


def time_client_throughput(
    episodes: list[Episode], concurrencies: tuple[int, ...], seconds: float, progress: Progress | None = None
) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    runs = [(c, command) for c in concurrencies for command in THROUGHPUT_COMMANDS]
    task = progress.add_task("steps/s, both clients", total=len(runs) * 2) if progress else None
    for concurrency, command in runs:
        row: dict[str, object] = {"concurrency": concurrency, "command": command}
        for client in CLIENT_FILES:
            for episode in episodes[:concurrency]:
                use_client(episode, client)
            rate, stats = steps_per_second(episodes[:concurrency], command, seconds)
            row[client] = {"steps_per_s": rate, **asdict(stats)}
            if progress is not None and task is not None:
                progress.advance(task)
        row["ratio"] = row["native"]["steps_per_s"] / row["python"]["steps_per_s"]  # type: ignore[index]
        rows.append(row)
    return rows


PID_MAX = Path("/proc/sys/kernel/pid_max")
# A full episode is 33 processes on the host (five bwraps, five inits, five shells, the daemons):
# a thousand of them pass Linux's default pid_max of 32,768, which counts every namespace's pids.
PIDS_PER_EPISODE = 40


@contextlib.contextmanager
def enough_pids(episodes: int) -> Iterator[int | None]:
    """Raise kernel.pid_max for the density run where it is too low, and put it back after.

    Yields the value it replaced (None: left alone). An operator holding this many episodes sets
    it once (sysctl kernel.pid_max); the benchmark must not leave the host changed.
    """
    want = episodes * PIDS_PER_EPISODE + 16_384
    try:
        old = int(PID_MAX.read_text())
    except (OSError, ValueError):
        yield None
        return
    if old >= want:
        yield None
        return
    try:
        PID_MAX.write_text(f"{min(want, 4_194_304)}\n")
    except OSError:
        yield None
        return
    try:
        yield old
    finally:
        with contextlib.suppress(OSError):
            PID_MAX.write_text(f"{old}\n")


def measure_density(runtime: Runtime, count: int, progress: Progress | None = None) -> dict[str, Any]:
    """Hold `count` full episodes (every node's daemons up) at once; each must answer `sinfo`."""
    with enough_pids(count) as pid_max_was:
        figures = _hold_episodes(runtime, count, progress)
    if pid_max_was is not None:
        figures["pid_max_raised_from"] = pid_max_was
    return figures


def _hard_limit_note(hard: int) -> str:
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        return "the kernel's fs.nr_open is unreadable"
    return f"the hard limit is {hard:,} and fs.nr_open {nr_open:,}; raising it needs CAP_SYS_RESOURCE"


def _hold_episodes(runtime: Runtime, count: int, progress: Progress | None) -> dict[str, Any]:
    before = used_memory_bytes()
    episodes: list[Episode] = []
    task = progress.add_task(f"{count} episodes alive at once", total=count * 2) if progress else None
    boots = []
    stopped_by = ""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fds_before = len(os.listdir("/proc/self/fd"))
    try:
        for _ in range(count):
            if episodes:
                # Stop while every episode alive can still be stepped: a host whose descriptor
                # limit root may not raise holds fewer full episodes than its memory would.
                per = (len(os.listdir("/proc/self/fd")) - fds_before) / len(episodes)
                if soft - len(os.listdir("/proc/self/fd")) < 3 * per + 256:
                    stopped_by = (
                        f"the descriptor limit: RLIMIT_NOFILE {soft:,} ({_hard_limit_note(hard)}), "
                        f"{per:.0f} host descriptors per full episode"
                    )
                    break
            start = time.perf_counter()
            try:
                episodes.append(Episode(runtime))
            except (OSError, HpcgymError) as e:
                stopped_by = f"creating episode {len(episodes) + 1} failed: {e}"
                break
            boots.append(time.perf_counter() - start)
            if progress is not None and task is not None:
                progress.advance(task)
        count = len(episodes)
        time.sleep(0.5)
        after = used_memory_bytes()
        charged = sum(cgroup_charged_bytes(e.cluster) for e in episodes)
        pss = sum(pss_bytes(pid) for pid in descendants(os.getpid()))
        answered = 0
        steps = []  # one `sinfo` in each, every episode alive: does a step cost more beside 1,000?
        for episode in episodes:
            start = time.perf_counter()
            answered += episode.step("sinfo").output.startswith("PARTITION")
            steps.append(time.perf_counter() - start)
            if progress is not None and task is not None:
                progress.advance(task)
        descriptors = len(os.listdir("/proc/self/fd"))
    finally:
        for episode in episodes:
            episode.close()
    boot = Stats.of(boots)
    return {
        "started": count,
        "answered_sinfo": answered,
        "memory_per_episode_mb": (after - before) / count / 2**20,
        "cgroup_charged_per_episode_mb": charged / count / 2**20,
        "node_processes_pss_per_episode_mb": pss / count / 2**20,
        "descriptors": descriptors,
        "boot_first_p50_ms": Stats.of(boots[: max(1, count // 10)]).p50_ms,
        "boot_last_p50_ms": Stats.of(boots[-max(1, count // 10) :]).p50_ms,
        "boot_p50_ms": boot.p50_ms,
        "sinfo_step_p50_ms_all_alive": Stats.of(steps).p50_ms,
        "stopped_by": stopped_by,
    }


def cgroup_charged_bytes(cluster: Cluster) -> int:
    """What the kernel charges the cluster's cgroup: its processes, page tables, tmpfs, kernel objects."""
    if cluster.cgroup is None:
        return 0
    for name in ("memory.current", "memory.usage_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            return int((cluster.cgroup.dirs[0] / name).read_text())
    return 0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def run_client_bench(
    images_dir: Path,
    *,
    steps: int = 100,
    concurrencies: tuple[int, ...] = (1, 8, 64),
    seconds: float = 3.0,
    boots: int = 20,
    density: int = 256,
    console: Console | None = None,
) -> dict[str, object]:
    """The Python and the native tool client on the same episodes: steps, steps/s, boot and density.

    Args:
        images_dir: the build's `build/images`.
        steps: samples per command and client.
        concurrencies: how many sessions step at once for the steps/s figures.
        seconds: how long each steps/s figure is measured.
        boots: cold full-episode boots to time.
        density: how many full episodes to hold alive at once (0: skip).
        console: where the tables and the progress display go.

    Returns:
        The figures, as `run_bench` writes them under "clients".
    """
    console = console or Console(width=160)
    figures: dict[str, object] = {}
    with Runtime(images_dir) as runtime, Progress(console=console, transient=True) as progress:
        with Episode(runtime) as episode:
            latencies = time_client_steps(episode, steps, progress)
        figures["steps"] = {
            command: {client: asdict(stats) for client, stats in by_client.items()}
            for command, by_client in latencies.items()
        }
        task = progress.add_task("full-episode boots", total=boots)
        samples = []
        for _ in range(boots):
            samples.append(timed(lambda: Episode(runtime).close()))
            progress.advance(task)
        figures["boot"] = asdict(Stats.of(samples))
        episodes: list[Episode] = []
        try:
            task = progress.add_task("episodes for steps/s", total=max(concurrencies))
            for _ in range(max(concurrencies)):
                episodes.append(Episode(runtime))
                progress.advance(task)
            figures["throughput"] = time_client_throughput(episodes, concurrencies, seconds, progress)
        finally:
            for episode in episodes:
                episode.close()
        if density:
            figures["density"] = measure_density(runtime, density, progress)
    print_client_tables(console, figures)
    return figures


def print_client_tables(console: Console, figures: dict[str, Any]) -> None:
    table = Table(box=box.MARKDOWN, title="tool clients, side by side: `Episode.step` latency in ms")
    for column in ("command", "python p50", "p95", "p99", "native p50", "p95", "p99", "python/native"):
        table.add_column(column, justify="left" if column == "command" else "right", no_wrap=True)
    for command, by_client in figures["steps"].items():
        py, nat = by_client["python"], by_client["native"]
        table.add_row(
            f"`{command}`",
            *(f"{py[k]:.2f}" for k in ("p50_ms", "p95_ms", "p99_ms")),
            *(f"{nat[k]:.2f}" for k in ("p50_ms", "p95_ms", "p99_ms")),
            f"{py['p50_ms'] / nat['p50_ms']:.1f}x",
        )
    console.print(table)
    table = Table(box=box.MARKDOWN, title="tool clients, side by side: sessions stepping at once, in-process")
    for column in (
        "sessions",
        "command",
        "python steps/s",
        "p50 ms",
        "native steps/s",
        "p50 ms",
        "native/python",
    ):
        table.add_column(column, justify="left" if column == "command" else "right", no_wrap=True)
    for row in figures["throughput"]:
        py, nat = row["python"], row["native"]
        table.add_row(
            str(row["concurrency"]),
            f"`{row['command']}`",
            f"{py['steps_per_s']:.0f}",
            f"{py['p50_ms']:.1f}",
            f"{nat['steps_per_s']:.0f}",
            f"{nat['p50_ms']:.1f}",
            f"{row['ratio']:.1f}x",
        )
    console.print(table)
    boot = figures["boot"]
    console.print(
        f"full-episode boot (no client runs during boot; one figure for both): p50 {boot['p50_ms']:.0f} ms, "
        f"p95 {boot['p95_ms']:.0f} ms over {boot['n']}"
    )
    if "density" in figures:
        d = figures["density"]
        console.print(
            f"density: {d['answered_sinfo']}/{d['started']} full episodes alive at once answered `sinfo`, "
            f"{d['cgroup_charged_per_episode_mb']:.2f} MB each charged to its cgroup, "
            f"{d['node_processes_pss_per_episode_mb']:.2f} MB each in its processes' PSS, "
            f"{host_delta_text(d['memory_per_episode_mb'])} each as host MemAvailable delta (other tenants "
            "included), "
            f"{d['descriptors']} descriptors; boot p50 {d['boot_first_p50_ms']:.0f} ms for the first tenth, "
            f"{d['boot_last_p50_ms']:.0f} ms for the last; a `sinfo` step with all of them alive p50 "
            f"{d['sinfo_step_p50_ms_all_alive']:.2f} ms"
            + (f"; stopped at {d['started']} by {d['stopped_by']}" if d.get("stopped_by") else "")
            + (
                f"; kernel.pid_max lifted from {d['pid_max_raised_from']} for the run"
                if "pid_max_raised_from" in d
                else ""
            )
        )
