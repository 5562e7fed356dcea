"""A warm pool: clusters prepared in the background, so that a reset is a hand-off.

A pooled cluster has its tmpfs, shared dirs and login node up, the shell waiting at its prompt.
`take` pops one under a lock and never puts it back: a cluster is handed out at most once, and a
used one is only ever closed. A background thread refills the pool to its target size.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

from hpcgym.errors import HpcgymError
from hpcgym.runtime.cluster import Cluster

log = logging.getLogger(__name__)


class WarmPool:
    def __init__(self, make: Callable[[], Cluster], size: int) -> None:
        self._make = make
        self.size = size
        self._ready: collections.deque[Cluster] = collections.deque()
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stopped = False
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._fill, name="hpcgym-pool", daemon=True)
        if size > 0:
            self._thread.start()
            self._wanted.set()

    def take(self) -> Cluster | None:
        """Return a ready cluster that nobody has had before, or None if the pool is empty."""
        with self._lock:
            cluster = self._ready.popleft() if self._ready else None
            if cluster is not None:
                # Defence in depth (a deque pop cannot repeat), kept on the cluster itself: a set of
                # every name handed out would grow by one per episode for the server's life.
                if cluster.handed_out:
                    raise HpcgymError("the warm pool tried to hand out a cluster twice")
                cluster.handed_out = True
        self._wanted.set()
        if cluster is not None and not cluster.nodes[cluster.login_node].is_running:
            cluster.close()  # its shell died while it waited (say the host killed it); never hand out
            return None
        return cluster

    @property
    def ready(self) -> int:
        return len(self._ready)

    def wait_full(self, timeout_s: float = 60.0) -> bool:
        """Block until the pool holds `size` clusters (for benchmarks and tests)."""
        done = threading.Event()

        def check() -> bool:
            return len(self._ready) >= self.size or self._stopped or self.failure is not None

        deadline = timeout_s
        while not check() and deadline > 0:
            done.wait(0.01)
            deadline -= 0.01
        return len(self._ready) >= self.size

    def _fill(self) -> None:
        while not self._stopped:
            self._wanted.wait(timeout=1.0)
            self._wanted.clear()
            while not self._stopped and len(self._ready) < self.size:
                try:
                    cluster = self._make()
                except HpcgymError as e:
                    # Surfaced by Runtime.new_cluster, which then raises instead of going cold quietly.
                    log.error("warm pool could not prepare a cluster: %s", e)
                    self.failure = e
                    return
                with self._lock:
                    if self._stopped:
                        cluster.close()
                        return
                    self._ready.append(cluster)

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            ready, self._ready = list(self._ready), collections.deque()
        self._wanted.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        for cluster in ready:
            cluster.close()
