"""The process heap: what glibc's malloc keeps of closed episodes, handed back to the host.

An episode's threads allocate in whichever malloc arena they land on, and glibc keeps freed memory
in its arenas rather than returning it. Measured over a soak (`invoke soak`, 8 sessions, 400
episodes after warm-up): the bytes in use stayed at 51.6 MiB while the arenas' free bytes rose from
23.5 to 36.3 MiB across 16 heaps, so the server's RSS climbed ~10 MiB per 1,000 episodes with
nothing leaked. Fewer arenas (so freed chunks are found again) and a trim after each closed
cluster (so wholly free pages go back) keep it flat. Hosts without glibc skip both.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os

log = logging.getLogger(__name__)

# mallopt(3) parameter: the most arenas malloc may create (malloc.h).
M_ARENA_MAX = -8
# Arenas for a runtime's process: its threads mostly wait (on ptys, sockets, the GIL), so two
# arenas cost no measurable lock contention.
ARENA_MAX = 2


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas() -> None:
    """Cap malloc's arenas for this process, unless the operator chose with MALLOC_ARENA_MAX."""
    libc = _libc()
    if libc is None or "MALLOC_ARENA_MAX" in os.environ:
        return
    if libc.mallopt(M_ARENA_MAX, ARENA_MAX) != 1:
        log.debug("mallopt(M_ARENA_MAX) refused; malloc keeps its default arenas")


def give_back() -> None:
    """Return malloc's wholly free pages (in every arena) to the host."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
