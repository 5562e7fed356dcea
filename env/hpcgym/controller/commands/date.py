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
from dataclasses import dataclass
from datetime import UTC, datetime

from hpcgym.controller.commands.base import MAX_FIELD_WIDTH, MAX_LINE_CHARS, Context, ToolReply
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import Prologue
from hpcgym.controller.commands.usage import read_help
from hpcgym.controller.numbers import to_int

VERSION = """date (GNU coreutils) 8.32
Copyright (C) 2020 Free Software Foundation, Inc.
License GPLv3+: GNU GPL version 3 or later <https://gnu.org/licenses/gpl.html>.
This is free software: you are free to change and redistribute it.
There is NO WARRANTY, to the extent permitted by law.

Written by David MacKenzie.
"""

USAGE = read_help("date-help.txt")

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
MAX_REPLY_CHARS = 2 * MAX_LINE_CHARS
TRY_HELP = "Try 'date --help' for more information.\n"
PROLOGUE = Prologue(
    "date", OPTIONS, answers=(("help", ToolReply(USAGE)), ("version", ToolReply(VERSION))), hint=TRY_HELP
)
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


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    try:
        return _run(ctx, parsed.found, parsed.operands)
    except DateError as e:
        return ToolReply("", f"date: {e}\n", 1)


def _run(ctx: Context, found: list[tuple[str, str | None]], operands: list[str]) -> ToolReply:
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
        return ToolReply(format_time(min(ctx.now_s, ctx.slurm.clock.start_s), fmt) + "\n")
    if "date" in options:
        when, ns = parse_date(options["date"] or "", ctx.local_now_s)
        return ToolReply(format_time(when, fmt, ns) + "\n")
    if "set" in options or setting:
        value = options.get("set") or setting[0]
        now = ctx.local_now_s
        when, ns = parse_date(value, now) if "set" in options else (_parse_posix_set(value, now), 0)
        # The nodes run without CAP_SYS_TIME: stime fails and date shows the time it meant to set.
        return ToolReply(
            format_time(when, fmt, ns) + "\n", "date: cannot set date: Operation not permitted\n", 1
        )
    return ToolReply(format_time(ctx.local_now_s, fmt) + "\n")


def _run_file(ctx: Context, path: str, fmt: str) -> ToolReply:
    if ctx.stdin is not None and path == "-":
        text = ctx.stdin
    else:
        data = ctx.read_file(ctx.node, path) if ctx.read_file else None
        if data is None:
            raise DateError(f"{path}: No such file or directory")
        text = data.decode(errors="replace")
    out, err = [], []
    size = 0
    for line in text.splitlines():
        # Real date reads every line whole; the agent's reply stops after MAX_REPLY_CHARS.
        if size > MAX_REPLY_CHARS:
            break
        try:
            when, ns = parse_date(line[:MAX_LINE_CHARS], ctx.local_now_s)
            out.append(format_time(when, fmt, ns) + "\n")
            size += len(out[-1])
        except DateError as e:
            err.append(f"date: {e}\n")
            size += len(err[-1])
    return ToolReply("".join(out), "".join(err), 1 if err else 0)


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


_DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_SUBFORMATS = {
    "c": "%a %b %e %H:%M:%S %Y", "D": "%m/%d/%y", "r": "%I:%M:%S %p", "R": "%H:%M",
    "T": "%H:%M:%S", "x": "%m/%d/%y", "X": "%H:%M:%S",
}  # fmt: skip
_CONVERSIONS = frozenset("aAbBcCdDeFgGhHIjklmMnNpPqrRsStTuUVwWxXyYzZ%")
# The conversions GNU date 9.1 takes an E or an O modifier on (tried one by one); others are copied.
_E_TAKERS = frozenset("cCnpPqrRstTuxXyYzZ")
_O_TAKERS = frozenset("bBCdegGhHIjklmMnNpPrRsStTuUVwWyzZ")
# The seconds that gmtime turns into a year tm_year's C int holds, both ways (GNU: "out of range").
MIN_TIME_S = -67768040609740800
MAX_TIME_S = 67768036191676799
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class _Spec:
    """One conversion: `pad` is the last of _-0+ (or ""), widths above MAX_FIELD_WIDTH are cut."""

    pad: str
    upper: bool
    swap: bool
    width: int | None
    text: str


def format_time(epoch_s: int, fmt: str, ns: int = 0) -> str:
    """GNU date's nstrftime in the C locale and UTC, with %N, %s, %q, %:z, %::z and %:::z.

    Written out rather than handed to the C library: glibc pads to any width the agent types (GNU date
    saturates a width at INT_MAX and prints 2 GiB), knows no %q, and prints year 5 as "5" where date
    prints "0005". Here a width is capped at MAX_FIELD_WIDTH and the line at MAX_LINE_CHARS.
    """
    return _strftime(_Tm(epoch_s), ns, fmt, False)[:MAX_LINE_CHARS]


class _Tm:
    """Broken-down UTC time for any second in [MIN_TIME_S, MAX_TIME_S], years beyond datetime's too."""

    def __init__(self, epoch_s: int) -> None:
        days, secs = divmod(epoch_s, 86400)
        self.epoch_s = epoch_s
        self.year, self.month, self.mday = _civil_from_days(days)
        self.hour, rest = divmod(secs, 3600)
        self.minute, self.second = divmod(rest, 60)
        self.wday = (days + 4) % 7
        self.yday = days - _days_from_civil(self.year, 1, 1)


def _strftime(tm: _Tm, ns: int, fmt: str, upper: bool) -> str:
    out: list[str] = []
    size = 0
    i, n = 0, len(fmt)
    while i < n and size <= MAX_LINE_CHARS:
        start = fmt.find("%", i)
        if start < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:start])
        piece, i = _convert(tm, ns, fmt, start, upper)
        out.append(piece)
        size += len(out[-2]) + len(piece)
    text = "".join(out)
    return text.upper() if upper else text


def _convert(tm: _Tm, ns: int, fmt: str, start: int, upper: bool) -> tuple[str, int]:
    """The text of the conversion at fmt[start] == "%", and the index after it."""
    i, n = start + 1, len(fmt)
    pad, swap = "", False
    while i < n and fmt[i] in "_-0+^#":
        if fmt[i] == "^":
            upper = True
        elif fmt[i] == "#":
            swap = True
        else:
            pad = fmt[i]
        i += 1
    digits_start = i
    while i < n and "0" <= fmt[i] <= "9":
        i += 1
    digits = fmt[digits_start:i]
    # GNU saturates a width at INT_MAX; to_int refuses what int() would choke on.
    value = to_int(digits) if digits else None
    width = None if not digits else MAX_FIELD_WIDTH if value is None else min(value, MAX_FIELD_WIDTH)
    modifier = ""
    if i < n and fmt[i] in "EO":
        modifier = fmt[i]
        i += 1
    colons = 0
    while i < n and fmt[i] == ":":
        colons += 1
        i += 1
    if i >= n:
        return _bad(fmt[start:], pad, width), n
    if colons and fmt[i] != "z":
        return _bad(fmt[start:i], pad, width), i
    conv = fmt[i]
    i += 1
    if conv == "N" and pad == "-" and width is None:
        # date turns %-N into %9N, the nanosecond resolution of its clock.
        pad, width = "0", 9
    spec = _Spec(pad, upper, swap, width, fmt[start:i])
    bad = (
        conv not in _CONVERSIONS
        or (colons and (conv != "z" or colons > 3))
        or (modifier == "E" and conv not in _E_TAKERS)
        or (modifier == "O" and conv not in _O_TAKERS)
    )
    if conv == "%" and i - start > 2 and not bad:
        # A flag or width between the two %: date copies the sequence, padded one wider.
        return _bad(spec.text, pad, None if width is None else width + 1), i
    if bad:
        return _bad(spec.text, pad, width), i
    return _conversion(tm, ns, conv, colons, spec), i


def _bad(text: str, pad: str, width: int | None) -> str:
    return _fill(text, pad, width)


def _fill(text: str, pad: str, width: int | None) -> str:
    """width_add: pad on the left with zeros for 0 and +, spaces otherwise; none for -."""
    if width is None or pad == "-" or len(text) >= width:
        return text
    return ("0" if pad in ("0", "+") else " ") * (width - len(text)) + text


def _string(text: str, spec: _Spec, lower: bool = False) -> str:
    if lower:
        text = text.lower()
    elif spec.upper:
        text = text.upper()
    return _fill(text, spec.pad, spec.width)


def _number(value: int, digits: int, spec: _Spec, *, pad: str = "", sign: bool = False) -> str:
    """Gnulib's do_number_sign_and_padding; `pad` is the conversion's default (e, k, l: spaces)."""
    return _signed(abs(value), value < 0, digits, spec, pad=pad, sign=sign)


def _signed(
    magnitude: int | str, negative: bool, digits: int, spec: _Spec, *, pad: str = "", sign: bool = False
) -> str:
    pad = spec.pad or pad or "0"
    width = digits if spec.width is None else spec.width
    num = str(magnitude)
    sign_char = "-" if negative else "+" if sign else ""
    shortage = width - len(sign_char) - len(num)
    padding = 0 if pad == "-" or shortage <= 0 else shortage
    out = ""
    if sign_char:
        if pad == "_":
            out, width = " " * padding, width - padding
        out += sign_char
        width -= 1
    return out + _fill(num, pad, width)


def _yearish(year: int, digits: int, spec: _Spec, negative: bool | None = None) -> str:
    magnitude = abs(year)
    width = digits if spec.width is None else spec.width
    sign = spec.pad == "+" and ((99 if digits == 2 else 9999) < magnitude or digits < width)
    return _signed(magnitude, year < 0 if negative is None else negative, digits, spec, sign=sign)


def _iso_week(tm: _Tm) -> tuple[int, int]:
    """Gnulib's ISO 8601 year and week number."""

    def week_days(yday: int) -> int:
        return yday - (yday - tm.wday + 4 + 378) % 7 + 3

    year, days = tm.year, week_days(tm.yday)
    if days < 0:
        year -= 1
        days = week_days(tm.yday + 365 + calendar.isleap(year))
    else:
        later = week_days(tm.yday - 365 - calendar.isleap(year))
        if later >= 0:
            year, days = year + 1, later
    return year, days // 7 + 1


def _conversion(tm: _Tm, ns: int, conv: str, colons: int, spec: _Spec) -> str:
    if conv == "%":
        return "%"
    if conv in _SUBFORMATS:
        return _fill(_strftime(tm, ns, _SUBFORMATS[conv], spec.upper), spec.pad, spec.width)
    if conv == "F":
        if not spec.pad and spec.width is None:
            year = _yearish(tm.year, 4, _Spec("+", False, False, 4, ""))
        else:
            year = _yearish(tm.year, 4, _Spec(spec.pad, False, False, max((spec.width or 0) - 6, 0), ""))
        return year + f"-{tm.month:02d}-{tm.mday:02d}"
    if conv in "aA":
        name = _DAY_NAMES[tm.wday]
        return _string(name[:3] if conv == "a" else name, _upper(spec))
    if conv in "bBh":
        name = _MONTH_NAMES[tm.month - 1]
        return _string(name if conv == "B" else name[:3], _upper(spec))
    if conv in "pP":
        return _string("AM" if tm.hour < 12 else "PM", spec, lower=conv == "P" or spec.swap)
    if conv == "Z":
        return _string("UTC", spec, lower=spec.swap)
    if conv == "n":
        return _fill("\n", spec.pad, spec.width)
    if conv == "t":
        return _fill("\t", spec.pad, spec.width)
    if conv == "z":
        # UTC: every offset is zero; the digits and colons each form pads to.
        body = {0: ("0", 5), 1: ("0:00", 6), 2: ("0:00:00", 9), 3: ("0", 3)}[colons]
        return _signed(body[0], False, body[1], spec, sign=True)
    if conv == "s":
        return _number(tm.epoch_s, 1, spec)
    if conv == "N":
        width = 9 if not spec.width else spec.width
        text = f"{ns:09d}"[: min(width, 9)].rstrip("0") or "0"
        return text + ("" if spec.pad == "-" else (" " if spec.pad == "_" else "0") * (width - len(text)))
    if conv == "Y":
        return _yearish(tm.year, 4, spec)
    if conv == "C":
        return _yearish(-(abs(tm.year) // 100) if tm.year < 0 else tm.year // 100, 2, spec, tm.year < 0)
    if conv == "y":
        return _yearish(abs(tm.year) % 100, 2, spec, False)
    if conv in "Gg":
        iso_year = _iso_week(tm)[0]
        return _yearish(iso_year, 4, spec) if conv == "G" else _yearish(abs(iso_year) % 100, 2, spec, False)
    hour12 = (tm.hour - 1) % 12 + 1
    numbers = {
        "d": (tm.mday, 2), "e": (tm.mday, 2), "H": (tm.hour, 2), "I": (hour12, 2), "j": (tm.yday + 1, 3),
        "k": (tm.hour, 2), "l": (hour12, 2), "m": (tm.month, 2), "M": (tm.minute, 2), "S": (tm.second, 2),
        "q": ((tm.month + 2) // 3, 1), "u": ((tm.wday - 1) % 7 + 1, 1), "w": (tm.wday, 1),
        "U": ((tm.yday - tm.wday + 7) // 7, 2), "W": ((tm.yday - (tm.wday - 1 + 7) % 7 + 7) // 7, 2),
        "V": (_iso_week(tm)[1], 2),
    }  # fmt: skip
    value, digits = numbers[conv]
    return _number(value, digits, spec, pad="_" if conv in "ekl" else "")


def _upper(spec: _Spec) -> _Spec:
    """%#a and friends print in capitals."""
    return _Spec(spec.pad, spec.upper or spec.swap, False, spec.width, spec.text)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date, any year (Howard Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(days: int) -> tuple[int, int, int]:
    days += 719468
    era = days // 146097
    doe = days - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + (3 if mp < 10 else -9)
    return yoe + era * 400 + (month <= 2), month, day


_UNITS = {
    "sec": 1, "second": 1, "min": 60, "minute": 60, "hour": 3600, "day": 86400, "week": 604800,
    "fortnight": 1209600, "month": 0, "year": 0,
}  # fmt: skip
# ASCII digits only, as C's isdigit; at most 20 of them, so a long run of digits costs linear time.
_RELATIVE = re.compile(
    r"([+-]?\s*[0-9]{1,20})?\s*(fortnight|second|minute|month|week|hour|year|sec|min|day)s?\b(\s+ago\b)?"
)
_ABSOLUTE = re.compile(
    r"^(?P<date>[0-9]{4,20}-[0-9]{1,2}-[0-9]{1,2})?"
    r"(?:[T\s]*(?P<time>[0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?))?\s*(?:Z|UTC)?\s*",
    re.IGNORECASE,
)
_C_SPACE = " \t\n\v\f\r"
_EPOCH = re.compile(r"@[ \t\n\v\f\r]*([+-]?)[ \t\n\v\f\r]*([0-9]+)(?:[.,]([0-9]+))?[ \t\n\v\f\r]*")
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
BILLION = 10**9


def parse_date(text: str, now_s: int) -> tuple[int, int]:
    """GNU date's free-form STRING as (seconds, nanoseconds), for the forms operators type.

    Anything else is an invalid date, and so is a number or result past time_t or a year past
    tm_year's int; a second that time_t holds but gmtime cannot break down is out of range.
    """
    raw = text
    if text.strip(_C_SPACE).startswith("@"):
        return _parse_epoch(raw)
    text = " ".join(text.strip().lower().split())
    base_s = now_s
    for word, days in (("yesterday", -1), ("tomorrow", 1), ("today", 0), ("now", 0)):
        if word in text.split():
            base_s += days * 86400
            text = " ".join(w for w in text.split() if w != word)
    match = _ABSOLUTE.match(text)
    if match and (match.group("date") or match.group("time")):
        base_s = _absolute(raw, base_s, match.group("date"), match.group("time"))
        text = text[match.end() :]
    # As parse_datetime: years and months add to tm_year and tm_mon, days to tm_mday (C ints that
    # must not overflow), and the rest to the seconds mktime gives for them.
    years, months, days, seconds = 0, 0, 0, 0
    pos = 0
    for rel in _RELATIVE.finditer(text):
        if text[pos : rel.start()].strip():
            raise _invalid(raw)
        number = (rel.group(1) or "1").replace(" ", "")
        amount = to_int(number.lstrip("+-"))
        if amount is None:
            raise _invalid(raw)
        if number.startswith("-") != bool(rel.group(3)):
            amount = -amount
        unit = rel.group(2)
        if unit == "year":
            years += amount
        elif unit == "month":
            months += amount
        elif _UNITS[unit] % 86400 == 0:
            days += amount * (_UNITS[unit] // 86400)
        else:
            seconds += amount * _UNITS[unit]
        pos = rel.end()
    if text[pos:].strip() or not INT64_MIN <= seconds <= INT64_MAX:
        raise _invalid(raw)
    if years or months or days:
        base_s = _add_calendar(raw, base_s, years, months, days)
    return _in_range(raw, base_s + seconds), 0


def _parse_epoch(raw: str) -> tuple[int, int]:
    """`@[-]SECONDS[.FRACTION]`, floored as GNU does (@-1.5 is -2 s and 500000000 ns)."""
    match = _EPOCH.fullmatch(raw.strip(_C_SPACE))
    whole = to_int(match.group(2), 19) if match else None
    if match is None or whole is None:
        raise _invalid(raw)
    negative = match.group(1) == "-"
    fraction = match.group(3) or ""
    ns = int(fraction[:9].ljust(9, "0"))
    seconds = -whole if negative else whole
    if negative:
        ns += bool(fraction[9:].strip("0"))
        if ns:
            seconds, ns = seconds - 1, BILLION - ns
    if not INT64_MIN <= seconds <= INT64_MAX:
        raise _invalid(raw)
    if not MIN_TIME_S <= seconds <= MAX_TIME_S:
        raise DateError(f"time '{seconds}' is out of range")
    return seconds, ns


def _in_range(raw: str, when_s: int) -> int:
    if not INT64_MIN <= when_s <= INT64_MAX:
        raise _invalid(raw)
    if not MIN_TIME_S <= when_s <= MAX_TIME_S:
        raise DateError(f"time '{when_s}' is out of range")
    return when_s


def _invalid(raw: str) -> DateError:
    return DateError(f"invalid date {_quote(raw)}")


def _quote(text: str) -> str:
    r"""Gnulib's quote() in the C locale: 'text', with \, \' and C escapes, other bytes in octal."""
    escapes = {
        7: "\\a",
        8: "\\b",
        9: "\\t",
        10: "\\n",
        11: "\\v",
        12: "\\f",
        13: "\\r",
        39: "\\'",
        92: "\\\\",
    }
    out = []
    for byte in text.encode(errors="surrogateescape"):
        if byte in escapes:
            out.append(escapes[byte])
        elif 32 <= byte < 127:
            out.append(chr(byte))
        else:
            out.append(f"\\{byte:03o}")
    return "'" + "".join(out) + "'"


def _absolute(raw: str, base_s: int, day: str | None, clock: str | None) -> int:
    days, secs = divmod(base_s, 86400)
    if day:
        year, month, mday = (int(x) for x in day.split("-"))
        if not (
            INT_MIN <= year - 1900 <= INT_MAX and 1 <= month <= 12 and 1 <= mday <= _month_days(year, month)
        ):
            raise _invalid(raw)
        days, secs = _days_from_civil(year, month, mday), 0
    if clock:
        hour, minute, second = ([int(x) for x in clock.split(":")] + [0])[:3]
        if hour > 23 or minute > 59 or second > 59:
            raise _invalid(raw)
        secs = hour * 3600 + minute * 60 + second
    return days * 86400 + secs


def _month_days(year: int, month: int) -> int:
    return (31, 28 + calendar.isleap(year), 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)[month - 1]


def _add_calendar(raw: str, when_s: int, years: int, months: int, days: int) -> int:
    # GNU date normalises an overflowing day (Jan 31 + 1 month = Mar 3), as mktime does; a field or
    # a year past tm_year's int makes it fail, and the date is invalid.
    day_count, secs = divmod(when_s, 86400)
    year, month, mday = _civil_from_days(day_count)
    fields = (year - 1900 + years, month - 1 + months, mday + days)
    if not all(INT_MIN <= field <= INT_MAX for field in fields):
        raise _invalid(raw)
    year, month = divmod((year + years) * 12 + month - 1 + months, 12)
    day_count = _days_from_civil(year, month + 1, 1) + mday - 1 + days
    if not INT_MIN <= _civil_from_days(day_count)[0] - 1900 <= INT_MAX:
        raise _invalid(raw)
    return day_count * 86400 + secs


def _parse_posix_set(value: str, now_s: int) -> int:
    """The MMDDhhmm[[CC]YY][.ss] operand."""
    match = re.fullmatch(
        r"([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2}|[0-9]{4})?(?:\.([0-9]{2}))?", value
    )
    if not match:
        raise _invalid(value)
    month, mday, hour, minute, year_text, sec = match.groups()
    now = datetime.fromtimestamp(now_s, UTC)
    year = now.year if year_text is None else int(year_text)
    if year_text is not None and len(year_text) == 2:
        year += 1900 if year >= 69 else 2000
    try:
        when = datetime(year, int(month), int(mday), int(hour), int(minute), int(sec or 0), tzinfo=UTC)
    except ValueError:
        raise _invalid(value) from None
    return calendar.timegm(when.timetuple())
