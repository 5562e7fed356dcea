"""What one fleet array task runs: start an env server, announce it once healthy, drain it on SIGTERM.

`python -m hpcgym.fleet.serve --coord-dir DIR` (the batch script execs it, so it is the batch shell):
picks a free port, starts `hpcgym.interfaces.openenv.server.app` with the launch's token file, waits
until `/health` answers 200, and only then writes `servers/<task>.json` atomically. SIGTERM (fleet-down,
or Slurm's warning before the time limit) removes the marker first, so no new client picks this
server, then passes the signal on and waits while the server drains. The marker is removed on every
exit this process lives through; a SIGKILL leaves it behind, and readers drop it (see `ready.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import FrameType

from hpcgym.errors import HpcgymError
from hpcgym.fleet.config import FleetError
from hpcgym.fleet.coord import CoordDir, ServerMarker
from hpcgym.interfaces.openenv.server.admission import DEFAULT_MAX_SESSIONS

# A server that dies before its first healthy answer is started again on a new port this many times in
# all: the port is free when picked, but another process may bind it before the server does.
START_ATTEMPTS = 3
SERVER_MODULE = "hpcgym.interfaces.openenv.server.app"


def free_port(bind: str) -> int:
    """A port the kernel just handed out on `bind`; the server binds it a moment later."""
    with socket.socket() as s:
        s.bind((bind, 0))
        return int(s.getsockname()[1])


def is_healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


def slurm_task() -> tuple[str, str, int]:
    """(job id, array job id, array task id) of the running array task, from Slurm's environment."""
    try:
        return (
            os.environ["SLURM_JOB_ID"],
            os.environ["SLURM_ARRAY_JOB_ID"],
            int(os.environ["SLURM_ARRAY_TASK_ID"]),
        )
    except (KeyError, ValueError):
        raise FleetError(
            "hpcgym.fleet.serve runs inside a Slurm array task (SLURM_ARRAY_TASK_ID is unset)",
            hint="submit it with `invoke fleet-up`",
        ) from None


def serve(coord: CoordDir, ready_timeout_s: float, bind: str = "0.0.0.0", url_host: str | None = None) -> int:
    """Run one server for this array task until it exits; return its exit status."""
    job_id, array_job_id, task_id = slurm_task()
    coord.read_token()  # refuse a token file others can read before any server starts with it
    host = url_host or socket.gethostname()
    env = {**os.environ, "OPENENV_API_KEY_FILE": str(coord.token)}
    env.pop("OPENENV_API_KEY", None)

    def start() -> tuple[subprocess.Popen[bytes], int, str]:
        port = free_port(bind)
        url = f"http://{host}:{port}"
        argv = [sys.executable, "-m", SERVER_MODULE, "--host", bind, "--port", str(port)]
        print(f"serve: task {array_job_id}_{task_id} starting the server on {url}", flush=True)
        return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL), port, url

    server, port, url = start()
    starts_left = START_ATTEMPTS - 1
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        coord.remove_marker(task_id)  # first: no client may pick a server that is going away
        print(f"serve: {signal.Signals(signum).name}: draining the server", flush=True)
        with contextlib.suppress(ProcessLookupError):
            server.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not stopping and not is_healthy(url):
            if server.poll() is not None:
                print(f"serve: the server exited with {server.returncode} before it was healthy", flush=True)
                if starts_left == 0:
                    return server.returncode or 1
                # Most likely another process took the port between free_port and the server's bind.
                starts_left -= 1
                server, port, url = start()
                continue
            if time.monotonic() > deadline:
                print(
                    f"serve: the server was not healthy after {ready_timeout_s:g} s; stopping it", flush=True
                )
                server.terminate()
                server.wait()
                return 1
            time.sleep(0.5)
        if not stopping:
            coord.write_marker(
                ServerMarker(
                    job_id=job_id,
                    array_job_id=array_job_id,
                    task_id=task_id,
                    url=url,
                    host=host,
                    port=port,
                    pid=os.getpid(),
                    sessions=int(os.environ.get("HPCGYM_MAX_SESSIONS") or DEFAULT_MAX_SESSIONS),
                    ready_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                )
            )
            print(f"serve: ready at {url}", flush=True)
        returncode = server.wait()
        print(f"serve: the server exited with {returncode}", flush=True)
        return 0 if stopping and returncode in (0, -signal.SIGTERM) else returncode or 0
    finally:
        coord.remove_marker(task_id)
        if server.poll() is None:
            server.kill()
            server.wait()


def main(argv: list[str] | None = None) -> None:
    """Serve one fleet array task (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description="Run one env server of an hpcgym fleet inside a Slurm array task."
    )
    parser.add_argument("--coord-dir", type=Path, required=True, help="the launch's coordination directory")
    parser.add_argument("--ready-timeout-s", type=float, default=300.0, help="give up if not healthy by then")
    parser.add_argument("--bind", default="0.0.0.0", help="listen address (default %(default)s)")
    parser.add_argument("--url-host", help="host name clients use (default: this node's hostname)")
    args = parser.parse_args(argv)
    try:
        code = serve(CoordDir(args.coord_dir.resolve()), args.ready_timeout_s, args.bind, args.url_host)
    except HpcgymError as e:
        print(f"serve: error: {e}", file=sys.stderr, flush=True)
        code = 1
    raise SystemExit(code)


if __name__ == "__main__":
    main()
