"""Slurm hostlist expressions: `compute-0[1-4]` <-> `compute-01,...,compute-04`.

Slurm prints node sets in this compressed form everywhere (sinfo NODELIST, scontrol Nodes=, squeue
NODELIST) and accepts it in every node argument, so the controller needs both directions with Slurm's
exact rules: zero padding is kept, ranges only join numbers of one width, and the output is sorted the
way `hostlist_ranged_string` sorts (by prefix, then number).
"""

from __future__ import annotations

import itertools
import re

from hpcgym.controller.numbers import is_digits
from hpcgym.errors import ControllerError

# A host name split into the prefix and its trailing number, as Slurm's hostlist does.
# A name's numeric suffix is at most this many digits (an int, not a 4,000-digit string), and one
# expression names at most this many hosts: Slurm's own hostlist refuses more (MAX_RANGE, 64K).
MAX_SUFFIX_DIGITS = 18
MAX_HOSTS = 64 * 1024
# What the names of one expression may add up to: MAX_HOSTS names of 256 characters.
MAX_HOSTLIST_CHARS = MAX_HOSTS * 256


def _split_top_level(expression: str) -> list[str]:
    # Commas inside brackets belong to a range list, not to the host list.
    parts, depth, start = [], 0, 0
    for i, char in enumerate(expression):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(expression[start:i])
            start = i + 1
    parts.append(expression[start:])
    return [part for part in parts if part]


def _expand_ranges(ranges: str, expression: str) -> list[str]:
    values = []
    for item in ranges.split(","):
        low, sep, high = item.partition("-")
        if not is_digits(low) or (sep and not is_digits(high)):
            raise ControllerError(f"invalid hostlist expression: {expression[:64]!r}")
        if len(low) > MAX_SUFFIX_DIGITS or len(high) > MAX_SUFFIX_DIGITS:
            raise ControllerError(f"invalid hostlist expression: {expression[:64]!r}")
        if not sep:
            values.append(low)
            continue
        if int(high) < int(low) or int(high) - int(low) >= MAX_HOSTS:
            raise ControllerError(f"invalid hostlist expression: {expression[:64]!r}")
        width = len(low) if low.startswith("0") or len(low) == len(high) else 0
        for number in range(int(low), int(high) + 1):
            values.append(str(number).zfill(width))
        if len(values) > MAX_HOSTS:
            raise ControllerError(f"too many hosts in hostlist expression: {expression[:64]!r}")
    return values


def expand_hostlist(expression: str) -> list[str]:
    """Expand a Slurm hostlist expression into host names, keeping their order.

    Example:
        >>> expand_hostlist("compute-0[1-3],login")
        ['compute-01', 'compute-02', 'compute-03', 'login']

    Raises:
        ControllerError: the expression has unbalanced or nested brackets, a bad range, or names
            more than MAX_HOSTS hosts (MAX_HOSTLIST_CHARS characters).
    """
    hosts: list[str] = []
    chars = 0
    for part in _split_top_level(expression.strip()):
        # Literal text and bracket groups alternate: rack[1-2]-node[1-4] is
        # ["rack", "1-2", "-node", "1-4", ""]; a bracket left inside a piece is unbalanced or nested.
        pieces = re.split(r"\[([^\[\]]*)\]", part)
        if any("[" in piece or "]" in piece for piece in pieces[::2]):
            raise ControllerError(f"invalid hostlist expression: {expression[:64]!r}")
        # Count while building the groups: a[1-2]a[1-2]... doubles with each one.
        choices, count = [], 1
        for i, piece in enumerate(pieces):
            choices.append([piece] if i % 2 == 0 else _expand_ranges(piece, expression))
            count *= len(choices[-1])
            if len(hosts) + count > MAX_HOSTS:
                raise ControllerError(f"too many hosts in hostlist expression: {expression[:64]!r}")
        chars += count * sum(max(map(len, values)) for values in choices)
        if chars > MAX_HOSTLIST_CHARS:
            raise ControllerError(f"hostlist expression too long: {expression[:64]!r}")
        # The first group varies slowest: a[1-2]b[1-2] is a1b1,a1b2,a2b1,a2b2.
        hosts.extend("".join(name) for name in itertools.product(*choices))
    return hosts


def expand_names(expression: str) -> list[str]:
    """Expand a node argument the way the clients treat one: a malformed range is one literal name.

    The name then fails the usual lookup ("Node compute-[ not found", "Invalid node name ..."), so
    the agent sees Slurm's ordinary error instead of the controller failing.
    """
    try:
        return expand_hostlist(expression)
    except ControllerError:
        return [expression]


def _split_suffix(host: str) -> tuple[str, str] | None:
    """(prefix, digits) of a name ending in a number; linear, where a regex would backtrack."""
    prefix = host.rstrip("0123456789")
    digits = host[len(prefix) :]
    return (prefix, digits) if 0 < len(digits) <= MAX_SUFFIX_DIGITS else None


def _sort_key(host: str) -> tuple[str, int, str]:
    split = _split_suffix(host)
    if split is None:
        return (host, -1, host)
    return (split[0], int(split[1]), host)


def compress_hostlist(hosts: list[str]) -> str:
    """Compress host names into Slurm's ranged form, sorted and de-duplicated.

    Example:
        >>> compress_hostlist(["compute-02", "compute-01", "compute-03", "login"])
        'compute-[01-03],login'
    """
    # Each group is (prefix, width, numbers); a number joins a group when it prints the same at that
    # width, so 09 and 10 share a range but 1 and 01 do not, as in Slurm's hostlist.
    groups: list[tuple[str, int, list[int]]] = []
    out: list[str] = []
    for host in sorted(set(hosts), key=_sort_key):
        split = _split_suffix(host)
        if split is None:
            out.append(host)
            continue
        prefix, digits = split
        number = int(digits)
        if groups and groups[-1][0] == prefix and str(number).zfill(groups[-1][1]) == digits:
            groups[-1][2].append(number)
        else:
            groups.append((prefix, len(digits), [number]))
    out.extend(_format_group(*group) for group in groups)
    return ",".join(sorted(out, key=lambda text: text.split("[")[0]))


def _format_group(prefix: str, width: int, numbers: list[int]) -> str:
    if len(numbers) == 1:
        return f"{prefix}{str(numbers[0]).zfill(width)}"
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][1] + 1:
            runs[-1][1] = number
        else:
            runs.append([number, number])
    text = ",".join(
        str(low).zfill(width) if low == high else f"{str(low).zfill(width)}-{str(high).zfill(width)}"
        for low, high in runs
    )
    return f"{prefix}[{text}]"
