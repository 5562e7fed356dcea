"""Skips for the training tests: the training extra (torch, trl) and a runtime (root, bubblewrap)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def episode_images(images_dir: Path) -> Iterator[Path]:
    """The built images, where this machine can run episodes (root and bubblewrap)."""
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("episodes need root and bubblewrap")
    from training.backends import close_local_episodes

    yield images_dir
    close_local_episodes()


@pytest.fixture(scope="session")
def trl_stack() -> None:
    """Skip unless the training extra is installed."""
    for module in ("torch", "trl", "transformers", "datasets"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[train]')")


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def env_server(images: Path, log_path: Path, sessions: int = 8) -> Iterator[Server]:
    """The EnterpriseHPC OpenEnv server in a child process on a free local port; yields its URL."""
    pytest.importorskip("openenv", reason="the OpenEnv server needs openenv")
    from hpcgym.interfaces.openenv.probe import stop_process

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "HPCGYM_IMAGES": str(images),
        "HPCGYM_MAX_SESSIONS": str(sessions),
        "HPCGYM_POOL_SIZE": "2",
    }
    env.pop("OPENENV_API_KEY", None)
    argv = [
        sys.executable,
        "-m",
        "hpcgym.interfaces.openenv.server.app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 120
            while True:
                assert process.poll() is None, f"the server exited: {log_path.read_text()}"
                assert time.monotonic() < deadline, "the server was not healthy in 120 s"
                with contextlib.suppress(OSError):
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                        if response.status == 200:
                            break
                time.sleep(0.2)
            yield Server(url, process)
        finally:
            stop_process(process)
