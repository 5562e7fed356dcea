"""Finding a local server: a free port to start one on, and `/health` polled until it is ready.

Whatever starts a server in a child process (the benchmarks, the soak, the tests) uses these two, so
"ready" means one thing everywhere: healthy, with the pool holding the episodes asked for.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.request

from hpcgym.errors import HpcgymError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(
    url: str, timeout_s: float, process: subprocess.Popen[bytes] | None = None, episodes_ready: int = 0
) -> None:
    """Poll `url`/health until it is healthy with `episodes_ready` episodes prepared (or raise)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise HpcgymError(f"the server exited with code {process.returncode} before it was healthy")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            health = json.load(response)
            if health.get("status") == "healthy" and health.get("episodes_ready", 0) >= episodes_ready:
                return
        time.sleep(0.2)
    raise HpcgymError(f"the server at {url} was not healthy after {timeout_s:g} s")


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 60) -> None:
    """End a child server: SIGTERM, and SIGKILL if it has not exited `grace_s` later."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
