"""Failover against real server processes: SIGKILL (the kernel closes its sockets) and SIGSTOP (a hung
or unreachable host: the socket stays open and silent, so only the client's ping timeout sees it).

Each measures how long a client blocked in a step takes to notice, and how long the trainer's episode
takes to run again on the other server (replayed there), and prints the figures. The bounds are
generous (the target, 3 s to notice, is a measured figure, not a timed test).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcgym.interfaces.openenv.client import HpcEnvClient
from hpcgym.interfaces.openenv.models import HpcAction
from tests.interfaces.test_drain import ServerProcess, server_process
from training.backends import server_pool
from training.env import EnvSettings, HpcToolEnv

ROW = {"scenario": "hpc_munge", "seed": 4}
# Generous bounds; the figures are printed. A killed process is seen at once (FIN); a hung one by
# the WebSocket ping (2 s interval, 8 s timeout).
NOTICE_BOUND_S = {"sigkill": 10.0, "sigstop": 20.0, "cut": 10.0}


@pytest.fixture
def images(images_dir: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the server's runtime needs root")
    return images_dir


@contextlib.contextmanager
def two_servers(images: Path, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    with (
        server_process(images, tmp_path / "a.log", HPCGYM_MAX_SESSIONS="4") as a,
        server_process(images, tmp_path / "b.log", HPCGYM_MAX_SESSIONS="4") as b,
    ):
        yield a, b


def blocked_step(url: str, noticed: list[float], errors: list[BaseException], ready: threading.Event) -> None:
    client = HpcEnvClient(url).sync()
    try:
        client.reset(scenario="explore", seed=1)
        ready.set()
        client.step(HpcAction(command="sleep 15"))
    except Exception as e:  # what the client raises is the point of the test
        noticed.append(time.monotonic())
        errors.append(e)
    finally:
        with contextlib.suppress(Exception):
            client.close()


@contextlib.contextmanager
def fault(how: str, server: ServerProcess) -> Iterator[None]:
    """sigkill: the process dies; sigstop: it hangs; cut: its packets vanish (a dead host, a cut link)."""
    port = server.url.rsplit(":", 1)[1]
    rule = ["INPUT", "-i", "lo", "-p", "tcp", "--sport", port, "-j", "DROP"]
    try:
        if how == "cut":
            subprocess.run(["iptables", "-I", *rule], check=True, stdin=subprocess.DEVNULL)
        else:
            os.kill(server.process.pid, signal.SIGKILL if how == "sigkill" else signal.SIGSTOP)
        yield
    finally:
        if how == "cut":
            subprocess.run(["iptables", "-D", *rule], check=True, stdin=subprocess.DEVNULL)
        if how != "sigkill":
            os.kill(server.process.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigkill", "sigstop", "cut"])
def test_a_dead_server_is_noticed_in_seconds_and_the_episode_moves(images, tmp_path, how) -> None:
    if how == "cut" and shutil.which("iptables") is None:
        pytest.skip("cutting the link needs iptables")
    with two_servers(images, tmp_path) as (a, b):
        settings = EnvSettings(env_urls=(a.url, b.url), api_key="", max_steps=10)
        pool = server_pool(settings.env_urls, api_key="")
        env = HpcToolEnv(settings)
        env.reset(**ROW)
        assert env._backend.url == a.url  # type: ignore[union-attr]
        before = env.run("touch /root/marker; hostname")

        noticed: list[float] = []
        errors: list[BaseException] = []
        ready = threading.Event()
        waiter = threading.Thread(target=blocked_step, args=(a.url, noticed, errors, ready), daemon=True)
        waiter.start()
        assert ready.wait(60), "the second session did not reset"
        time.sleep(0.5)  # its step is on the server now

        killed_at = time.monotonic()
        with fault(how, a):
            output = env.run("ls /root")
            moved_s = time.monotonic() - killed_at
            waiter.join(timeout=30)
            assert noticed, "the blocked client never noticed the server was gone"
            notice_s = noticed[0] - killed_at
            print(
                f"\n{how}: a blocked step noticed in {notice_s:.2f} s ({errors[0]!r:.80}); "
                f"the episode ran again on the other server {moved_s:.2f} s after the signal"
            )
            assert notice_s < NOTICE_BOUND_S[how]
            assert moved_s < 2 * NOTICE_BOUND_S[how]
            assert "marker" in output
            assert env._backend.url == b.url  # type: ignore[union-attr]
            assert env._stats().steps[0].output == before  # type: ignore[union-attr]
            assert pool.sessions()[b.url] == 1 and pool.sessions()[a.url] == 0
            assert env.get_reward() is not None
            assert pool.sessions() == {a.url: 0, b.url: 0}
            assert pool.metrics().episodes_moved == 1
