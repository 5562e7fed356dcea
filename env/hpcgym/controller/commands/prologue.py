"""What a getopt tool does before its own work: parse argv, then answer a bad flag, --help or --version.

Each tool writes the same opening: getopt_long's message and the tool's hint on stderr for a flag it
rejects, and a fixed text for the flags that print and exit (--help, --usage, -V). A tool states its
own texts and exit codes once, as a `Prologue`, and calls `parse`; only the data differs between tools.
Tools that do not parse with getopt_long (munge's own parser, the daemons' flag scan, mount, sacctmgr's
words) keep their own openings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hpcgym.controller.commands.base import SLURM_VERSION, ToolReply
from hpcgym.controller.commands.getopt import Option, UsageError, parse_args

SLURM_VERSION_REPLY = ToolReply(f"slurm-wlm {SLURM_VERSION}\n")


def slurm_hint(prog: str) -> str:
    """The line a Slurm client prints after getopt's message."""
    return f'Try "{prog} --help" for more information\n'


@dataclass(frozen=True)
class Parsed:
    """argv split by getopt: the (key, value) pairs in order, and the operands."""

    found: list[tuple[str, str | None]]
    operands: list[str]

    @property
    def keys(self) -> set[str]:
        return {key for key, _ in self.found}

    @property
    def values(self) -> dict[str, str]:
        """Each option's last value; flags without one are left out."""
        return {key: value for key, value in self.found if value is not None}


@dataclass(frozen=True)
class Prologue:
    """One tool's parse: its options, and what it prints for a rejected flag and for the fixed flags.

    `answers` is checked in order and the first key given wins, wherever it stood in argv (sinfo
    answers --help before --usage). A rejected flag prints getopt's text, a newline and `hint` on
    stderr and exits `error_exit`; `reword` turns getopt's text into the tool's own (curl's).
    """

    prog: str
    options: tuple[Option, ...]
    answers: tuple[tuple[str, ToolReply], ...] = ()
    hint: str = ""
    error_exit: int = 1
    stop_at_operand: bool = False
    reword: Callable[[str], str] | None = None

    def parse(self, args: list[str]) -> Parsed | ToolReply:
        """The parsed argv, or the reply that ends the tool here."""
        try:
            found, operands = parse_args(self.prog, args, self.options, stop_at_operand=self.stop_at_operand)
        except UsageError as error:
            return self.rejected(error)
        given = {key for key, _ in found}
        for key, reply in self.answers:
            if key in given:
                return reply
        return Parsed(found, operands)

    def rejected(self, error: UsageError) -> ToolReply:
        """The reply to a flag getopt rejects (also for flags read elsewhere, sbatch's #SBATCH lines)."""
        text = self.reword(error.text) if self.reword else error.text
        return ToolReply("", f"{text}\n{self.hint}", self.error_exit)
