"""What a running daemon's start settled that the rest of the cluster asks about, typed per daemon.

munged's key digest, httpd's config, the options MariaDB took: each daemon module subclasses
`DaemonFacts` with the attributes it sets, its launch returns them, and its unit keeps them while
the daemon runs. A reader names the kind it wants (`services.systemd.facts(node, MUNGE, MungedFacts)`), so
every attribute read is one the type checker knows, not a string key a typo silently misses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar


@dataclass(frozen=True)
class DaemonFacts:
    """The base of each daemon's facts; a change is a new value (`dataclasses.replace`)."""


Facts = TypeVar("Facts", bound=DaemonFacts)
