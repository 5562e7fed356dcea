"""Load on the OpenEnv server: many concurrent WebSocket sessions, each stepping through its own episode.

`run_load` drives a running server; `run_loadtest` starts one in a child process first (as a trainer
would meet it: another process, over the socket) and stops it after. Every session resets, then steps
through a mix of plain and stub-backed commands, checking that its step count goes up by one each
time; latencies are per step, measured at the client. `invoke bench` calls `run_loadtest`; run this
module to drive a server by hand (`python -m hpcgym.bench.loadtest --url ...`), which also
makes a smoke episode for a deployed container (`--sessions 1 --steps 3`).

`run_burst` is the admission test: it opens N sessions, then sends all N resets at once, ungated, and
reports each reset's latency (p50/p99/max), the order the server answered them in, how deep the
server's queue got and whether any client timed out (`--burst`; `run_bursttest` starts the server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hpcgym.errors import HpcgymError
from hpcgym.interfaces import default_images_dir
from hpcgym.interfaces.openenv.client import HpcEnvClient
from hpcgym.interfaces.openenv.models import HpcAction
from hpcgym.interfaces.openenv.probe import free_port, stop_process, wait_healthy
from hpcgym.interfaces.task import EXPLORE

# What an agent types most: plain coreutils and the cluster's own tools (stub, socket, controller).
COMMANDS = (
    "hostname",
    "sinfo",
    "squeue",
    "systemctl is-active munge slurmctld",
    "grep -c NodeName /etc/slurm/slurm.conf",
    "scontrol show node compute-01 | head -3",
)
SERVER_START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class LoadReport:
    """The figures of one load run (latencies in milliseconds, measured at the client)."""

    sessions: int
    steps_per_session: int
    reset_concurrency: int
    steps_ok: int
    errors: int
    first_error: str | None
    reset_p50_ms: float
    reset_p95_ms: float
    reset_p99_ms: float
    step_p50_ms: float
    step_p95_ms: float
    step_p99_ms: float
    step_max_ms: float
    wall_s: float
    steps_per_s: float

    def summary(self) -> str:
        """One paragraph for a terminal or a note."""
        return (
            f"{self.sessions} sessions x {self.steps_per_session} steps over the WebSocket: "
            f"{self.steps_ok} steps ok, {self.errors} errors; step p50 {self.step_p50_ms:.1f} ms, "
            f"p95 {self.step_p95_ms:.1f} ms, p99 {self.step_p99_ms:.1f} ms, max {self.step_max_ms:.1f} ms; "
            f"reset ({self.reset_concurrency} at a time) p50 {self.reset_p50_ms:.1f} ms, "
            f"p95 {self.reset_p95_ms:.1f} ms; "
            f"{self.steps_per_s:.0f} steps/s in {self.wall_s:.1f} s"
            + (f"\nfirst error: {self.first_error}" if self.first_error else "")
        )


def percentile_ms(samples_s: Sequence[float], q: float) -> float:
    if not samples_s:
        return float("nan")
    ms = sorted(s * 1000 for s in samples_s)
    return ms[min(len(ms) - 1, round(q * (len(ms) - 1)))]


@dataclass(frozen=True)
class _Plan:
    url: str
    api_key: str | None
    steps: int
    scenario: str
    commands: tuple[str, ...] = COMMANDS


async def _open(plan: _Plan, index: int, gate: asyncio.Semaphore, resets: list[float]) -> HpcEnvClient:
    client = HpcEnvClient(plan.url, api_key=plan.api_key, message_timeout_s=60.0)
    try:
        async with gate:
            start = time.perf_counter()
            result = await client.reset(seed=index, scenario=plan.scenario)
            resets.append(time.perf_counter() - start)
        if result.observation.step != 0:
            raise HpcgymError(f"session {index}: reset reported step {result.observation.step}")
    except BaseException:
        await client.close()
        raise
    return client


async def _drive(plan: _Plan, index: int, client: HpcEnvClient, latencies: list[float]) -> None:
    try:
        for n in range(1, plan.steps + 1):
            command = plan.commands[(index + n) % len(plan.commands)]
            start = time.perf_counter()
            result = await client.step(HpcAction(command=command))
            latencies.append(time.perf_counter() - start)
            observation = result.observation
            if observation.step != n:
                raise HpcgymError(f"session {index}: step {n} came back as step {observation.step}")
            if plan.scenario == EXPLORE and observation.exit_code != 0:
                # On the healthy cluster every command of the mix succeeds.
                raise HpcgymError(
                    f"session {index}: {command!r} exited {observation.exit_code}: {observation.output!r}"
                )
            if result.done and n < plan.steps:
                raise HpcgymError(f"session {index}: the episode ended at step {n} (raise HPCGYM_MAX_STEPS)")
    finally:
        await client.close()


async def run_load_async(
    url: str,
    sessions: int,
    steps: int,
    api_key: str | None = None,
    scenario: str = EXPLORE,
    reset_concurrency: int = 4,
    commands: tuple[str, ...] = COMMANDS,
) -> LoadReport:
    plan = _Plan(url, api_key, steps, scenario, commands)
    resets: list[float] = []
    latencies: list[float] = []
    # Sessions join a few at a time, as trainers' workers do, then all of them step at once.
    gate = asyncio.Semaphore(reset_concurrency)
    opened = await asyncio.gather(
        *(_open(plan, i, gate, resets) for i in range(sessions)), return_exceptions=True
    )
    start = time.perf_counter()
    runs = [_drive(plan, i, c, latencies) for i, c in enumerate(opened) if isinstance(c, HpcEnvClient)]
    driven = await asyncio.gather(*runs, return_exceptions=True)
    outcomes = [*opened, *driven]
    wall_s = time.perf_counter() - start
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    return LoadReport(
        sessions=sessions,
        steps_per_session=steps,
        reset_concurrency=reset_concurrency,
        steps_ok=len(latencies),
        errors=len(errors),
        first_error=f"{type(errors[0]).__name__}: {errors[0]}" if errors else None,
        reset_p50_ms=percentile_ms(resets, 0.5),
        reset_p95_ms=percentile_ms(resets, 0.95),
        reset_p99_ms=percentile_ms(resets, 0.99),
        step_p50_ms=statistics.median(latencies) * 1000 if latencies else float("nan"),
        step_p95_ms=percentile_ms(latencies, 0.95),
        step_p99_ms=percentile_ms(latencies, 0.99),
        step_max_ms=percentile_ms(latencies, 1.0),
        wall_s=wall_s,
        steps_per_s=len(latencies) / wall_s if wall_s else 0.0,
    )


def run_load(
    url: str,
    sessions: int = 64,
    steps: int = 100,
    api_key: str | None = None,
    scenario: str = EXPLORE,
    commands: tuple[str, ...] = COMMANDS,
) -> LoadReport:
    """Hold `sessions` WebSocket sessions at once on the server at `url`, `steps` steps each.

    Args:
        url: the server (http:// or ws://).
        sessions: concurrent sessions (the server's capacity must allow them).
        steps: steps per session after its reset.
        api_key: the server's key, if it needs one.
        scenario: what every session resets into (default `explore`, the healthy cluster, so that
            the figures measure the environment rather than one incident's faults).
        commands: what the sessions type, in turn (default: a mix of tools, shell builtins and files).

    Returns:
        The figures; failures are counted in `errors`, not raised.
    """
    return asyncio.run(run_load_async(url, sessions, steps, api_key, scenario, commands=commands))


@dataclass(frozen=True)
class BurstReport:
    """One burst of simultaneous resets (latencies in milliseconds, from each send to its answer).

    `answer_order[i]` is the rank in which the reset sent i-th was answered (0 first), so a FIFO
    server gives ranks within its number of resets in flight of `i`. `queued_max` is the deepest
    queue position a client was told.
    """

    sessions: int
    resets_ok: int
    errors: int
    first_error: str | None
    reset_p50_ms: float
    reset_p99_ms: float
    reset_max_ms: float
    queued_max: int
    max_displacement: int
    wall_s: float
    steps_ok: int  # one step per session after the burst: the sessions are all still there
    sessions_held: int  # the server's own count of open sessions then (/capacity)
    answer_order: tuple[int, ...]

    def summary(self) -> str:
        """One paragraph for a terminal or a note."""
        return (
            f"{self.sessions} simultaneous resets: {self.resets_ok} ok, {self.errors} errors; "
            f"reset p50 {self.reset_p50_ms:.0f} ms, p99 {self.reset_p99_ms:.0f} ms, "
            f"max {self.reset_max_ms:.0f} ms; deepest queue position {self.queued_max}; answered at most "
            f"{self.max_displacement} places from the order sent; {self.wall_s:.1f} s in all; then "
            f"{self.steps_ok} sessions stepped, {self.sessions_held} held open by the server"
            + (f"\nfirst error: {self.first_error}" if self.first_error else "")
        )


async def run_burst_async(
    url: str,
    sessions: int,
    api_key: str | None = None,
    scenario: str = EXPLORE,
    message_timeout_s: float = 60.0,
    gap_s: float = 0.002,
) -> BurstReport:
    clients = [
        HpcEnvClient(url, api_key=api_key, message_timeout_s=message_timeout_s) for _ in range(sessions)
    ]
    latencies: list[float] = []
    answered: list[int] = []
    try:
        opened = await asyncio.gather(*(c.connect() for c in clients), return_exceptions=True)
        errors: list[BaseException] = [o for o in opened if isinstance(o, BaseException)]
        live = [i for i, o in enumerate(opened) if not isinstance(o, BaseException)]

        async def reset(index: int) -> None:
            start = time.perf_counter()
            result = await clients[index].reset(seed=index, scenario=scenario)
            latencies.append(time.perf_counter() - start)
            answered.append(index)
            if result.observation.step != 0:
                raise HpcgymError(f"session {index}: reset reported step {result.observation.step}")

        start = time.perf_counter()
        tasks = []
        for index in live:
            # Sent one after another a hair apart, so that "the order sent" is well defined.
            tasks.append(asyncio.create_task(reset(index)))
            await asyncio.sleep(gap_s)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        wall_s = time.perf_counter() - start
        errors += [o for o in outcomes if isinstance(o, BaseException)]
        reset_ok = [i for i, o in zip(live, outcomes, strict=True) if not isinstance(o, BaseException)]
        held = await asyncio.to_thread(_sessions_held, url, api_key)
        stepped = await asyncio.gather(
            *(clients[i].step(HpcAction(command="hostname")) for i in reset_ok), return_exceptions=True
        )
        errors += [o for o in stepped if isinstance(o, BaseException)]
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
    rank = {index: k for k, index in enumerate(answered)}
    order = tuple(rank.get(index, -1) for index in live)
    sent = {index: k for k, index in enumerate(live)}
    return BurstReport(
        sessions=sessions,
        resets_ok=len(latencies),
        errors=len(errors),
        first_error=f"{type(errors[0]).__name__}: {errors[0]}" if errors else None,
        reset_p50_ms=percentile_ms(latencies, 0.5),
        reset_p99_ms=percentile_ms(latencies, 0.99),
        reset_max_ms=percentile_ms(latencies, 1.0),
        queued_max=max((c.queue_position or 0 for c in clients), default=0),
        max_displacement=max((abs(rank[i] - sent[i]) for i in answered), default=0),
        wall_s=wall_s,
        steps_ok=sum(not isinstance(o, BaseException) for o in stepped),
        sessions_held=held,
        answer_order=order,
    )


def _sessions_held(url: str, api_key: str | None) -> int:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(f"{url.rstrip('/')}/capacity", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(json.load(response)["active_sessions"])


def run_burst(
    url: str,
    sessions: int = 256,
    api_key: str | None = None,
    scenario: str = EXPLORE,
    message_timeout_s: float = 60.0,
) -> BurstReport:
    """Open `sessions` sessions on `url`, then reset them all at once (no client-side gate).

    Args:
        url: the server; its session limit must allow `sessions`.
        sessions: sessions, and so simultaneous resets.
        api_key: the server's key, if it needs one.
        scenario: what every session resets into.
        message_timeout_s: each client's limit on one reply (a queued reset is kept alive by the
            server's `queued` frames, so this may be far below the burst's length).

    Returns:
        The figures; failures are counted in `errors`, not raised.
    """
    return asyncio.run(run_burst_async(url, sessions, api_key, scenario, message_timeout_s))


@contextlib.contextmanager
def server_process(
    images_dir: Path,
    sessions: int,
    steps: int,
    pool_size: int,
    log_path: Path | None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run the server in a child process on a free local port; yield its URL once its pool is full."""
    port = free_port()
    env = {
        **os.environ,
        "HPCGYM_IMAGES": str(images_dir),
        "HPCGYM_MAX_SESSIONS": str(sessions),
        "HPCGYM_POOL_SIZE": str(pool_size),
        "HPCGYM_MAX_STEPS": str(steps),
        **(extra_env or {}),
    }
    env.pop("OPENENV_API_KEY", None)
    argv = [sys.executable, "-m", "hpcgym.interfaces.openenv.server.app", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log-level", "warning"]
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(log_path, "wb")) if log_path else subprocess.DEVNULL
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, SERVER_START_TIMEOUT_S, process, episodes_ready=pool_size)
            yield url
        finally:
            stop_process(process)


def run_loadtest(
    images_dir: Path,
    sessions: int = 64,
    steps: int = 100,
    pool_size: int = 8,
    log_path: Path | None = None,
    commands: tuple[str, ...] = COMMANDS,
) -> LoadReport:
    """Start a server over `images_dir` in a child process, load it with `run_load`, stop it.

    Needs root and the built images, like the server itself.
    """
    with server_process(images_dir, sessions, steps, pool_size, log_path) as url:
        return run_load(url, sessions, steps, commands=commands)


def run_bursttest(
    images_dir: Path, sessions: int = 256, pool_size: int = 4, log_path: Path | None = None
) -> BurstReport:
    """Start a server over `images_dir` (its limit `sessions`) in a child process, `run_burst` it, stop it.

    For the lead's `invoke` task: `run_bursttest(default_images_dir(), 256)`. Needs root and the images.
    """
    # The sessions that reset first wait idle for the last: they must not be reaped meanwhile.
    idle = {"HPCGYM_SESSION_TIMEOUT_S": "3600"}
    with server_process(images_dir, sessions, 10, pool_size, log_path, extra_env=idle) as url:
        return run_burst(url, sessions)


def main(argv: list[str] | None = None) -> int:
    """Load a server (or one started here); print the figures; exit 1 if any session failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running server (default: start one over --images)")
    parser.add_argument("--images", type=Path, default=default_images_dir())
    parser.add_argument("--sessions", type=int, default=64, help="concurrent sessions (default %(default)s)")
    parser.add_argument("--steps", type=int, default=100, help="steps per session (default %(default)s)")
    parser.add_argument(
        "--api-key", default=os.environ.get("OPENENV_API_KEY"), help="(default $OPENENV_API_KEY)"
    )
    parser.add_argument("--scenario", default=EXPLORE, help="the sessions' scenario (default %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--burst", action="store_true", help="reset --sessions sessions at once and report reset latency"
    )
    parser.add_argument("--log", type=Path, help="the started server's log (default: none)")
    args = parser.parse_args(argv)
    if args.burst:
        burst = (
            run_burst(args.url, args.sessions, args.api_key, args.scenario)
            if args.url
            else run_bursttest(args.images, args.sessions, log_path=args.log)
        )
        print(burst.summary())
        if args.json:
            args.json.write_text(json.dumps(asdict(burst), indent=2) + "\n")
        return 1 if burst.errors else 0
    if args.url:
        report = run_load(args.url, args.sessions, args.steps, args.api_key, args.scenario)
    else:
        report = run_loadtest(args.images, args.sessions, args.steps)
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
