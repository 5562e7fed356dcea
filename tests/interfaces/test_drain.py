"""SIGTERM drain and the API key file, against real server processes (a real uvicorn, a real signal)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hpcgym.interfaces.openenv.client import HpcEnvClient
from hpcgym.interfaces.openenv.models import HpcAction
from hpcgym.interfaces.openenv.probe import free_port
from hpcgym.interfaces.openenv.server.admission import DEFAULT_MAX_SESSIONS, default_max_resets
from hpcgym.interfaces.openenv.server.auth import ApiKeyError, api_key_from_environ, read_api_key_file
from hpcgym.interfaces.openenv.server.drain import DRAINING_CODE, LOST_CODE

KEY = "fleet-key-0123456789"


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(images: Path, log_path: Path, **settings: str) -> subprocess.Popen[bytes]:
    """Start `hpcgym-server` on `settings["PORT"]` with the given environment variables (not waited on)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENENV_API_KEY", "HPCGYM_"))}
    env.update({"HPCGYM_IMAGES": str(images), "HPCGYM_POOL_SIZE": "0", **settings})
    argv = [sys.executable, "-m", "hpcgym.interfaces.openenv.server.app", "--host", "127.0.0.1"]
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


@contextlib.contextmanager
def server_process(images: Path, log_path: Path, **settings: str) -> Iterator[ServerProcess]:
    """A server process on a free port, healthy before the block starts; killed if still there after."""
    port = free_port()
    process = start_server(images, log_path, PORT=str(port), **settings)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"the server exited: {log_path.read_text()}"
            assert time.monotonic() < deadline, "the server was not healthy in 120 s"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield ServerProcess(url, process, log_path)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture
def images(images_dir: Path) -> Path:
    """The built images, where this machine can run a server's episodes (root and bubblewrap)."""
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("episodes need root and bubblewrap")
    return images_dir


def session(url: str, key: str | None = KEY) -> Any:
    client = HpcEnvClient(url, api_key=key).sync()
    client.connect()
    return client


def capacity(url: str) -> dict[str, object]:
    response = httpx.get(f"{url}/capacity", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    response.raise_for_status()
    return dict(response.json())


@pytest.mark.slow
def test_sigterm_drains_running_episodes_then_exits_zero(images, tmp_path) -> None:
    with server_process(
        images, tmp_path / "server.log", HPCGYM_DRAIN_S="6", HPCGYM_MAX_SESSIONS="4", OPENENV_API_KEY=KEY
    ) as server:
        finishing, lingering = session(server.url), session(server.url)
        try:
            for client in (finishing, lingering):
                client.reset(scenario="hpc_munge", seed=1)
            assert capacity(server.url) == {
                "max_sessions": 4,
                "active_sessions": 2,
                "max_resets": default_max_resets(),
                "resets_in_flight": 0,
                "resets_queued": 0,
                "sessions_refused": 0,
                "draining": False,
            }
            assert httpx.get(f"{server.url}/capacity", timeout=5).status_code == 401  # behind the key

            began = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            while not capacity(server.url)["draining"]:
                assert time.monotonic() < deadline, "SIGTERM did not start a drain"
                time.sleep(0.05)
            assert httpx.get(f"{server.url}/health", timeout=5).json()["status"] == "draining"

            # No new sessions, no new resets: the refusal names the drain, so a client goes elsewhere.
            newcomer = HpcEnvClient(server.url, api_key=KEY).sync()
            with pytest.raises(RuntimeError, match=DRAINING_CODE):
                newcomer.connect()
                newcomer.reset(scenario="hpc_munge", seed=1)
            newcomer.close()
            refused = httpx.post(f"{server.url}/reset", json={}, headers={"X-API-Key": KEY}, timeout=5)
            assert refused.status_code == 503 and refused.json()["code"] == DRAINING_CODE

            # Running episodes go on during the grace period, and one can finish normally.
            result = finishing.step(HpcAction(command="hostname"))
            assert result.observation.output.strip() == "login01"
            finishing.close()
            assert (
                lingering.step(HpcAction(command="echo still-here")).observation.output.strip()
                == "still-here"
            )

            # The one still running at the end of the grace period is told it was lost, not silently cut,
            # even with a command in flight (the server does not wait for it: SIGKILL is coming).
            with pytest.raises(RuntimeError, match=LOST_CODE):
                lingering.step(HpcAction(command="sleep 15"))
            lost_after = time.monotonic() - began
            server.process.wait(timeout=30)
            took = time.monotonic() - began
        finally:
            lingering.close()
        assert server.process.returncode == 0, server.log()
        # Not before the grace period, and inside Slurm's default KillWait (30 s) with room to spare.
        assert 6 <= lost_after < 9, lost_after
        assert took < 15, took
        assert "1 episode(s) lost" in server.log()


@pytest.mark.slow
def test_an_idle_server_exits_at_once_on_sigterm(images, tmp_path) -> None:
    with server_process(images, tmp_path / "server.log", HPCGYM_DRAIN_S="25") as server:
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0, server.log()
        assert time.monotonic() - began < 10


def write_key(path: Path, mode: int, text: str = KEY + "\n") -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_key_file_others_can_read_is_refused(tmp_path, mode) -> None:
    path = write_key(tmp_path / "key", mode)
    with pytest.raises(ApiKeyError, match=f"accessible to its group or others \\(mode {mode:04o}\\)"):
        read_api_key_file(path)


def test_key_file_reading(tmp_path) -> None:
    path = write_key(tmp_path / "key", 0o600)
    assert read_api_key_file(path) == KEY  # the trailing newline is not part of the key
    assert read_api_key_file(write_key(tmp_path / "ro", 0o400)) == KEY
    with pytest.raises(ApiKeyError, match="does not exist"):
        read_api_key_file(tmp_path / "missing")
    with pytest.raises(ApiKeyError, match="is empty"):
        read_api_key_file(write_key(tmp_path / "empty", 0o600, "\n"))
    with pytest.raises(ApiKeyError, match="not a regular file"):
        read_api_key_file(tmp_path)
    if os.geteuid() == 0:
        os.chown(path, 12345, 12345)
        with pytest.raises(ApiKeyError, match="belongs to uid 12345"):
            read_api_key_file(path)


def test_key_from_environ(tmp_path) -> None:
    path = str(write_key(tmp_path / "key", 0o600))
    assert api_key_from_environ({}) is None
    assert api_key_from_environ({"OPENENV_API_KEY": "direct"}) == "direct"
    assert api_key_from_environ({"OPENENV_API_KEY_FILE": path}) == KEY
    assert api_key_from_environ({"OPENENV_API_KEY_FILE": path, "OPENENV_API_KEY": KEY}) == KEY
    with pytest.raises(ApiKeyError, match="both set, to different keys"):
        api_key_from_environ({"OPENENV_API_KEY_FILE": path, "OPENENV_API_KEY": "other"})


def test_the_client_reads_the_key_file(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OPENENV_API_KEY", raising=False)
    monkeypatch.setenv("OPENENV_API_KEY_FILE", str(write_key(tmp_path / "key", 0o600)))
    assert HpcEnvClient("http://127.0.0.1:1")._headers["Authorization"] == f"Bearer {KEY}"
    monkeypatch.setenv("OPENENV_API_KEY_FILE", str(write_key(tmp_path / "open", 0o644)))
    with pytest.raises(ApiKeyError, match="chmod 0600"):
        HpcEnvClient("http://127.0.0.1:1")


@pytest.mark.slow
def test_the_server_refuses_a_readable_key_file_and_serves_with_a_private_one(images, tmp_path) -> None:
    readable = write_key(tmp_path / "readable", 0o644)
    process = start_server(
        images, tmp_path / "refused.log", PORT=str(free_port()), OPENENV_API_KEY_FILE=str(readable)
    )
    assert process.wait(timeout=60) == 2
    log = (tmp_path / "refused.log").read_text()
    assert "accessible to its group or others (mode 0644)" in log and "chmod 0600" in log

    private = write_key(tmp_path / "private", 0o600)
    with server_process(images, tmp_path / "server.log", OPENENV_API_KEY_FILE=str(private)) as server:
        assert httpx.get(f"{server.url}/capacity", timeout=5).status_code == 401
        assert capacity(server.url)["max_sessions"] == DEFAULT_MAX_SESSIONS
        client = HpcEnvClient(server.url, api_key=read_api_key_file(private)).sync()
        try:
            assert client.reset(scenario="hpc_munge", seed=2).observation.node == "login01"
        finally:
            client.close()
