"""GNU getopt_long, as the Slurm tools use it, with glibc's exact error texts.

Every Slurm client parses its flags with getopt_long, so they share its quirks: unique prefixes of
long options are accepted, `-p gpu` and `-pgpu` are the same, options after operands are still
options unless the tool asks getopt to stop at the first operand (sbatch and srun do, so the script's
own flags reach the script), and a bad flag prints one of four glibc messages.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Arg(enum.Enum):
    NONE = "none"
    REQUIRED = "required"
    OPTIONAL = "optional"


@dataclass(frozen=True)
class Option:
    """One flag: its short letter and/or long name, whether it takes a value, and its key."""

    key: str
    short: str | None = None
    long: str | None = None
    arg: Arg = Arg.NONE


class UsageError(Exception):
    """A flag getopt rejects; `text` is what the tool prints on stderr before its hint."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def parse_args(
    prog: str, argv: list[str], options: tuple[Option, ...], *, stop_at_operand: bool = False
) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Split argv (without the program name) into (key, value) pairs and operands, in order.

    Raises:
        UsageError: with glibc's message, e.g. "sinfo: invalid option -- 'Z'".
    """
    shorts = {opt.short: opt for opt in options if opt.short}
    longs = {opt.long: opt for opt in options if opt.long}
    found: list[tuple[str, str | None]] = []
    operands: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            operands.extend(argv[i:])
            break
        if arg.startswith("--"):
            name, equals, value = arg[2:].partition("=")
            has_value = bool(equals)
            opt = _match_long(prog, name, longs, arg)
            if opt.arg is Arg.NONE and has_value:
                raise UsageError(f"{prog}: option '--{opt.long}' doesn't allow an argument")
            if opt.arg is Arg.REQUIRED and not has_value:
                if i >= len(argv):
                    raise UsageError(f"{prog}: option '--{opt.long}' requires an argument")
                value, has_value = argv[i], True
                i += 1
            found.append((opt.key, value if has_value else None))
            continue
        if arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                letter = arg[j]
                j += 1
                short = shorts.get(letter)
                if short is None:
                    raise UsageError(f"{prog}: invalid option -- '{letter}'")
                if short.arg is Arg.NONE:
                    found.append((short.key, None))
                    continue
                rest = arg[j:]
                if rest:
                    found.append((short.key, rest))
                elif short.arg is Arg.OPTIONAL:
                    found.append((short.key, None))
                elif i < len(argv):
                    found.append((short.key, argv[i]))
                    i += 1
                else:
                    raise UsageError(f"{prog}: option requires an argument -- '{letter}'")
                break
            continue
        operands.append(arg)
        if stop_at_operand:
            operands.extend(argv[i:])
            break
    return found, operands


def _match_long(prog: str, name: str, longs: dict[str, Option], arg: str) -> Option:
    if name in longs:
        return longs[name]
    matches = [long for long in longs if long.startswith(name)] if name else []
    if len(matches) == 1:
        return longs[matches[0]]
    if len(matches) > 1:
        listed = " ".join(f"'--{match}'" for match in matches)
        raise UsageError(f"{prog}: option '--{name}' is ambiguous; possibilities: {listed}")
    raise UsageError(f"{prog}: unrecognized option '{arg}'")
