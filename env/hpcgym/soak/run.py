"""`invoke soak`: many short episodes through a real OpenEnv server, then a look at what the host kept.

A server runs in a child process (as a trainer meets it: another process, over the WebSocket), with
a few sessions open at once. Each episode's (scenario, policy, seed) follows from its number alone,
so two soaks of the same size play the same episodes; the policies are gold, noop, random,
destructive and red-team cheats, each cut to a few steps. After a warm-up (so lazily grown thread
pools are at their size), the server's holdings are counted (`leaks.take_snapshot`); after the last
episode, once every session has closed and the pool is full again, they are counted again and must
be no more; once the server has exited, nothing of its tag may be left on the host at all. RSS is
sampled every `rss_every` episodes and judged by the slope of a least-squares line after warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from hpcgym.errors import HpcgymError
from hpcgym.interfaces.openenv.client import HpcEnvClient
from hpcgym.interfaces.openenv.models import HpcAction
from hpcgym.interfaces.openenv.probe import free_port, wait_healthy
from hpcgym.scenarios.incident import gold_commands
from hpcgym.scenarios.policies import Policy, make_policy
from hpcgym.soak.leaks import Snapshot, find_leaks, find_remains, held_uid_slots, take_snapshot

# Short incidents of every kind (a daemon, a file, a route, the portal) and the healthy cluster.
DEFAULT_SCENARIOS = ("explore", "hpc_munge", "hpc_pid_stale", "hpc_slurmd_down", "hpc_route_typo",
                     "hpc_ood_apache", "hpc_drain_forgotten")  # fmt: skip
DEFAULT_POLICIES = ("gold", "noop", "random", "destructive", "blind", "cheat-restart-all",
                    "cheat-exit", "cheat-wipe-state", "cheat-set-clock")  # fmt: skip
MAX_STEPS = 6
SERVER_START_TIMEOUT_S = 180.0
SETTLE_TIMEOUT_S = 60.0
# Flat memory: after warm-up, RSS may rise by at most this much per 1,000 episodes.
MAX_SLOPE_BYTES_PER_1000 = 4 << 20
MIN_SLOPE_SAMPLES = 4
# prctl(2) option: the signal this process gets when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Plan:
    """One soak: how many episodes, how many at once, and what they play."""

    episodes: int
    sessions: int = 4
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    policies: tuple[str, ...] = DEFAULT_POLICIES
    max_steps: int = MAX_STEPS
    warmup: int = 0  # episodes before the baseline snapshot (default: two per session)
    rss_every: int = 1000
    pool_size: int = 2

    def finalize_warmup(self) -> int:
        return self.warmup or 2 * self.sessions

    def episode(self, index: int) -> tuple[str, str, int]:
        """(scenario, policy, seed) of episode `index`: every pair in turn, the seed its number."""
        scenario = self.scenarios[index % len(self.scenarios)]
        policy = self.policies[(index // len(self.scenarios)) % len(self.policies)]
        return scenario, policy, index


@dataclass
class Report:
    """What a soak found; `ok` is no leak and no failed episode."""

    episodes: int
    sessions: int
    wall_s: float = 0.0
    episodes_per_s: float = 0.0
    steps: int = 0
    reset_mean_s: float = 0.0
    step_mean_s: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    by_policy: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    rss_samples: list[tuple[int, int]] = field(default_factory=list)  # (episodes done, bytes)
    rss_slope_bytes_per_1000: float | None = None
    baseline: dict[str, int] = field(default_factory=dict)
    end: dict[str, int] = field(default_factory=dict)
    after_exit: dict[str, int] = field(default_factory=dict)
    fd_kinds: dict[str, list[str]] = field(default_factory=dict)
    leaks: list[str] = field(default_factory=list)
    server_exit_code: int | None = None

    @property
    def ok(self) -> bool:
        return not self.leaks and self.errors == 0

    def markdown(self) -> str:
        mib = 1 << 20
        rss = ", ".join(f"{n}: {b / mib:.1f}" for n, b in self.rss_samples)
        slope = (
            f"{self.rss_slope_bytes_per_1000 / mib:+.2f} MiB per 1,000 episodes"
            if self.rss_slope_bytes_per_1000 is not None
            else f"not judged (fewer than {MIN_SLOPE_SAMPLES} samples after warm-up)"
        )
        lines = [
            f"# Soak: {self.episodes} episodes, {self.sessions} sessions at once",
            "",
            f"- wall time {self.wall_s:.1f} s, {self.episodes_per_s:.2f} episodes/s, {self.steps} steps "
            f"(mean reset {self.reset_mean_s:.2f} s, mean step {self.step_mean_s:.2f} s, at the client)",
            f"- outcomes: {json.dumps(self.outcomes, sort_keys=True)}",
            f"- policies: {json.dumps(self.by_policy, sort_keys=True)}",
            f"- failed episodes: {self.errors}"
            + (f" (first: {self.first_errors[0]})" if self.first_errors else ""),
            f"- server RSS (episodes: MiB): {rss}",
            f"- RSS slope after warm-up: {slope}",
            f"- server exit code after SIGTERM: {self.server_exit_code}",
            "",
            "| held | baseline | end | after exit |",
            "|---|---|---|---|",
        ]
        for name in self.baseline:
            if name == "rss_bytes":
                continue
            lines.append(
                f"| {name} | {self.baseline[name]} | {self.end.get(name)} | {self.after_exit.get(name)} |"
            )
        lines += ["", f"**Leaks: {len(self.leaks)}**", *(f"- {leak}" for leak in self.leaks)]
        return "\n".join(lines) + "\n"


def fit_slope(samples: Sequence[tuple[int, int]]) -> float | None:
    """Least-squares slope of RSS over episodes, in bytes per 1,000 episodes (None: too few points)."""
    if len(samples) < MIN_SLOPE_SAMPLES:
        return None
    xs = [float(x) for x, _ in samples]
    ys = [float(y) for _, y in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return 1000 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


class _Counter:
    """Hands out episode numbers to the sessions and keeps the tallies (one event loop: no lock)."""

    def __init__(self, plan: Plan, first: int, last: int) -> None:
        self.plan = plan
        self.next = first
        self.last = last
        self.done = 0
        self.steps = 0
        self.outcomes: Counter[str] = Counter()
        self.by_policy: Counter[str] = Counter()
        self.errors: list[str] = []
        self.reset_s = 0.0
        self.step_s = 0.0

    def take(self) -> int | None:
        if self.next >= self.last:
            return None
        self.next += 1
        return self.next - 1


def _make(plan: Plan, policy_name: str, scenario: str, seed: int) -> Policy:
    gold = gold_commands(scenario, seed) if policy_name == "gold" and scenario != "explore" else ()
    return make_policy(policy_name, gold)


async def _play(client: HpcEnvClient, plan: Plan, index: int, tally: _Counter) -> None:
    scenario, policy_name, seed = plan.episode(index)
    policy = _make(plan, policy_name, scenario, seed)
    started = time.monotonic()
    result = await client.reset(seed=seed, scenario=scenario, max_steps=plan.max_steps)
    tally.reset_s += time.monotonic() - started
    policy.reset(result.observation.output, seed)
    observation = result.observation
    while not result.done:
        command = policy.act(observation.output)
        action = HpcAction(command="", stop=True) if command is None else HpcAction(command=command)
        started = time.monotonic()
        result = await client.step(action)
        tally.step_s += time.monotonic() - started
        observation = result.observation
        tally.steps += 1
    tally.outcomes[observation.outcome] += 1
    tally.by_policy[policy_name] += 1


async def _session(url: str, plan: Plan, tally: _Counter, on_done: Any) -> None:
    client: HpcEnvClient | None = None
    try:
        while (index := tally.take()) is not None:
            if client is None:
                client = HpcEnvClient(url, message_timeout_s=120.0)
            try:
                await _play(client, plan, index, tally)
            except Exception as e:  # a failed episode is counted and the soak goes on, on a new socket
                scenario, policy, seed = plan.episode(index)
                line = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                tally.errors.append(f"episode {index} ({scenario}, {policy}, seed {seed}): {line}")
                with contextlib.suppress(Exception):
                    await client.close()
                client = None
            tally.done += 1
            on_done()
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()


async def _drive(url: str, plan: Plan, first: int, last: int, on_done: Any) -> _Counter:
    tally = _Counter(plan, first, last)
    await asyncio.gather(*(_session(url, plan, tally, on_done) for _ in range(plan.sessions)))
    return tally


@contextlib.contextmanager
def soak_server(
    plan: Plan, images_dir: Path, log_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A server in a child process on a free port; yields (url, process) once its pool is full."""
    port = free_port()
    env = {
        **os.environ,
        "HPCGYM_IMAGES": str(images_dir),
        "HPCGYM_MAX_SESSIONS": str(plan.sessions + 2),
        "HPCGYM_POOL_SIZE": str(plan.pool_size),
        "HPCGYM_SCENARIOS": ",".join(plan.scenarios),
    }
    env.pop("OPENENV_API_KEY", None)
    env.pop("OPENENV_API_KEY_FILE", None)
    argv = [sys.executable, "-m", "hpcgym.interfaces.openenv.server.app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log-level", "warning"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=_die_with_parent
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, SERVER_START_TIMEOUT_S, process, episodes_ready=plan.pool_size)
            yield url, process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=90)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _die_with_parent() -> None:
    # A soak stopped by SIGTERM or SIGKILL runs no `finally`: its server gets SIGTERM from the
    # kernel instead (PR_SET_PDEATHSIG), and shuts down as it would for the soak's own end.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _quiet(pid: int, url: str, plan: Plan) -> Snapshot:
    # The baseline: a full pool, nothing closing, and the same counts twice in a row.
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    last = take_snapshot(pid)
    while time.monotonic() < deadline:
        with contextlib.suppress(HpcgymError):
            wait_healthy(url, 5, episodes_ready=plan.pool_size)
        time.sleep(1.0)
        now = take_snapshot(pid)
        if not now.closed and now.counts() == {**last.counts(), "rss_bytes": now.rss_bytes}:
            return now
        last = now
    return last


def _settle(pid: int, baseline: Snapshot, url: str, plan: Plan) -> Snapshot:
    # Closed sessions hand their episodes back to be closed in the background, and the pool refills:
    # wait until the counts are back (or the deadline passes, and what is left is a leak).
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        with contextlib.suppress(HpcgymError):
            wait_healthy(url, 5, episodes_ready=plan.pool_size)
        now = take_snapshot(pid)
        if not find_leaks(baseline, now) or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def run_soak(images_dir: Path, plan: Plan, out_dir: Path, console: Console | None = None) -> Report:
    """Run `plan` against a server over `images_dir`; write soak.json and soak.md to `out_dir`.

    Needs root and the built images, like the server itself.

    Returns:
        The report; leaks and failed episodes are in it (`Report.ok`), not raised.
    """
    console = console or Console(stderr=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Each soak's figures are its own: a rerun into the same directory starts the record afresh.
    (out_dir / "progress.jsonl").unlink(missing_ok=True)
    warmup = min(plan.finalize_warmup(), plan.episodes)
    report = Report(episodes=plan.episodes, sessions=plan.sessions)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeRemainingColumn())  # fmt: skip
    with soak_server(plan, images_dir, out_dir / "server.log") as (url, process):
        tag = take_snapshot(process.pid).tag
        with Progress(*columns, console=console, transient=False) as progress:
            bar = progress.add_task("soak", total=plan.episodes, rate="")
            start = time.monotonic()
            counted = [0]

            def on_done() -> None:
                counted[0] += 1
                elapsed = time.monotonic() - start
                progress.update(
                    bar, advance=1, rate=f"{counted[0] / elapsed:.2f} episodes/s" if elapsed else ""
                )
                done = counted[0] - warmup
                if done > 0 and done % plan.rss_every == 0:
                    now = take_snapshot(process.pid)
                    report.rss_samples.append((counted[0], now.rss_bytes))
                    # A long soak leaves its figures as it goes, in case it is stopped before the end.
                    line = {"episodes": counted[0], "elapsed_s": round(elapsed, 1), **now.counts()}
                    line["closed_references"] = len(now.closed)
                    with open(out_dir / "progress.jsonl", "a") as f:
                        f.write(json.dumps(line, sort_keys=True) + "\n")

            tallies = [asyncio.run(_drive(url, plan, 0, warmup, on_done))]
            baseline = _quiet(process.pid, url, plan)
            report.rss_samples.append((warmup, baseline.rss_bytes))
            tallies.append(asyncio.run(_drive(url, plan, warmup, plan.episodes, on_done)))
            report.wall_s = time.monotonic() - start
        end = _settle(process.pid, baseline, url, plan)
        if not report.rss_samples or report.rss_samples[-1][0] != plan.episodes:
            report.rss_samples.append((plan.episodes, end.rss_bytes))
        report.leaks += find_leaks(baseline, end)
        process.send_signal(signal.SIGTERM)
        report.server_exit_code = process.wait(timeout=90)
    time.sleep(1.0)  # bwrap's death signal reaches the sandboxes a moment after the server is gone
    gone = take_snapshot(process.pid, tag)
    report.leaks += find_remains(gone)
    report.leaks += [
        f"uid slot lock still held: {slot}" for slot in held_uid_slots() if f"pid {process.pid})" in slot
    ]
    resets_s = steps_s = 0.0
    for tally in tallies:
        resets_s += tally.reset_s
        steps_s += tally.step_s
        report.steps += tally.steps
        report.outcomes = dict(Counter(report.outcomes) + tally.outcomes)
        report.by_policy = dict(Counter(report.by_policy) + tally.by_policy)
        report.errors += len(tally.errors)
        report.first_errors += tally.errors[: 10 - len(report.first_errors)]
    report.episodes_per_s = plan.episodes / report.wall_s if report.wall_s else 0.0
    report.reset_mean_s = resets_s / plan.episodes
    report.step_mean_s = steps_s / report.steps if report.steps else 0.0
    report.rss_slope_bytes_per_1000 = fit_slope(report.rss_samples)
    if (
        report.rss_slope_bytes_per_1000 is not None
        and report.rss_slope_bytes_per_1000 > MAX_SLOPE_BYTES_PER_1000
    ):
        report.leaks.append(
            f"server RSS grows {report.rss_slope_bytes_per_1000 / (1 << 20):.2f} MiB per 1,000 episodes "
            f"(limit {MAX_SLOPE_BYTES_PER_1000 >> 20} MiB)"
        )
    report.baseline, report.end, report.after_exit = baseline.counts(), end.counts(), gone.counts()
    report.fd_kinds = {"baseline": baseline.examples["fd_kinds"], "end": end.examples["fd_kinds"]}
    (out_dir / "soak.json").write_text(json.dumps(asdict(report), indent=2, sort_keys=True) + "\n")
    (out_dir / "soak.md").write_text(report.markdown())
    return report
