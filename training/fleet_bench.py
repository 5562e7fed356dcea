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
    bench = _Bench(urls, api_key, options)
    threads = [
        threading.Thread(target=bench.session, args=(i,), name=f"bench-{i}") for i in range(options.sessions)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        bench.conduct(started, kill, say)
    finally:
        bench.release()
        for thread in threads:
            thread.join()
    bench.report.pool = server_pool(urls, api_key).metrics().as_dict()
    return bench.report


class _Bench:
    """What the session threads share: the report (under its lock) and the gates that pace them."""

    def __init__(self, urls: tuple[str, ...], api_key: str, options: FleetBenchOptions) -> None:
        self.options = options
        self.rows = build_rows(list(options.scenarios), "train", seeds_per_scenario=2)  # shuffled with seed 0
        self.settings = EnvSettings(env_urls=urls, api_key=api_key, max_steps=max(50, options.steps + 2))
        self.report = FleetBenchReport(len(urls), options.sessions, options.steps, options.command)
        self.lock = threading.Lock()
        self.reset_gate = threading.Semaphore(options.reset_concurrency)
        self.progress = _Progress()
        self.go, self.resume = threading.Event(), threading.Event()
        self.half = options.steps // 2

    def conduct(self, started: float, kill: Callable[[], str] | None, say: Log) -> None:
        """The main thread's part: wait for the sessions to open, let them step, kill a server at half."""
        options, report = self.options, self.report
        if not self.progress.wait_for("open", options.sessions, options.open_timeout_s):
            say(f"not every session opened within {options.open_timeout_s:g} s; stepping those that did")
        report.open_s = time.monotonic() - started
        say(
            f"{len(report.reset_s)} sessions open after {report.open_s:.1f} s "
            f"(placement {sorted(report.placement.values())}); stepping"
        )
        self.go.set()
        self.progress.wait_for("half", options.sessions, options.open_timeout_s)
        if kill is not None:
            start = time.monotonic()
            report.killed = kill()
            report.kill_s = time.monotonic() - start
            say(f"killed {report.killed} in {report.kill_s:.1f} s; stepping the second half")

    def release(self) -> None:
        """Open both gates, so that no session waits on the main thread any more."""
        self.go.set()
        self.resume.set()

    def session(self, index: int) -> None:
        """One session's thread: open, wait for go, step, and count how it ended."""
        env = HpcToolEnv(self.settings)
        passed: set[str] = set()
        completed = False

        def arrive(point: str) -> None:
            passed.add(point)
            self.progress.arrive(point)

        try:
            if not self._open(env, index):
                return
            arrive("open")
            self.go.wait()
            self._step(env, arrive)
            with self.lock:
                _count_placement(self.report.final_placement, env._backend)
            completed = True
        except EnvironmentUnavailable:
            with self.lock:
                self.report.lost += 1
        except Exception as e:  # reported as an error of the benchmark, never swallowed
            with self.lock:
                self.report.errors.append(f"session {index}: {type(e).__name__}: {e}"[:300])
        finally:
            for point in ("open", "half"):
                if point not in passed:
                    self.progress.arrive(point)
            reward = env.get_reward()  # also frees the session on its server
            if completed and reward is not None:
                with self.lock:
                    self.report.finished += 1

    def _open(self, env: HpcToolEnv, index: int) -> bool:
        """Reset the session (a few at a time); False, counted, when no server gave it an episode."""
        with self.reset_gate:
            start = time.monotonic()
            env.reset(**self.rows[index % len(self.rows)])
            took = time.monotonic() - start
        record, backend = env._stats(), env._backend
        if record is None or record.infra_failed or backend is None:
            with self.lock:
                self.report.reset_failed += 1
            return False
        with self.lock:
            self.report.reset_s.append(took)
            _count_placement(self.report.placement, backend)
        return True

    def _step(self, env: HpcToolEnv, arrive: Callable[[str], None]) -> None:
        """Run the command `steps` times, pausing at half for the kill; time each step by its half."""
        report = self.report
        for k in range(self.options.steps):
            if k == self.half:
                arrive("half")
                self.resume.wait()
            was = getattr(env._backend, "url", None)
            start = time.monotonic()
            env.run(self.options.command)
            took = time.monotonic() - start
            with self.lock:
                (report.step_before_s if k < self.half else report.step_after_s).append(took)
                if getattr(env._backend, "url", None) != was:
                    report.step_moved_s.append(took)


def _count_placement(placement: dict[str, int], backend: object) -> None:
    """Count one session on its server's URL; the caller holds the lock."""
    url = getattr(backend, "url", None) or "?"
    placement[url] = placement.get(url, 0) + 1
