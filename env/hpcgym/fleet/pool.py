"""The client side of a fleet: which env server takes the next session, and what the fleet has cost.

`ServerPool` probes each server (`GET /health`, then `GET /capacity` with the API key), places a new
session on the server with the most free sessions (ties go round robin in URL order, so placement is
deterministic), leaves out for a cool-down a server that just failed and leaves out a draining one
until a probe shows it serving again. It counts placements, retries (resets and moves after a
failure), failed servers, drain and capacity refusals, episodes moved to another server and episodes
lost: the last are infrastructure failures, which trainers mask rather than score.

It knows nothing of episodes or WebSockets: `training.backends` asks it where to go (`place`), tells it
what happened (`release`, `report_failure`, `record_moved`, `record_lost`) and keeps the sessions.
Thread-safe: TRL steps its environments from several threads, all sharing one pool.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from hpcgym.errors import HpcgymError

DRAINING_CODE = "SERVER_DRAINING"  # the server's refusal while it drains (see server/drain.py)
LOST_CODE = "EPISODE_LOST"  # the server's last frame to an episode its drain ended
CAPACITY_CODE = "CAPACITY_REACHED"  # OpenEnv's refusal of a session over HPCGYM_MAX_SESSIONS
# How the server's session layer words an episode it discarded (interfaces/session.py `_lost`).
EPISODE_FAILURE_MARK = "infrastructure failure, episode discarded"


class NoServerAvailable(HpcgymError):
    """No server of the fleet can take a session now."""


class Failure(enum.StrEnum):
    """What a failed call says about its server."""

    DOWN = "down"  # went away or broke: left out for the cool-down
    DRAINING = "draining"  # refuses new sessions until it is gone (or a probe shows it serving again)
    FULL = "full"  # at its session limit: left out until the next probe
    EPISODE = "episode"  # the server discarded this one episode (its cluster failed): the server serves on


def classify_failure(error: BaseException | str) -> Failure:
    """Read a server error (OpenEnv's `Server error: MESSAGE (code: CODE)`, or a transport error)."""
    text = str(error)
    if DRAINING_CODE in text or LOST_CODE in text:
        return Failure.DRAINING
    if CAPACITY_CODE in text:
        return Failure.FULL
    if EPISODE_FAILURE_MARK in text:
        return Failure.EPISODE
    return Failure.DOWN


@dataclass
class _Server:
    url: str
    index: int
    max_sessions: int = 0
    # Sessions this pool placed there and has not released: exact at every moment (moves included),
    # never overwritten by a probe.
    held: int = 0
    peak_held: int = 0
    # Sessions of other clients there, as the last probe saw them (its count less this pool's own).
    others: int = 0
    draining: bool = False
    down_until: float = 0.0
    probed_at: float | None = None
    error: str = "not probed yet"
    placements: int = 0
    failures: int = 0
    probe_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def free(self) -> int:
        return self.max_sessions - self.others - self.held

    def describe(self, now: float) -> str:
        if self.draining:
            return f"{self.url}: draining"
        if self.down_until > now:
            return f"{self.url}: down for {self.down_until - now:.0f} s more ({self.error})"
        if self.probed_at is None or self.error:
            return f"{self.url}: {self.error}"
        return f"{self.url}: {max(self.free, 0)} of {self.max_sessions} sessions free"


@dataclass(frozen=True)
class PoolMetrics:
    """What the fleet cost so far (counts since the pool was made)."""

    placements: int
    retries: int  # placements after a failure: a reset retried elsewhere, an episode moving
    server_failures: int
    drain_refusals: int
    capacity_refusals: int
    episode_failures: int  # episodes a server discarded as infrastructure failures (masked, moved)
    episodes_moved: int
    episodes_lost: int
    servers_up: int
    servers_draining: int
    servers_down: int

    def as_dict(self, prefix: str = "fleet/") -> dict[str, float]:
        """Flat figures for a trainer's logger."""
        return {f"{prefix}{name}": float(value) for name, value in self.__dict__.items()}


def check_urls(urls: Iterable[str]) -> tuple[str, ...]:
    """The fleet's server URLs, without trailing slashes; raise on an empty, malformed or repeated one."""
    checked: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an env server URL: {url!r} (expected http://HOST:PORT)")
        url = url.rstrip("/")
        if url in checked:
            raise ValueError(f"the env server {url} is listed twice")
        checked.append(url)
    if not checked:
        raise ValueError("an env server pool needs at least one URL")
    return tuple(checked)


class ServerPool:
    """Places sessions on a fleet's env servers by free capacity, and keeps count of what failed.

    Example:
        >>> pool = ServerPool(["http://node1:8000", "http://node2:8000"], api_key="...")  # doctest: +SKIP
        >>> url = pool.place()           # the server with the most free sessions
        >>> ...                          # run the session there; on failure: pool.report_failure(url, e)
        >>> pool.release(url)            # the session is over

    Args:
        urls: the servers (http://HOST:PORT).
        api_key: the servers' key, for `/capacity`.
        cooldown_s: how long a server that failed is left out.
        probe_interval_s: how old a probe may be before placing on its server probes again.
        timeout_s: the limit on one probe request.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        urls: Sequence[str],
        api_key: str | None = None,
        *,
        cooldown_s: float = 30.0,
        probe_interval_s: float = 2.0,
        timeout_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.urls = check_urls(urls)
        self.cooldown_s = cooldown_s
        self.probe_interval_s = probe_interval_s
        self._clock = clock
        self._servers = {url: _Server(url, i) for i, url in enumerate(self.urls)}
        self._lock = threading.Lock()
        self._cursor = 0
        self._counts = dict.fromkeys(
            (
                "retries",
                "server_failures",
                "drain_refusals",
                "capacity_refusals",
                "episode_failures",
                "moved",
                "lost",
            ),
            0,
        )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(headers=headers, timeout=timeout_s, follow_redirects=False)

    # ---- probing ------------------------------------------------------------------------------------

    def _probe(self, server: _Server) -> None:
        # Runs outside the pool's lock: a server that hangs holds up only the threads that wait for it.
        draining, max_sessions, active, error = False, 0, 0, ""
        slow = False
        try:
            health = self._http.get(f"{server.url}/health")
            if health.status_code == 503 and _json(health).get("status") == "draining":
                draining = True
            elif health.status_code != 200:
                error = f"/health answered {health.status_code}: {health.text[:200]}"
            else:
                capacity = self._http.get(f"{server.url}/capacity")
                if capacity.status_code == 401:
                    error = "/capacity refused the API key (401): give the fleet's key"
                elif capacity.status_code != 200:
                    error = f"/capacity answered {capacity.status_code}"
                else:
                    data = _json(capacity)
                    max_sessions = int(data["max_sessions"])
                    active = int(data["active_sessions"])
                    draining = bool(data["draining"])
        except httpx.TimeoutException as e:
            slow = True
            error = f"probe timed out: {type(e).__name__}: {e}"
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as e:
            error = f"probe failed: {type(e).__name__}: {e}"
        with self._lock:
            if slow and server.probed_at is not None and not server.error:
                # A busy server (many episodes starting on few cores) answers late but is not gone: keep
                # its last figures rather than leave it out; a dead one refuses connections instead.
                server.probed_at = self._clock()
                return
            server.probed_at = self._clock()
            server.draining = draining
            server.error = error
            if error:
                server.down_until = server.probed_at + self.cooldown_s
            else:
                server.down_until = 0.0
                # The server's count includes this pool's sessions that have connected; those still
                # connecting are held but not in it, hence the floor.
                server.max_sessions, server.others = max_sessions, max(0, active - server.held)

    def refresh(self, *, force: bool = False) -> None:
        """Probe the servers whose last probe is older than `probe_interval_s` (all with `force`).

        A server never probed is waited for; one being probed by another thread keeps its last figures.
        Servers in their cool-down are left alone until it ends.
        """
        now = self._clock()
        for server in self._servers.values():
            with self._lock:
                due = force or (
                    server.down_until <= now
                    and (server.probed_at is None or now - server.probed_at >= self.probe_interval_s)
                )
                first = server.probed_at is None
            if not due:
                continue
            if not server.probe_lock.acquire(blocking=first or force):
                continue
            try:
                with self._lock:
                    fresh = (
                        not force
                        and server.probed_at is not None
                        and self._clock() - server.probed_at < self.probe_interval_s
                    )
                if not fresh:
                    self._probe(server)
            finally:
                server.probe_lock.release()

    # ---- placement ----------------------------------------------------------------------------------

    def candidates(self, exclude: Iterable[str] = ()) -> list[str]:
        """Servers to try for a new session, best first (no probing).

        Servers with free sessions come first, most free first, ties in round-robin order from the
        cursor; then servers that look full (their figures may be old); then those still in their
        cool-down, as a last resort. Draining servers never appear.
        """
        skip = set(exclude)
        now = self._clock()
        n = len(self.urls)
        with self._lock:
            live, resting = [], []
            for server in self._servers.values():
                if server.url in skip or server.draining or server.probed_at is None:
                    continue
                turn = (server.index - self._cursor) % n
                if server.down_until > now or server.error:
                    resting.append((server.down_until, turn, server.url))
                else:
                    live.append((-max(server.free, 0), turn, server.url))
        return [url for *_, url in sorted(live)] + [url for *_, url in sorted(resting)]

    def place(self, exclude: Iterable[str] = ()) -> str:
        """Choose the server for a new session and count the session there until `release`.

        Args:
            exclude: servers already tried for this session; a placement with any is a retry.

        Raises:
            NoServerAvailable: every server is excluded, draining, or unreachable; the message lists why.
        """
        exclude = set(exclude)
        self.refresh()
        order = self.candidates(exclude)
        with self._lock:
            if exclude:
                self._counts["retries"] += 1
            if not order:
                now = self._clock()
                states = "; ".join(s.describe(now) for s in self._servers.values())
                tried = f" (tried: {', '.join(sorted(exclude))})" if exclude else ""
                raise NoServerAvailable(
                    f"no env server can take a session{tried}: {states}",
                    hint="check the fleet (`invoke fleet-status`) and the servers' logs",
                )
            server = self._servers[order[0]]
            server.held += 1
            server.peak_held = max(server.peak_held, server.held)
            server.placements += 1
            self._cursor = (server.index + 1) % len(self.urls)
            return server.url

    def release(self, url: str) -> None:
        """A session `place` put on `url` has ended (normally or not).

        Raises:
            ValueError: this pool holds no session on `url` (a release without its placement).
        """
        with self._lock:
            server = self._servers[url]
            if server.held < 1:
                raise ValueError(f"released a session on {url}, where this pool holds none")
            server.held -= 1

    # ---- what happened ------------------------------------------------------------------------------

    def report_failure(self, url: str, error: BaseException | str) -> Failure:
        """A call to `url` failed: leave the server out as the failure says, and count it."""
        kind = classify_failure(error)
        with self._lock:
            server = self._servers[url]
            server.failures += 1
            if kind is Failure.DRAINING:
                server.draining = True
                self._counts["drain_refusals"] += 1
            elif kind is Failure.FULL:
                # Full until the next probe says otherwise: the rest of its slots are others'.
                server.others = max(server.others, server.max_sessions - server.held)
                self._counts["capacity_refusals"] += 1
            elif kind is Failure.EPISODE:
                # One cluster failed, not the server: no cool-down, or one bad node would cost a
                # whole server's sessions for the next placements.
                self._counts["episode_failures"] += 1
            else:
                server.down_until = self._clock() + self.cooldown_s
                server.error = str(error)[:300]
                self._counts["server_failures"] += 1
        return kind

    def record_moved(self, url: str) -> None:
        """An episode moved off a failed server and goes on at `url`."""
        with self._lock:
            self._counts["moved"] += 1

    def record_lost(self, url: str | None) -> None:
        """An episode was lost to the fleet (no server could continue it): an infrastructure failure."""
        with self._lock:
            self._counts["lost"] += 1

    def metrics(self) -> PoolMetrics:
        now = self._clock()
        with self._lock:
            servers = list(self._servers.values())
            draining = sum(s.draining for s in servers)
            down = sum(not s.draining and (s.down_until > now or bool(s.error)) for s in servers)
            return PoolMetrics(
                placements=sum(s.placements for s in servers),
                retries=self._counts["retries"],
                server_failures=self._counts["server_failures"],
                drain_refusals=self._counts["drain_refusals"],
                capacity_refusals=self._counts["capacity_refusals"],
                episode_failures=self._counts["episode_failures"],
                episodes_moved=self._counts["moved"],
                episodes_lost=self._counts["lost"],
                servers_up=len(servers) - draining - down,
                servers_draining=draining,
                servers_down=down,
            )

    def placements(self) -> dict[str, int]:
        """Sessions placed on each server so far."""
        with self._lock:
            return {url: s.placements for url, s in self._servers.items()}

    def sessions(self) -> dict[str, int]:
        """Sessions this pool holds open on each server now (placed, not yet released)."""
        with self._lock:
            return {url: s.held for url, s in self._servers.items()}

    def peak_sessions(self) -> dict[str, int]:
        """The most sessions this pool held open on each server at one moment."""
        with self._lock:
            return {url: s.peak_held for url, s in self._servers.items()}

    def close(self) -> None:
        self._http.close()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
