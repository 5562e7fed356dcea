"""The job-side wrapper: a port taken before the server binds it costs a restart, not the array task."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcgym.fleet import serve as serve_module
from hpcgym.fleet.coord import CoordDir
from tests.training.conftest import episode_images  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow


@pytest.fixture
def slurm_task_env(monkeypatch: pytest.MonkeyPatch, episode_images: Path) -> Iterator[None]:  # noqa: F811
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.setenv("HPCGYM_IMAGES", str(episode_images))
    monkeypatch.setenv("HPCGYM_MAX_SESSIONS", "2")
    monkeypatch.setenv("HPCGYM_POOL_SIZE", "1")
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGTERM, previous[0])
    signal.signal(signal.SIGINT, previous[1])


def test_a_port_taken_before_the_server_binds_it_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slurm_task_env: None
) -> None:
    coord = CoordDir(tmp_path / "launch")
    coord.create()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        real_free_port = serve_module.free_port
        monkeypatch.setattr(serve_module, "free_port", lambda bind: next(ports, None) or real_free_port(bind))

        markers: list[str] = []
        served = threading.Event()

        def stop_once_ready() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not served.is_set() and not coord.markers():
                time.sleep(0.2)
            markers.extend(marker.url for marker in coord.markers())
            if markers:
                os.kill(os.getpid(), signal.SIGTERM)

        watcher = threading.Thread(target=stop_once_ready, daemon=True)
        watcher.start()
        try:
            code = serve_module.serve(coord, ready_timeout_s=120, bind="127.0.0.1", url_host="127.0.0.1")
        finally:
            served.set()
            watcher.join()
    assert code == 0
    assert len(markers) == 1 and not markers[0].endswith(f":{taken}")
    assert coord.markers() == []  # the marker goes with the server
