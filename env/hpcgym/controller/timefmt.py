"""Slurm's spellings of times and durations, both directions.

Every tool prints durations the same few ways (`1-00:00:00`, `0:09`, `UNLIMITED`) and parses time
limits with one grammar (`time_str2mins`), so they live here once. Instants are epoch seconds from the
controller's virtual clock; the cluster's time zone is UTC.
"""

from __future__ import annotations

import calendar
import re
import time

from hpcgym.controller.numbers import to_int

# Time limits are kept in minutes, as slurmctld keeps them; None means INFINITE/UNLIMITED.
TimeLimit = int | None
# slurmctld keeps a limit in a uint32 of minutes (0xffffffff is INFINITE); a longer one is refused here.
MAX_TIME_LIMIT_MIN = 0xFFFFFFFE
# The last instant ISO and ctime forms print (9999-12-31T23:59:59); a --begin past it is refused.
MAX_EPOCH_S = 253402300799

_LIMIT_FORMS = (
    re.compile(r"^(?P<m>[0-9]+)$"),
    re.compile(r"^(?P<m>[0-9]+):(?P<s>[0-9]+)$"),
    re.compile(r"^(?P<h>[0-9]+):(?P<m>[0-9]+):(?P<s>[0-9]+)$"),
    re.compile(r"^(?P<d>[0-9]+)-(?P<h>[0-9]+)$"),
    re.compile(r"^(?P<d>[0-9]+)-(?P<h>[0-9]+):(?P<m>[0-9]+)$"),
    re.compile(r"^(?P<d>[0-9]+)-(?P<h>[0-9]+):(?P<m>[0-9]+):(?P<s>[0-9]+)$"),
)


def parse_time_limit(text: str) -> TimeLimit:
    """Parse a Slurm time limit ("30", "1:00:00", "2-12", "INFINITE") into minutes.

    Seconds round up to the next minute, as in Slurm's `time_str2mins`.

    Raises:
        ValueError: the text is not one of Slurm's time forms.
    """
    value = text.strip()
    if value.upper() in ("INFINITE", "UNLIMITED", "-1"):
        return None
    for form in _LIMIT_FORMS:
        match = form.match(value)
        if match:
            numbers = {key: to_int(number) for key, number in match.groupdict().items() if number is not None}
            parts = {key: number for key, number in numbers.items() if number is not None}
            if len(parts) < len(numbers):
                break
            seconds = (
                parts.get("d", 0) * 86400
                + parts.get("h", 0) * 3600
                + parts.get("m", 0) * 60
                + parts.get("s", 0)
            )
            if (seconds + 59) // 60 > MAX_TIME_LIMIT_MIN:
                break
            return (seconds + 59) // 60
    raise ValueError(f"invalid time specification: {text[:64]!r}")


def format_limit(minutes: TimeLimit, *, unlimited: str = "UNLIMITED") -> str:
    """Format a time limit in minutes the way scontrol and squeue do (`1-00:00:00`, `UNLIMITED`)."""
    if minutes is None:
        return unlimited
    return format_duration(minutes * 60, always_hours=True)


def format_duration(seconds: int, *, always_hours: bool = False) -> str:
    """Format seconds as Slurm's `secs2time_str`: `0:09`, `1:02:03`, `2-00:00:00`.

    Args:
        seconds: the duration; negative values print as 0.
        always_hours: print `HH:MM:SS` even under an hour (scontrol's RunTime and TimeLimit).
    """
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"
    if hours or always_hours:
        return (
            f"{hours:02d}:{minutes:02d}:{secs:02d}" if always_hours else f"{hours}:{minutes:02d}:{secs:02d}"
        )
    return f"{minutes}:{secs:02d}"


def format_iso(epoch_s: int | None, *, none: str = "Unknown") -> str:
    """Format an instant as Slurm's ISO form `2026-11-23T07:46:45` (UTC)."""
    if epoch_s is None:
        return none
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_s))


def format_ctime(epoch_s: int) -> str:
    """Format an instant like ctime(3) without the newline: `Mon Nov 23 07:46:37 2026`."""
    return time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(epoch_s))


_BEGIN_RELATIVE = re.compile(
    r"^now(?:\+([0-9]+)(seconds|second|minutes|minute|hours|hour|days|day|weeks|week)?)?$"
)
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}


def parse_begin_time(text: str, now_s: int) -> int:
    """Parse sbatch's --begin value (`now+1hour`, `16:00`, `2026-11-23T08:00:00`) into epoch seconds.

    Raises:
        ValueError: the value is not a form Slurm's `parse_time` accepts here.
    """
    value = text.strip().lower()
    match = _BEGIN_RELATIVE.match(value)
    if match:
        count = to_int(match.group(1) or "0")
        unit = (match.group(2) or "seconds").rstrip("s")
        if count is not None and now_s + count * _UNIT_SECONDS[unit] <= MAX_EPOCH_S:
            return now_s + count * _UNIT_SECONDS[unit]
        raise ValueError(f"invalid time specification: {text[:64]!r}")
    for pattern in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return calendar.timegm(time.strptime(text.strip(), pattern))
        except ValueError:
            continue
    clock = re.match(r"^([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))?$", value)
    if clock:
        day_start = now_s - now_s % 86400
        moment = day_start + int(clock.group(1)) * 3600 + int(clock.group(2)) * 60 + int(clock.group(3) or 0)
        return moment if moment > now_s else moment + 86400
    raise ValueError(f"invalid time specification: {text[:64]!r}")
