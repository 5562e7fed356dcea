"""The gymnasium spaces of EnterpriseHPC-v0: a shell command line in, terminal text out.

Both are `gymnasium.spaces.Text` with an explicit charset (gymnasium's default, alphanumerics, rejects
every shell prompt) and a `max_length` equal to the output cap. They differ from a plain `Text` where
a user meets them: `repr` names the charset instead of printing all of it, and `sample()` without a
mask gives something a person can read (a command an operator types; a short line of text) instead
of thousands of random characters. With a mask or probability, sampling is gymnasium's own.
"""

from __future__ import annotations

from typing import Any

from gymnasium import spaces

# A command line holds printable ASCII, tabs and newlines (a here-document or several commands).
COMMAND_CHARSET = "".join(chr(c) for c in range(0x20, 0x7F)) + "\t\n"

# Terminal output: every character of the Basic Multilingual Plane. It holds whitespace, punctuation,
# box drawing and the U+FFFD that replaces undecodable bytes; characters beyond it are shown as U+FFFD.
TERMINAL_CHARSET = "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF)

# What `ShellCommand.sample()` draws from: read-only commands an operator types first on this cluster.
SAMPLE_COMMANDS = (
    "sinfo",
    "sinfo -R",
    "squeue -l",
    "scontrol show node compute-01",
    "systemctl status slurmd",
    "systemctl status munge",
    "journalctl -u slurmctld -n 20",
    "ip route",
    "cat /etc/hosts",
    "munge -n | unmunge",
    "ssh compute-01 hostname",
    "df -h /home",
)
SAMPLE_LINE_CHARS = COMMAND_CHARSET[:-2]  # printable ASCII
SAMPLE_MAX_LINE = 72


class ShellCommand(spaces.Text):
    """One command line for the agent's shell: printable ASCII, tab and newline, up to `max_length`.

    Example:
        >>> space = ShellCommand(8448, seed=0)
        >>> space.contains("sinfo -o '%N %T' | grep -c idle")
        True
        >>> space
        ShellCommand(max_length=8448, charset=printable ASCII, tab, newline)
    """

    def __init__(self, max_length: int, *, seed: int | None = None) -> None:
        super().__init__(max_length, min_length=0, charset=COMMAND_CHARSET, seed=seed)

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """A read-only operator command (seeded by the space's RNG); with a mask, gymnasium's sampling."""
        if mask is not None or probability is not None:
            return super().sample(mask=mask, probability=probability)
        return SAMPLE_COMMANDS[int(self.np_random.integers(len(SAMPLE_COMMANDS)))]

    def __repr__(self) -> str:
        return f"ShellCommand(max_length={self.max_length}, charset=printable ASCII, tab, newline)"


class TerminalText(spaces.Text):
    """What the terminal printed: any character of the Basic Multilingual Plane, up to `max_length`."""

    def __init__(self, max_length: int, *, seed: int | None = None) -> None:
        super().__init__(max_length, min_length=0, charset=TERMINAL_CHARSET, seed=seed)

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        """A short line of printable ASCII and a newline; with a mask, gymnasium's sampling."""
        if mask is not None or probability is not None:
            return super().sample(mask=mask, probability=probability)
        length = int(self.np_random.integers(0, min(SAMPLE_MAX_LINE, self.max_length - 1) + 1))
        chars = self.np_random.choice(list(SAMPLE_LINE_CHARS), size=length)
        return "".join(chars) + "\n"

    def __repr__(self) -> str:
        return f"TerminalText(max_length={self.max_length}, charset=Unicode BMP)"
