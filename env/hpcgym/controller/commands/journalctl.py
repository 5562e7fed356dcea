"""journalctl, as systemd 252 prints the node's simulated journal.

Flags: -u/--unit (repeatable), -n/--lines, -e/--pager-end (implies -n 1000), -x/--catalog, -b/--boot
(only the current boot exists), --no-pager, -S/--since, -U/--until, -p/--priority, -t/--identifier,
-o/--output (short, short-iso, cat), -r/--reverse, -q/--quiet, -k/--dmesg, -f/--follow (prints the
tail and returns: a stub cannot hold the terminal), --no-hostname, -a/--all (a message with control
characters in full, not as `[103B blob data]`). No match prints `-- No entries --`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import Prologue
from hpcgym.controller.numbers import is_digits, to_int
from hpcgym.controller.services import xid
from hpcgym.controller.services.journal import (
    Entry,
    Priority,
    catalog_lines,
    entry_tag,
    format_entry,
    shown_message,
)
from hpcgym.controller.services.units import normalize_unit_name

OPTIONS = (
    Option("unit", "u", "unit", Arg.REQUIRED),
    Option("lines", "n", "lines", Arg.OPTIONAL),
    Option("pager-end", "e", "pager-end"),
    Option("catalog", "x", "catalog"),
    Option("boot", "b", "boot", Arg.OPTIONAL),
    Option("no-pager", None, "no-pager"),
    Option("since", "S", "since", Arg.REQUIRED),
    Option("until", "U", "until", Arg.REQUIRED),
    Option("priority", "p", "priority", Arg.REQUIRED),
    Option("identifier", "t", "identifier", Arg.REQUIRED),
    Option("output", "o", "output", Arg.REQUIRED),
    Option("reverse", "r", "reverse"),
    Option("quiet", "q", "quiet"),
    Option("dmesg", "k", "dmesg"),
    Option("follow", "f", "follow"),
    Option("no-hostname", None, "no-hostname"),
    Option("all", "a", "all"),
    Option("full", "l", "full"),
    Option("system", None, "system"),
)
PROLOGUE = Prologue("journalctl", OPTIONS)
OUTPUTS = ("short", "short-iso", "short-precise", "cat", "with-unit")
FOLLOW_LINES = 10
PAGER_END_LINES = 1000
_RELATIVE = re.compile(
    r"^([+-]?)([0-9]+)\s*(s|sec|second|seconds|m|min|minute|minutes|h|hour|hours|d|day|days)(\s+ago)?$"
)
_UNIT_S = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip


def parse_timestamp(text: str, now_s: int) -> int | None:
    """Systemd's `parse_timestamp` for the forms people type; None where it would fail."""
    now = datetime.fromtimestamp(now_s, UTC)
    today = now.replace(hour=0, minute=0, second=0)
    words = text.strip()
    named = {
        "now": now,
        "today": today,
        "yesterday": today - timedelta(days=1),
        "tomorrow": today + timedelta(days=1),
    }
    if words in named:
        return int(named[words].timestamp())
    match = _RELATIVE.match(words)
    if match:
        sign, amount, unit, ago = match.groups()
        # systemd keeps timestamps in 64-bit microseconds and fails a parse past them (ERANGE).
        count = to_int(amount, max_digits=12)
        if count is None:
            return None
        seconds = count * _UNIT_S.get(unit.rstrip("s") if len(unit) > 3 else unit, _UNIT_S.get(unit[0], 1))
        return now_s - seconds if sign == "-" or ago else now_s + seconds
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return int(datetime.strptime(words, fmt).replace(tzinfo=UTC).timestamp())
        except ValueError:
            pass
    for fmt in ("%H:%M:%S", "%H:%M"):
        try:
            clock = datetime.strptime(words, fmt)
        except ValueError:
            continue
        return int(today.replace(hour=clock.hour, minute=clock.minute, second=clock.second).timestamp())
    return None


def _priority(text: str) -> Priority | None:
    names = {p.name.lower(): p for p in Priority} | {"warn": Priority.WARNING, "error": Priority.ERR}
    number = to_int(text, max_digits=1)
    if number is not None and number <= Priority.DEBUG:
        return Priority(number)
    return names.get(text.lower())


def _format(entry: Entry, hostname: str, output: str, no_hostname: bool, show_all: bool) -> str:
    if output == "cat":
        return entry.message  # output_cat writes the message as it is, blob or not
    line = format_entry(entry, hostname, show_all=show_all)
    if output == "short-iso":
        stamp = datetime.fromtimestamp(entry.time_s, UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
        line = f"{stamp} {hostname} {entry_tag(entry)}: {shown_message(entry, show_all)}"
    if no_hostname:
        line = line.replace(f" {hostname} ", " ", 1)
    return line


def _join_lines_value(args: list[str]) -> list[str]:
    # -n/--lines take an optional value, yet journalctl also reads it from the next word when that
    # word parses as a line count (its parse_argv peeks at argv[optind]); getopt alone would not.
    joined: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        following = args[index + 1] if index + 1 < len(args) else None
        if arg in ("-n", "--lines") and following is not None and is_digits(following.lstrip("+")):
            joined.append(f"-n{following}" if arg == "-n" else f"--lines={following}")
            index += 2
            continue
        joined.append(arg)
        index += 1
    return joined


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(_join_lines_value(args))
    if isinstance(parsed, ToolReply):
        return parsed
    found, operands = parsed.found, parsed.operands
    services = ctx.services
    now = services.clocks.node_now_s(ctx.node)
    flags = {key for key, _ in found}
    values = dict(found)
    units = [normalize_unit_name(value) for key, value in found if key == "unit" and value]
    idents = [value for key, value in found if key == "identifier" and value]
    if operands:
        return ToolReply("", f"Failed to add match '{operands[0]}': Invalid argument\n", 1)
    boot = values.get("boot")
    if "boot" in flags and boot not in (None, "0", "all"):
        return ToolReply(
            "", f"Data from the specified boot ({boot}) is not available: No such boot ID in journal\n", 1
        )
    output = values.get("output") or "short"
    if output not in OUTPUTS:
        return ToolReply("", f"Unknown output format '{output}'.\n", 1)
    bounds = []
    for key in ("since", "until"):
        text = values.get(key)
        stamp = parse_timestamp(text, now) if text is not None else None
        if text is not None and stamp is None:
            return ToolReply("", f"Failed to parse timestamp: {text}\n", 1)
        bounds.append(stamp)
    since, until = bounds
    max_priority = Priority.DEBUG
    if values.get("priority") is not None:
        level = _priority(values["priority"] or "")
        if level is None:
            return ToolReply("", f"Failed to parse log level: {values['priority']}\n", 1)
        max_priority = level
    lines: int | None = None
    if "lines" in flags:
        raw = values.get("lines")
        count = to_int(raw.lstrip("+")) if raw is not None else FOLLOW_LINES
        if count is None:
            return ToolReply("", f"Failed to parse lines '{raw}'\n", 1)
        lines = count
    elif "pager-end" in flags:
        lines = PAGER_END_LINES
    elif "follow" in flags:
        lines = FOLLOW_LINES
    journal = services.systemd.journal(ctx.node)
    entries = xid.kernel_entries(journal) if "dmesg" in flags else list(journal.entries)
    if units:
        entries = [e for e in entries if e.unit in units]
    if idents:
        entries = [e for e in entries if e.identifier in idents]
    entries = [e for e in entries if e.priority <= max_priority]
    if since is not None:
        entries = [e for e in entries if e.time_s >= since]
    if until is not None:
        entries = [e for e in entries if e.time_s <= until]
    if lines is not None:
        entries = entries[-lines:] if lines else []
    if "reverse" in flags:
        entries.reverse()
    if not entries:
        return ToolReply("" if "quiet" in flags else "-- No entries --\n")
    out = []
    for entry in entries:
        out.append(_format(entry, ctx.node, output, "no-hostname" in flags, "all" in flags) + "\n")
        if "catalog" in flags and output != "cat":
            out.extend(line + "\n" for line in catalog_lines(entry))
    return ToolReply("".join(out))
