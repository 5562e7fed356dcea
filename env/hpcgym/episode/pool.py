"""A warm pool of whole episodes, so that an env reset is a hand-off instead of a boot.

Making an `Episode` boots every node's daemons (about 200 ms on two cores); the interfaces reset far
more often than that allows. `EpisodePool` prepares episodes on a background thread and `take` hands
out one that nobody has had before, never a used one: an episode is handed out at most once and its
taker closes it. The runtime's own pool (`runtime/pool.py`) sits below this one and keeps bare
clusters; this one keeps clusters with their controller and services already up.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hpcgym.closing import Closing
from hpcgym.episode import DEFAULT_STEP_SECONDS, Episode
from hpcgym.errors import HpcgymError, SandboxError
from hpcgym.runtime import Runtime

log = logging.getLogger(__name__)

# Background work waits this long after a hand-off: making an episode is ~200 ms of mostly Python,
# and started at once it would hold the GIL while the taker finishes its reset (5-15 ms instead of 1).
HANDOFF_GRACE_S = 0.025
RETRY_AFTER_S = 1.0


@dataclass(frozen=True)
class EpisodeOptions:
    """How the pool's episodes are made (the arguments of `Episode` other than the runtime)."""

    step_seconds: int = DEFAULT_STEP_SECONDS
    timeout_s: float | None = None
    slurm_conf_text: str | None = None

    def make(self, runtime: Runtime) -> Episode:
        return Episode(
            runtime,
            step_seconds=self.step_seconds,
            timeout_s=self.timeout_s,
            slurm_conf_text=self.slurm_conf_text,
        )


class EpisodePool(Closing):
    """Fresh episodes, prepared ahead on a background thread.

    Example:
        >>> with EpisodePool(runtime, size=2) as pool:  # doctest: +SKIP
        ...     with pool.take() as episode:
        ...         print(episode.step("hostname").output)
        login01

    Args:
        runtime: makes the clusters (shared with everything else in the process).
        size: how many ready episodes to keep (0: every `take` makes one on the spot).
        options: how each episode is made.
    """

    def __init__(self, runtime: Runtime, size: int, options: EpisodeOptions | None = None) -> None:
        if size < 0:
            raise ValueError("the pool size must not be negative")
        self.runtime = runtime
        self.size = size
        self.options = options or EpisodeOptions()
        self._ready: collections.deque[Episode] = collections.deque()
        self._handed_out: set[str] = set()  # cluster dir names are unique per process
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._wanted = threading.Event()
        self._stopped = False
        self.failure: BaseException | None = None
        # Closing an episode unmounts and removes its nodes (about 20 ms): off the reset path.
        self._closer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpcgym-episode-closer")
        self._thread = threading.Thread(target=self._fill, name="hpcgym-episode-pool", daemon=True)
        if size > 0:
            self._thread.start()
            self._wanted.set()

    @property
    def ready(self) -> int:
        """How many episodes are waiting to be handed out."""
        return len(self._ready)

    def take(self) -> Episode:
        """Return a fresh episode: a prepared one if any is ready, else one made now.

        Raises:
            SandboxError: the pool's thread failed to make an episode (the cause is in the message),
                or the pool is closed.
        """
        episode = self.take_ready()
        if episode is not None:
            return episode
        if self._stopped:
            raise SandboxError("the episode pool is closed", hint="make a new EpisodePool")
        if self.failure is not None:
            raise SandboxError(
                f"the episode pool failed: {self.failure}",
                hint="see the log; the pool keeps trying, and a passing fault heals",
            )
        return self.options.make(self.runtime)

    def take_ready(self) -> Episode | None:
        """Return a prepared episode nobody has had before, or None if none is ready."""
        while True:
            with self._lock:
                episode = self._ready.popleft() if self._ready else None
                if episode is not None:
                    # Defence in depth: a deque pop cannot repeat.
                    if episode.cluster.dir.name in self._handed_out:
                        raise HpcgymError("the episode pool tried to hand out an episode twice")
                    self._handed_out.add(episode.cluster.dir.name)
            self._wanted.set()
            if episode is None:
                return None
            if episode.cluster.nodes[episode.cluster.login_node].is_running:
                return episode
            # Its login shell died while it waited (say the host killed it): never hand that out.
            episode.close()

    def discard(self, episode: Episode) -> None:
        """Close a used episode in the background (its taker's alternative to `episode.close()`)."""
        self._closer.submit(self._close_quietly, episode)

    def _close_quietly(self, episode: Episode) -> None:
        time.sleep(HANDOFF_GRACE_S)
        try:
            episode.close()
        except HpcgymError as e:
            # Nobody waits on this close; the next `take` raises instead.
            log.error("closing a used episode failed: %s", e)
            self.failure = e

    def wait_full(self, timeout_s: float = 60.0) -> bool:
        """Block until `size` episodes are ready (for benchmarks and tests); False on timeout."""
        with self._changed:
            return (
                self._changed.wait_for(
                    lambda: len(self._ready) >= self.size or self._stopped or self.failure is not None,
                    timeout=timeout_s,
                )
                and len(self._ready) >= self.size
            )

    def _fill(self) -> None:
        while not self._stopped:
            self._wanted.wait(timeout=1.0)
            time.sleep(HANDOFF_GRACE_S)
            self._wanted.clear()
            while not self._stopped and len(self._ready) < self.size:
                try:
                    episode = self.options.make(self.runtime)
                except HpcgymError as e:
                    # Surfaced by `take` (and the server's /health) until an attempt succeeds again:
                    # a host that cannot make episodes at all stays visibly broken, a passing fault heals.
                    log.error("episode pool could not prepare an episode: %s", e)
                    with self._changed:
                        self.failure = e
                        self._changed.notify_all()
                    time.sleep(RETRY_AFTER_S)
                    continue
                with self._changed:
                    self.failure = None
                    stopped = self._stopped
                    if not stopped:
                        self._ready.append(episode)
                        self._changed.notify_all()
                if stopped:
                    episode.close()  # the pool closed while this one was being made
                    return

    def close(self) -> None:
        """Stop preparing, close every episode not handed out, and finish the `discard`ed ones' closes."""
        with self._changed:
            self._stopped = True
            ready, self._ready = list(self._ready), collections.deque()
            self._changed.notify_all()
        self._wanted.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        for episode in ready:
            episode.close()
        self._closer.shutdown(wait=True)
