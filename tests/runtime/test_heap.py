"""The heap hand-back: freed episode memory in the middle of malloc's arenas goes back to the host."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# In a fresh interpreter, so nothing else this test process holds sits in the arena.
PROGRAM = textwrap.dedent(
    """
    import sys
    from hpcgym.runtime import heap

    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096

    chunks = [bytearray(32 << 10) for _ in range(3000)]   # ~94 MiB in malloc's main arena
    kept = chunks[::100]                                   # pins the arena's top: no automatic trim
    del chunks
    before = rss()
    if sys.argv[1] == "give-back":
        heap.give_back()
    print(before - rss())
    """
)


def _freed_bytes(mode: str) -> int:
    run = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return int(run.stdout)


def test_give_back_returns_free_pages_that_malloc_would_keep() -> None:
    kept = _freed_bytes("keep")
    returned = _freed_bytes("give-back")
    assert kept < 8 << 20, "without the hand-back malloc keeps the freed chunks"
    assert returned > 64 << 20


@pytest.mark.parametrize(("env", "expected"), [({}, "2"), ({"MALLOC_ARENA_MAX": "5"}, "operator's")])
def test_limit_arenas_leaves_an_operators_choice(env: dict[str, str], expected: str) -> None:
    program = textwrap.dedent(
        """
        import ctypes, os
        from hpcgym.runtime import heap
        calls = []
        class Libc:
            def mallopt(self, param, value):
                calls.append((param, value))
                return 1
        heap._libc = lambda: Libc()
        heap.limit_arenas()
        print(calls[0][1] if calls else "operator's")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin", **env},
    )
    assert run.stdout.strip() == expected
