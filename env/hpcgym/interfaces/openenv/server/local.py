"""An EnterpriseHPC server inside this process, on a free local port, for as long as a block runs.

Replays and tests talk to a real server over its real WebSocket without a second process: the app
runs under uvicorn in a thread, over a runtime the caller already has.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from hpcgym.errors import HpcgymError

START_TIMEOUT_S = 30.0


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run `app` with uvicorn on 127.0.0.1 until the block ends; yield its http:// URL.

    Raises:
        HpcgymError: the server did not start within `START_TIMEOUT_S`.
    """
    # The socket is bound here and handed over: a port picked, closed and bound again later can be
    # taken in between by any client connection's ephemeral port ("address already in use").
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="hpcgym-uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise HpcgymError("the local OpenEnv server did not start", hint="see the log above")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
