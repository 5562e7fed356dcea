"""fleet-bench's sessions: N of them through the trainer's own client, all stepping at once.

`run_fleet_bench` drives `training.env.HpcToolEnv` over the fleet's URLs, so placement, failover and
masking are the ones training gets, and optionally kills one server halfway. It is the `Drive` that
`invoke fleet-bench` hands to `hpcgym.bench.bench_local_fleet` or `bench_launched_fleet`, which own
the fleet around it (private Slurm, fleet-up and fleet-down, the kill, the tables). It stays here
because it runs training's client; hpcgym imports nothing from training.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from hpcgym.bench import FleetBenchOptions, FleetBenchReport
from hpcgym.fleet.config import FleetError
from training.backends import EnvironmentUnavailable, server_pool
from training.dataset import build_rows
from training.env import EnvSettings, HpcToolEnv

Log = Callable[[str], None]


class _Progress:
    """How many sessions reached a point (or gave up before it), so the main thread can wait for all."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._counts: Counter[str] = Counter()

    def arrive(self, point: str) -> None:
        with self._cond:
            self._counts[point] += 1
            self._cond.notify_all()

    def wait_for(self, point: str, count: int, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._counts[point] >= count, timeout=timeout_s)


def run_fleet_bench(
    urls: Sequence[str],
    api_key: str,
    options: FleetBenchOptions,
    kill: Callable[[], str] | None = None,
    log: Log | None = None,
) -> FleetBenchReport:
    """Open `options.sessions` sessions over the fleet, step them all at once, optionally kill a server.

    Args:
        urls: the ready servers.
        api_key: their key (the launch's token).
        options: sessions, steps, scenarios and reset concurrency.
        kill: called once every session has run half its steps; takes a server down and returns
            what it killed (its URL). Every step after it counts as "after the kill".
        log: progress lines (default: none).

    Returns:
        The report; fleet-level fields (ready and down times) are left for the caller.
    """
    # The benchmark measures what a trainer gets, so it drives the trainer's own client.

    say = log or (lambda _: None)
    urls = tuple(urls)
    if not urls:
        raise FleetError("no ready server to benchmark", hint="wait for fleet-status to show ready servers")
    rows = build_rows(list(options.scenarios), "train", seeds_per_scenario=2)  # shuffled with seed 0
    settings = EnvSettings(env_urls=urls, api_key=api_key, max_steps=max(50, options.steps + 2))
    report = FleetBenchReport(len(urls), options.sessions, options.steps, options.command)
    lock = threading.Lock()
    reset_gate = threading.Semaphore(options.reset_concurrency)
    progress = _Progress()
    go, resume = threading.Event(), threading.Event()
    half = options.steps // 2

    def session(index: int) -> None:
        env = HpcToolEnv(settings)
        passed: set[str] = set()
        completed = False

        def arrive(point: str) -> None:
            passed.add(point)
            progress.arrive(point)

        try:
            with reset_gate:
                start = time.monotonic()
                env.reset(**rows[index % len(rows)])
                took = time.monotonic() - start
            record, backend = env._stats(), env._backend
            if record is None or record.infra_failed or backend is None:
                with lock:
                    report.reset_failed += 1
                return
            url = getattr(backend, "url", None) or "?"
            with lock:
                report.reset_s.append(took)
                report.placement[url] = report.placement.get(url, 0) + 1
            arrive("open")
            go.wait()
            for k in range(options.steps):
                if k == half:
                    arrive("half")
                    resume.wait()
                was = getattr(env._backend, "url", None)
                start = time.monotonic()
                env.run(options.command)
                took = time.monotonic() - start
                with lock:
                    (report.step_before_s if k < half else report.step_after_s).append(took)
                    if getattr(env._backend, "url", None) != was:
                        report.step_moved_s.append(took)
            url = getattr(env._backend, "url", None) or "?"
            with lock:
                report.final_placement[url] = report.final_placement.get(url, 0) + 1
            completed = True
        except EnvironmentUnavailable:
            with lock:
                report.lost += 1
        except Exception as e:  # reported as an error of the benchmark, never swallowed
            with lock:
                report.errors.append(f"session {index}: {type(e).__name__}: {e}"[:300])
        finally:
            for point in ("open", "half"):
                if point not in passed:
                    progress.arrive(point)
            reward = env.get_reward()  # also frees the session on its server
            if completed and reward is not None:
                with lock:
                    report.finished += 1

    threads = [
        threading.Thread(target=session, args=(i,), name=f"bench-{i}") for i in range(options.sessions)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        if not progress.wait_for("open", options.sessions, options.open_timeout_s):
            say(f"not every session opened within {options.open_timeout_s:g} s; stepping those that did")
        report.open_s = time.monotonic() - started
        say(
            f"{len(report.reset_s)} sessions open after {report.open_s:.1f} s "
            f"(placement {sorted(report.placement.values())}); stepping"
        )
        go.set()
        progress.wait_for("half", options.sessions, options.open_timeout_s)
        if kill is not None:
            start = time.monotonic()
            report.killed = kill()
            report.kill_s = time.monotonic() - start
            say(f"killed {report.killed} in {report.kill_s:.1f} s; stepping the second half")
    finally:
        go.set()
        resume.set()
        for thread in threads:
            thread.join()
    report.pool = server_pool(urls, api_key).metrics().as_dict()
    return report
