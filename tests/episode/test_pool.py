"""The episode warm pool (hpcgym/episode/pool.py), with stand-in episodes: no sandbox needed."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from hpcgym.episode.pool import EpisodeOptions, EpisodePool
from hpcgym.errors import SandboxError

_names = itertools.count()


class FakeEpisode:
    def __init__(self) -> None:
        login = SimpleNamespace(is_running=True)
        self.cluster = SimpleNamespace(
            dir=SimpleNamespace(name=f"c{next(_names)}"), login_node="l", nodes={"l": login}
        )
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


@dataclass(frozen=True)
class FakeOptions(EpisodeOptions):
    failures: list[int] = field(default_factory=list)  # make() raises while this is non-empty
    made: list[FakeEpisode] = field(default_factory=list)

    def make(self, runtime):
        if self.failures:
            self.failures.pop()
            raise SandboxError("bwrap: Can't mount proc")
        episode = FakeEpisode()
        self.made.append(episode)
        return episode


def test_each_episode_is_handed_out_once_and_the_pool_refills():
    options = FakeOptions()
    with EpisodePool(None, 2, options) as pool:  # type: ignore[arg-type]
        assert pool.wait_full(5)
        taken = [pool.take() for _ in range(5)]  # two ready ones, then made on the spot
        assert len({id(e) for e in taken}) == 5
        assert pool.wait_full(5) and pool.ready == 2
        leftovers = [e for e in options.made if e not in taken]
    assert all(e.closed.is_set() for e in leftovers)  # closing the pool closes what nobody took
    assert not any(e.closed.is_set() for e in taken)  # ... and leaves the takers' alone


def test_a_dead_ready_episode_is_never_handed_out():
    with EpisodePool(None, 1, FakeOptions()) as pool:  # type: ignore[arg-type]
        assert pool.wait_full(5)
        dead = pool._ready[0]
        dead.cluster.nodes["l"].is_running = False
        episode = pool.take()
        assert episode is not dead and dead.closed.is_set()


def test_discard_closes_in_the_background():
    with EpisodePool(None, 0, FakeOptions()) as pool:  # type: ignore[arg-type]
        episode = pool.take()
        start = time.perf_counter()
        pool.discard(episode)
        assert time.perf_counter() - start < 0.01
        assert episode.closed.wait(5)


def test_a_failure_is_raised_then_heals():
    options = FakeOptions(failures=[1])
    with EpisodePool(None, 1, options) as pool:  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while pool.failure is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(SandboxError, match="the episode pool failed: bwrap"):
            pool.take()
        while pool.ready < 1 and time.monotonic() < deadline + 5:
            time.sleep(0.01)
        assert pool.failure is None  # the retry a second later succeeded
        assert pool.take() is not None


def test_a_closed_pool_hands_out_nothing():
    pool = EpisodePool(None, 0, FakeOptions())  # type: ignore[arg-type]
    pool.close()
    with pytest.raises(SandboxError, match="closed"):
        pool.take()
