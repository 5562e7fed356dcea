"""The client pool over real EnterpriseHPC servers (uvicorn on local ports, real episodes).

Placement by free capacity, a dead server skipped, a failed reset retried elsewhere, a draining server
refused for new sessions while its running episode finishes, and an episode lost to a drain moved to
another server or, with none left, masked and counted.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from fastapi import FastAPI

from hpcgym.fleet.pool import Failure, NoServerAvailable, ServerPool, check_urls, classify_failure
from hpcgym.interfaces.openenv.client import HpcEnvClient
from hpcgym.interfaces.openenv.probe import free_port
from hpcgym.interfaces.openenv.server.app import ServerSettings, build_app
from hpcgym.interfaces.openenv.server.drain import Drain, DrainingServer, draining_config
from training.backends import EnvironmentUnavailable, server_pool
from training.env import EnvSettings, HpcToolEnv, episode_metrics

ROW = {"scenario": "hpc_munge", "seed": 4}


@dataclass
class Running:
    url: str
    server: DrainingServer
    drain: Drain
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def wait_drained(self) -> None:
        deadline = time.monotonic() + 30
        while not self.server.should_exit:
            assert time.monotonic() < deadline, "the drain did not end"
            time.sleep(0.05)


@contextlib.contextmanager
def running(app: FastAPI) -> Iterator[Running]:
    """Serve `app` on a free local port with the draining server, in a thread, until the block ends."""
    port = free_port()
    server = DrainingServer(
        draining_config(app, host="127.0.0.1", port=port, log_level="warning"), app.state.hpcgym_drain
    )
    thread = threading.Thread(target=server.run, name="test-fleet-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    try:
        yield Running(f"http://127.0.0.1:{port}", server, app.state.hpcgym_drain, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def fleet(runtime):
    """Start servers over the session's runtime: `fleet(max_sessions, drain_s=...)` -> Running."""
    with contextlib.ExitStack() as stack:

        def start(max_sessions: int, drain_s: float = 30.0) -> Running:
            settings = ServerSettings(max_sessions=max_sessions, pool_size=0, drain_s=drain_s)
            return stack.enter_context(running(build_app(settings, runtime=runtime)))

        yield start


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


def test_urls_are_checked() -> None:
    assert check_urls(["http://a:1/", "https://b:2"]) == ("http://a:1", "https://b:2")
    for bad, message in [
        ([], "at least one"),
        (["a:1"], "not an env server URL"),
        (["http://a:1"] * 2, "twice"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_urls(bad)


def test_failures_are_classified() -> None:
    assert (
        classify_failure("Server error: the server is draining (code: SERVER_DRAINING)") is Failure.DRAINING
    )
    assert classify_failure("Server error: the episode was lost (code: EPISODE_LOST)") is Failure.DRAINING
    assert classify_failure("Server error: Server at capacity (code: CAPACITY_REACHED)") is Failure.FULL
    assert classify_failure(ConnectionError("Connect call failed")) is Failure.DOWN
    lost = "Server error: infrastructure failure, episode discarded: the init of compute-01 died (code: EXECUTION_ERROR)"
    assert classify_failure(lost) is Failure.EPISODE


def test_an_episode_the_server_discarded_leaves_the_server_in_service(fleet) -> None:
    # One cluster's failure (a node crashed) is counted, not held against the server that reported it.
    live = fleet(4)
    pool = ServerPool([live.url], cooldown_s=60)
    try:
        url = pool.place()
        lost = RuntimeError(
            "Server error: infrastructure failure, episode discarded: the init of compute-01 died"
        )
        assert pool.report_failure(url, lost) is Failure.EPISODE
        pool.release(url)
        metrics = pool.metrics()
        assert (metrics.episode_failures, metrics.server_failures, metrics.servers_down) == (1, 0, 0)
        assert pool.place() == live.url
        pool.release(live.url)
    finally:
        pool.close()


def test_sessions_go_where_most_capacity_is_free(fleet) -> None:
    big, small = fleet(4), fleet(2)
    pool = ServerPool([small.url, big.url])
    try:
        # Most free first (4 against 2), ties in round-robin order, until both are full.
        order = [pool.place() for _ in range(6)]
        assert order == [big.url, big.url, small.url, big.url, small.url, big.url]
        assert pool.placements() == {small.url: 2, big.url: 4}
        for url in order:
            pool.release(url)

        # The capacity probe sees sessions other clients hold: three on `big` leave it one free.
        others = [HpcEnvClient(big.url).sync() for _ in range(3)]
        try:
            for client in others:
                client.connect()
            pool.refresh(force=True)
            assert [pool.place() for _ in range(3)] == [small.url, big.url, small.url]
        finally:
            for client in others:
                client.close()
    finally:
        pool.close()


def test_a_dead_server_is_skipped_and_named_when_nothing_is_left(fleet) -> None:
    live, dead = fleet(4), dead_url()
    pool = ServerPool([dead, live.url], cooldown_s=60)
    try:
        assert {pool.place() for _ in range(3)} == {live.url}
        metrics = pool.metrics()
        assert (metrics.servers_up, metrics.servers_down) == (1, 1)
        # A server in its cool-down is the last resort, tried only when no other is left.
        assert pool.place(exclude=[live.url]) == dead
        with pytest.raises(NoServerAvailable, match=f"{dead}: down for .*probe failed"):
            pool.place(exclude=[live.url, dead])
    finally:
        pool.close()


def test_a_server_that_never_answers_is_left_out(fleet) -> None:
    live = fleet(4)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections queue, nobody answers
        hung = f"http://127.0.0.1:{silent.getsockname()[1]}"
        pool = ServerPool([hung, live.url], timeout_s=0.5)
        try:
            began = time.monotonic()
            assert pool.place() == live.url
            assert time.monotonic() - began < 5
            assert pool.metrics().servers_down == 1
        finally:
            pool.close()


def test_placement_is_thread_safe(fleet) -> None:
    a, b = fleet(64), fleet(64)
    pool = ServerPool([a.url, b.url])

    def work(_: int) -> None:
        for _ in range(50):
            pool.release(pool.place())

    try:
        with ThreadPoolExecutor(8) as threads:
            list(threads.map(work, range(8)))
        placed = pool.placements()
        assert sum(placed.values()) == 400
        assert pool.sessions() == {a.url: 0, b.url: 0}
    finally:
        pool.close()


def test_a_probe_never_forgets_sessions_placed_but_not_yet_open(fleet) -> None:
    # Placed sessions that have not connected yet are not in the server's count. The pool used to
    # reset its own count to the probe's, forget them, and place past a server's limit (18 on 16).
    a, b = fleet(3), fleet(2)
    pool = ServerPool([a.url, b.url])
    try:
        placed = [pool.place() for _ in range(5)]
        assert pool.sessions() == {a.url: 3, b.url: 2}
        pool.release(b.url)
        pool.refresh(force=True)
        assert pool.place() == b.url  # the one free slot; `a` is full though nothing connected there
        assert pool.sessions() == {a.url: 3, b.url: 2} == pool.peak_sessions()
        with pytest.raises(ValueError, match="holds none"):
            for url in [*placed, b.url]:
                pool.release(url)
        assert pool.sessions() == {a.url: 0, b.url: 0}
    finally:
        pool.close()


@pytest.mark.slow
def test_a_failed_reset_is_retried_on_another_server(fleet) -> None:
    a, b = fleet(4), fleet(2)
    pool = server_pool((a.url, b.url), api_key="")
    pool.probe_interval_s = 3600.0  # keep the figures from before the failure: the reset must try `a`
    pool.refresh(force=True)
    a.stop()
    env = HpcToolEnv(EnvSettings(env_urls=(a.url, b.url), api_key="", max_steps=5))
    assert "login01" in env.reset(**ROW)
    assert env._backend.url == b.url  # type: ignore[union-attr]
    assert "login01" in env.run("hostname")
    assert env.get_reward() is not None
    metrics = pool.metrics()
    assert (metrics.retries, metrics.server_failures, metrics.episodes_lost) == (1, 1, 0)


@pytest.mark.slow
def test_a_draining_server_takes_no_new_session_but_finishes_its_episode(fleet) -> None:
    a, b = fleet(4), fleet(2)
    settings = EnvSettings(env_urls=(a.url, b.url), api_key="", max_steps=5)
    pool = server_pool(settings.env_urls, api_key="")
    running_env = HpcToolEnv(settings)
    running_env.reset(**ROW)
    assert running_env._backend.url == a.url  # type: ignore[union-attr]

    pool.probe_interval_s = 3600.0  # the pool still thinks `a` is best: the refusal must say why
    a.drain.start()
    newcomer = HpcToolEnv(settings)
    newcomer.reset(**ROW)
    assert newcomer._backend.url == b.url  # type: ignore[union-attr]
    assert pool.metrics().drain_refusals == 1 and pool.metrics().server_failures == 0
    assert pool.metrics().servers_draining == 1

    # The episode already on `a` goes on there, and is scored as usual.
    assert "login01" in running_env.run("hostname")
    assert running_env._backend.url == a.url  # type: ignore[union-attr]
    assert running_env.get_reward() is not None
    assert newcomer.get_reward() is not None
    assert pool.metrics().episodes_lost == 0


@pytest.mark.slow
def test_an_episode_lost_to_a_drain_moves_or_is_masked(fleet) -> None:
    a, b = fleet(4, drain_s=0.5), fleet(2)
    settings = EnvSettings(env_urls=(a.url, b.url), api_key="", max_steps=10)
    env = HpcToolEnv(settings)
    env.reset(**ROW)
    assert env._backend.url == a.url  # type: ignore[union-attr]
    before = env.run("touch /root/marker")
    a.drain.start()
    a.wait_drained()  # the grace period ended and the episode was lost there

    # Replayed on `b`: the agent sees no difference, and the rollout is still scored.
    assert "marker" in env.run("ls /root")
    assert env._backend.url == b.url  # type: ignore[union-attr]
    assert env._stats().steps[0].output == before  # type: ignore[union-attr]
    pool = server_pool(settings.env_urls, api_key="")
    assert pool.sessions() == {a.url: 0, b.url: 1}  # exact under the move
    assert env.get_reward() is not None
    assert pool.sessions() == {a.url: 0, b.url: 0}
    metrics = pool.metrics()
    assert (metrics.episodes_moved, metrics.episodes_lost, metrics.retries) == (1, 0, 1)
    # Read as a drain when the EPISODE_LOST frame arrives before the socket's close, else as a failure.
    assert metrics.drain_refusals + metrics.server_failures == 1

    # With no other server, the episode is lost: masked (None), never scored 0, and counted.
    c = fleet(2, drain_s=0.5)
    alone = EnvSettings(env_urls=(c.url,), api_key="", max_steps=10)
    env = HpcToolEnv(alone)
    env.reset(**ROW)
    env.run("hostname")
    c.drain.start()
    c.wait_drained()
    with pytest.raises(EnvironmentUnavailable, match="no env server could continue"):
        env.run("hostname")
    assert env.get_reward() is None
    assert env._stats().infra_failed  # type: ignore[union-attr]
    assert server_pool(alone.env_urls, api_key="").metrics().episodes_lost == 1
    logged: dict[str, float] = {}
    episode_metrics([env], log_metric=logged.__setitem__)
    assert logged["hpcgym/infra_failed"] == 1.0 and logged["fleet/episodes_lost"] == 1.0
