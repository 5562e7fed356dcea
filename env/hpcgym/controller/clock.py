"""The episode's virtual clock.

Every time the controller prints or acts on (reason stamps, job TIME, SlurmdTimeout, job run times)
comes from here, never from the host: the clock starts at a fixed instant and moves only when the
episode says so, a fixed `step_s` per agent command. Same scenario, seed and commands give the same
bytes on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

# 2026-11-23T07:46:05Z, the moment the reference cluster's slurmctld started; any fixed instant works.
DEFAULT_START_S = 1795419965


@dataclass
class VirtualClock:
    """A clock that advances only by `tick()` (one agent step) or `advance()`.

    Example:
        >>> clock = VirtualClock(start_s=1000, step_s=5)
        >>> clock.tick()
        1005
    """

    start_s: int = DEFAULT_START_S
    step_s: int = 1
    now_s: int = -1

    def __post_init__(self) -> None:
        if self.step_s < 0:
            raise ValueError("step_s must not be negative")
        if self.now_s < 0:
            self.now_s = self.start_s

    def tick(self) -> int:
        """Advance by one step and return the new time."""
        self.now_s += self.step_s
        return self.now_s

    def advance(self, seconds: int) -> int:
        """Advance by an arbitrary non-negative number of seconds and return the new time."""
        if seconds < 0:
            raise ValueError("the clock never goes back")
        self.now_s += seconds
        return self.now_s
