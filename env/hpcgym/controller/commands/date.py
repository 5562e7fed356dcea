"""date (GNU coreutils 8.32, C locale, UTC) on the episode's virtual clock.

The host's clock must never reach the agent: it would make two runs of one (scenario, seed, commands)
differ, and it disagrees with every time Slurm and journald print here. So `date` is a simulated tool
that reads the controller's clock. Supported: `+FORMAT` (glibc's conversions with GNU flags and widths,
plus %N, %s and %:z), `-d/--date` (`@EPOCH`, now/today/yesterday/tomorrow, ISO dates and times,
relative offsets such as `2 hours ago`), `-u`, `-I[FMT]`, `-R`, `--rfc-3339`, `-r FILE`, and `-s`,
which fails as it does without CAP_SYS_TIME. The times print in UTC, the nodes' zone.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime, timedelta

from hpcgym.controller.commands.base import Context, Reply
from hpcgym.controller.commands.getopt import Arg, Option, UsageError, parse_args

VERSION = """date (GNU coreutils) 8.32
Copyright (C) 2020 Free Software Foundation, Inc.
License GPLv3+: GNU GPL version 3 or later <https://gnu.org/licenses/gpl.html>.
This is free software: you are free to change and redistribute it.
There is NO WARRANTY, to the extent permitted by law.

Written by David MacKenzie.
"""

USAGE = """Usage: date [OPTION]... [+FORMAT]
  or:  date [-u|--utc|--universal] [MMDDhhmm[[CC]YY][.ss]]
Display the current time in the given FORMAT, or set the system date.

Mandatory arguments to long options are mandatory for short options too.
  -d, --date=STRING          display time described by STRING, not 'now'
      --debug                annotate the parsed date,
                              and warn about questionable usage to stderr
  -f, --file=DATEFILE        like --date; once for each line of DATEFILE
  -I[FMT], --iso-8601[=FMT]  output date/time in ISO 8601 format.
                               FMT='date' for date only (the default),
                               'hours', 'minutes', 'seconds', or 'ns'
                               for date and time to the indicated precision.
                               Example: 2006-08-14T02:34:56-06:00
  -R, --rfc-email            output date and time in RFC 5322 format.
                               Example: Mon, 14 Aug 2006 02:34:56 -0600
      --rfc-3339=FMT         output date/time in RFC 3339 format.
                               FMT='date', 'seconds', or 'ns'
                               for date and time to the indicated precision.
                               Example: 2006-08-14 02:34:56-06:00
  -r, --reference=FILE       display the last modification time of FILE
  -s, --set=STRING           set time described by STRING
  -u, --utc, --universal     print or set Coordinated Universal Time (UTC)
      --help     display this help and exit
      --version  output version information and exit

FORMAT controls the output.  Interpreted sequences are the conversions of strftime(3), and:
  %N   nanoseconds (000000000..999999999)
  %s   seconds since 1970-01-01 00:00:00 UTC
  %:z  +hh:mm numeric time zone (e.g., -04:00)

GNU coreutils online help: <https://www.gnu.org/software/coreutils/>
Full documentation <https://www.gnu.org/software/coreutils/date>
or available locally via: info '(coreutils) date invocation'
"""

OPTIONS = (
    Option("date", "d", "date", Arg.REQUIRED),
    Option("debug", None, "debug"),
    Option("file", "f", "file", Arg.REQUIRED),
    Option("iso", "I", "iso-8601", Arg.OPTIONAL),
    Option("rfc-email", "R", "rfc-email"),
    Option("rfc-email", None, "rfc-822"),
    Option("rfc-email", None, "rfc-2822"),
    Option("rfc-3339", None, "rfc-3339", Arg.REQUIRED),
    Option("reference", "r", "reference", Arg.REQUIRED),
    Option("set", "s", "set", Arg.REQUIRED),
    Option("utc", "u", "utc"),
    Option("utc", None, "universal"),
    Option("utc", None, "uct"),
    Option("help", None, "help"),
    Option("version", None, "version"),
)
TRY_HELP = "Try 'date --help' for more information.\n"
DEFAULT_FORMAT = "%a %b %e %H:%M:%S %Z %Y"
ISO_FORMATS = {
    "date": "%Y-%m-%d",
    "hours": "%Y-%m-%dT%H%:z",
    "minutes": "%Y-%m-%dT%H:%M%:z",
    "seconds": "%Y-%m-%dT%H:%M:%S%:z",
    "ns": "%Y-%m-%dT%H:%M:%S,%N%:z",
}
RFC3339_FORMATS = {
    "date": "%Y-%m-%d",
    "seconds": "%Y-%m-%d %H:%M:%S%:z",
    "ns": "%Y-%m-%d %H:%M:%S.%N%:z",
}
RFC_EMAIL_FORMAT = "%a, %d %b %Y %H:%M:%S %z"


class DateError(Exception):
    """What date prints on stderr before exiting 1."""


def run(ctx: Context, args: list[str]) -> Reply:
    try:
        found, operands = parse_args("date", args, OPTIONS)
    except UsageError as e:
        return Reply("", f"{e.text}\n{TRY_HELP}", 1)
    keys = {key for key, _ in found}
    if "help" in keys:
        return Reply(USAGE)
    if "version" in keys:
        return Reply(VERSION)
    try:
        return _run(ctx, found, operands)
    except DateError as e:
        return Reply("", f"date: {e}\n", 1)


def _run(ctx: Context, found: list[tuple[str, str | None]], operands: list[str]) -> Reply:
    options = dict(found)
    fmt = _output_format(found, operands)
    if "file" in options:
        return _run_file(ctx, options["file"] or "", fmt)
    sources = [key for key in ("date", "set", "reference") if key in options]
    if len(sources) > 1:
        exclusive = "the options to specify dates for printing are mutually exclusive"
        raise DateError(f"{exclusive}\n{TRY_HELP}".rstrip())
    setting = [o for o in operands if not o.startswith("+")]
    if len(setting) > 1 or (setting and ("date" in options or "set" in options)):
        extra = setting[1] if len(setting) > 1 else setting[0]
        raise DateError(f"extra operand '{extra}'\n{TRY_HELP}".rstrip())
    if "reference" in options:
        path = options["reference"] or ""
        if not _node_has(ctx, path):
            raise DateError(f"{path}: No such file or directory")
        # Nothing in a node changes before the episode starts: an existing file is that old.
        return Reply(format_time(min(ctx.now_s, ctx.cluster.clock.start_s), fmt) + "\n")
    if "date" in options:
        return Reply(format_time(parse_date(options["date"] or "", ctx.local_now_s), fmt) + "\n")
    if "set" in options or setting:
        value = options.get("set") or setting[0]
        now = ctx.local_now_s
        when = parse_date(value, now) if "set" in options else _parse_posix_set(value, now)
        # The nodes run without CAP_SYS_TIME: stime fails and date shows the time it meant to set.
        return Reply(format_time(when, fmt) + "\n", "date: cannot set date: Operation not permitted\n", 1)
    return Reply(format_time(ctx.local_now_s, fmt) + "\n")


def _run_file(ctx: Context, path: str, fmt: str) -> Reply:
    if ctx.stdin is not None and path == "-":
        text = ctx.stdin
    else:
        data = ctx.read_file(ctx.node, path) if ctx.read_file else None
        if data is None:
            raise DateError(f"{path}: No such file or directory")
        text = data.decode(errors="replace")
    out, err = [], []
    for line in text.splitlines():
        try:
            out.append(format_time(parse_date(line, ctx.local_now_s), fmt) + "\n")
        except DateError as e:
            err.append(f"date: {e}\n")
    return Reply("".join(out), "".join(err), 1 if err else 0)


def _node_has(ctx: Context, path: str) -> bool:
    return ctx.read_file is None or ctx.read_file(ctx.node, path) is not None


def _output_format(found: list[tuple[str, str | None]], operands: list[str]) -> str:
    formats: list[str] = []
    for key, value in found:
        if key == "iso":
            formats.append(ISO_FORMATS[_choose("--iso-8601", value or "date", ISO_FORMATS)])
        elif key == "rfc-3339":
            formats.append(RFC3339_FORMATS[_choose("--rfc-3339", value or "", RFC3339_FORMATS)])
        elif key == "rfc-email":
            formats.append(RFC_EMAIL_FORMAT)
    plus = [o for o in operands if o.startswith("+")]
    if len(plus) > 1:
        raise DateError(f"extra operand '{plus[1]}'\n{TRY_HELP}".rstrip())
    formats += [p[1:] for p in plus]
    if len(formats) > 1:
        raise DateError("multiple output formats specified")
    return formats[0] if formats else DEFAULT_FORMAT


def _choose(option: str, value: str, choices: dict[str, str]) -> str:
    """argmatch: an exact name or a unique prefix, else coreutils' list of valid arguments."""
    matches = [name for name in choices if name.startswith(value)] if value else []
    if value in choices:
        return value
    if len(matches) == 1:
        return matches[0]
    kind = "ambiguous" if len(matches) > 1 else "invalid"
    valid = "".join(f"  - '{name}'\n" for name in choices)
    text = f"{kind} argument '{value}' for '{option}'\nValid arguments are:\n{valid}{TRY_HELP}"
    raise DateError(text.rstrip())


_CONVERSION = re.compile(r"%([-_0^#]*)(\d*)(:{0,3}[A-Za-z%]|$)")


def format_time(epoch_s: int, fmt: str) -> str:
    """Format like strftime in UTC, with the GNU additions date has (%N, %s, %:z, %::z, %:::z)."""
    tm = time.gmtime(epoch_s)

    def convert(match: re.Match[str]) -> str:
        flags, width, conv = match.groups()
        if conv == "":
            return "%"
        if conv == "N":
            digits = int(width) if width else 9
            return "0" * digits
        special = {"s": str(epoch_s), "z": "+0000", ":z": "+00:00", "::z": "+00:00:00", ":::z": "+00"}
        if conv in special:
            return _pad(special[conv], flags, width)
        if conv.startswith(":"):
            return match.group(0)
        if conv == "Z":
            return _pad("UTC", flags, width)
        return time.strftime(f"%{flags}{width}{conv}", tm)

    return _CONVERSION.sub(convert, fmt)


def _pad(text: str, flags: str, width: str) -> str:
    if not width:
        return text
    numeric = text.lstrip("+-").replace(":", "").isdigit()
    fill = "0" if numeric and "_" not in flags else " "
    return text.rjust(int(width), fill)


_UNITS = {
    "sec": 1, "second": 1, "min": 60, "minute": 60, "hour": 3600, "day": 86400, "week": 604800,
    "fortnight": 1209600, "month": 0, "year": 0,
}  # fmt: skip
_RELATIVE = re.compile(
    r"([+-]?\s*\d+)?\s*(fortnight|second|minute|month|week|hour|year|sec|min|day)s?\b(\s+ago\b)?"
)
_ABSOLUTE = re.compile(
    r"^(?P<date>\d{4}-\d{1,2}-\d{1,2})?(?:[T\s]*(?P<time>\d{1,2}:\d{2}(?::\d{2})?))?\s*(?:Z|UTC)?\s*",
    re.IGNORECASE,
)


def parse_date(text: str, now_s: int) -> int:
    """GNU date's free-form STRING, for the forms operators type; anything else is an invalid date."""
    raw = text
    text = " ".join(text.strip().lower().split())
    if text.startswith("@"):
        try:
            return int(float(text[1:]))
        except ValueError:
            raise DateError(f"invalid date '{raw}'") from None
    base = datetime.fromtimestamp(now_s, UTC)
    for word, days in (("yesterday", -1), ("tomorrow", 1), ("today", 0), ("now", 0)):
        if word in text.split():
            base += timedelta(days=days)
            text = " ".join(w for w in text.split() if w != word)
    match = _ABSOLUTE.match(text)
    if match and (match.group("date") or match.group("time")):
        base = _absolute(raw, base, match.group("date"), match.group("time"))
        text = text[match.end() :]
    months, seconds = 0, 0
    pos = 0
    for rel in _RELATIVE.finditer(text):
        if text[pos : rel.start()].strip():
            raise DateError(f"invalid date '{raw}'")
        amount = int((rel.group(1) or "1").replace(" ", ""))
        if rel.group(3):
            amount = -amount
        unit = rel.group(2)
        if unit in ("month", "year"):
            months += amount * (12 if unit == "year" else 1)
        else:
            seconds += amount * _UNITS[unit]
        pos = rel.end()
    if text[pos:].strip():
        raise DateError(f"invalid date '{raw}'")
    if months:
        base = _add_months(base, months)
    return int((base + timedelta(seconds=seconds)).timestamp())


def _absolute(raw: str, base: datetime, day: str | None, clock: str | None) -> datetime:
    try:
        if day:
            year, month, mday = (int(x) for x in day.split("-"))
            base = base.replace(year=year, month=month, day=mday, hour=0, minute=0, second=0)
        if clock:
            parts = [int(x) for x in clock.split(":")] + [0]
            base = base.replace(hour=parts[0], minute=parts[1], second=parts[2])
    except ValueError:
        raise DateError(f"invalid date '{raw}'") from None
    return base


def _add_months(when: datetime, months: int) -> datetime:
    # GNU date normalises an overflowing day (Jan 31 + 1 month = Mar 3), as mktime does.
    index = when.year * 12 + when.month - 1 + months
    year, month = divmod(index, 12)
    first = when.replace(year=year, month=month + 1, day=1)
    return first + timedelta(days=when.day - 1)


def _parse_posix_set(value: str, now_s: int) -> int:
    """The MMDDhhmm[[CC]YY][.ss] operand."""
    match = re.fullmatch(r"(\d{2})(\d{2})(\d{2})(\d{2})(\d{2}|\d{4})?(?:\.(\d{2}))?", value)
    if not match:
        raise DateError(f"invalid date '{value}'")
    month, mday, hour, minute, year_text, sec = match.groups()
    now = datetime.fromtimestamp(now_s, UTC)
    year = now.year if year_text is None else int(year_text)
    if year_text is not None and len(year_text) == 2:
        year += 1900 if year >= 69 else 2000
    try:
        when = datetime(year, int(month), int(mday), int(hour), int(minute), int(sec or 0), tzinfo=UTC)
    except ValueError:
        raise DateError(f"invalid date '{value}'") from None
    return calendar.timegm(when.timetuple())
