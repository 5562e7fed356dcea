"""The services' own state, one peer per purpose: node clocks, munge credentials, hardware.

`ServiceManager` (manager.py) holds one of each, built once per episode; callers reach the peer they
need (`services.clocks.node_now_s(node)`, `services.munge.seen`, `services.hardware.gpus`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hpcgym.controller.clock import VirtualClock
from hpcgym.controller.hardware import NodeHardware
from hpcgym.controller.services.gpu import Gpu


@dataclass
class NodeClocks:
    """The episode's clock, and how far each node's system clock is off it.

    An offset is a drifted hardware clock with chronyd stopped (seconds; absent means 0); starting
    chronyd (or `chronyc makestep`) steps it back.
    """

    episode: VirtualClock
    offsets: dict[str, int] = field(default_factory=dict)

    @property
    def now_s(self) -> int:
        """The episode's time (what every journal line is stamped from, before a node's skew)."""
        return self.episode.now_s

    def node_now_s(self, node: str) -> int:
        """The time `node`'s own clock shows: the episode's clock plus that node's skew."""
        return self.episode.now_s + self.offsets.get(node, 0)

    def offset(self, node: str) -> int:
        return self.offsets.get(node, 0)

    def set_offset(self, node: str, seconds: int) -> None:
        """Skew (or, with 0, correct) a node's clock; registration is re-judged at the next sync."""
        if seconds:
            self.offsets[node] = seconds
        else:
            self.offsets.pop(node, None)


@dataclass
class MungeCredentials:
    """munge credentials: a serial that makes each one unique, and those each node has decoded.

    munged refuses a replay: a credential in `seen[node]` was decoded there already.
    """

    serial: int = 0
    seen: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class Hardware:
    """What each compute node physically has (hardware.py) and the GPUs of each GPU node.

    Faults change it, slurmd reports it, nvidia-smi shows the GPUs (scenarios set their counters).
    """

    nodes: dict[str, NodeHardware] = field(default_factory=dict)
    gpus: dict[str, list[Gpu]] = field(default_factory=dict)
