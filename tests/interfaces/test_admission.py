"""Admission control on a real server: resets queue in arrival order, a queued client never times out,
the reset and session limits hold and show in `/capacity` and `/health`, one session too many is
refused at once. CI sizes (16 resets); the 256-session figures come from the load test's burst run.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import requests

from hpcgym.bench.loadtest import run_burst
from hpcgym.interfaces.openenv.client import HpcEnvClient
from hpcgym.interfaces.openenv.server.admission import Admission
from hpcgym.interfaces.openenv.server.app import ServerSettings, build_app
from hpcgym.interfaces.openenv.server.local import serve
from hpcgym.interfaces.task import EXPLORE

BURST = 16
TIMEOUT_S = 3.0  # each client's message timeout: one reset's build fits, the queue's wait does not


def test_the_reset_queue_is_fifo_and_hands_on_a_slot_an_abandoned_waiter_got() -> None:
    async def scenario() -> None:
        admission = Admission(max_sessions=4, max_resets=1)
        assert admission.try_acquire() is None  # a free slot: taken at once
        first, second, third = (admission.try_acquire() for _ in range(3))
        assert first is not None and second is not None and third is not None
        assert [admission.position(w) for w in (first, second, third)] == [1, 2, 3]
        admission.release()
        assert first.done() and not second.done()
        admission.abandon(second)  # its client left while queued
        assert admission.position(third) == 1
        admission.abandon(first)  # given the slot, then gone: the slot passes to the next
        assert third.done() and admission.resets_in_flight == 1
        admission.release()
        assert admission.snapshot()["resets_in_flight"] == 0 and admission.resets_queued == 0

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def url(runtime):
    settings = ServerSettings(
        max_sessions=BURST + 2, max_resets=1, pool_size=0, queue_notice_s=0.3, session_timeout_s=120.0
    )
    with serve(build_app(settings, runtime=runtime)) as url:
        yield url


def watch_capacity(url: str, stop: threading.Event, seen: list[dict[str, int]]) -> None:
    while not stop.is_set():
        seen.append(requests.get(f"{url}/capacity", timeout=5).json())
        time.sleep(0.05)


def test_a_burst_of_resets_queues_in_order_and_no_client_times_out(url) -> None:
    seen: list[dict[str, int]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch_capacity, args=(url, stop, seen), daemon=True)
    watcher.start()
    try:
        # A message timeout below the longest wait: only the queue's notices keep that client alive.
        report = run_burst(url, BURST, message_timeout_s=TIMEOUT_S)
    finally:
        stop.set()
        watcher.join()
    assert report.errors == 0, report.first_error
    assert report.resets_ok == BURST == report.steps_ok == report.sessions_held
    assert report.reset_max_ms > TIMEOUT_S * 1000  # a reset outlasted the timeout it survived
    assert max(s["resets_in_flight"] for s in seen) <= 1
    assert max(s["resets_queued"] for s in seen) > 0
    assert max(s["active_sessions"] for s in seen) <= BURST
    # Answered in the order they were sent.
    assert report.max_displacement == 0 and sorted(report.answer_order) == list(range(BURST))
    assert report.queued_max >= BURST - 4
    health = requests.get(f"{url}/health", timeout=5).json()
    assert health["status"] == "healthy"
    assert (health["active_sessions"], health["resets_in_flight"], health["resets_queued"]) == (0, 0, 0)
    assert (health["max_sessions"], health["max_resets"]) == (BURST + 2, 1)


def test_a_session_over_the_limit_is_refused_at_once(runtime) -> None:
    settings = ServerSettings(max_sessions=2, max_resets=1, pool_size=0)
    with serve(build_app(settings, runtime=runtime)) as url:
        held = [HpcEnvClient(url).sync() for _ in range(2)]
        try:
            for client in held:
                client.connect()
            extra = HpcEnvClient(url).sync()
            began = time.monotonic()
            with pytest.raises(RuntimeError, match=r"at capacity: 2/2 sessions.*CAPACITY_REACHED"):
                extra.connect()
                extra.reset(scenario=EXPLORE)
            assert time.monotonic() - began < 2.0
            extra.close()
            capacity = requests.get(f"{url}/capacity", timeout=5).json()
            # OpenEnv's client reconnects once if it sees the refused socket closed before its send.
            assert capacity["active_sessions"] == 2 and capacity["sessions_refused"] in (1, 2)
        finally:
            for client in held:
                client.close()
        time.sleep(0.2)
        assert requests.get(f"{url}/capacity", timeout=5).json()["active_sessions"] == 0
