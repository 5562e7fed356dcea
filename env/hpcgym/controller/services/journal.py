"""Each node's systemd journal: entries stamped by the virtual clock, in journalctl's short format.

Units write here (systemd's own `Starting ...`/`Failed ...` lines and the daemons' stderr); the
`journalctl` and `systemctl status` tools only read. Entries keep the catalog message id of the
systemd messages that have one, so `journalctl -x` can print the explanation block under them.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

SUPPORT_URL = "https://access.redhat.com/support"


class Priority(enum.IntEnum):
    """Syslog priorities, as `journalctl -p` names them."""

    EMERG = 0
    ALERT = 1
    CRIT = 2
    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


class Catalog(enum.Enum):
    """The systemd catalog entries our messages carry (what `journalctl -x` explains)."""

    JOB_START_BEGUN = "start-begun"
    JOB_START_DONE = "start-done"
    JOB_START_FAILED = "start-failed"
    JOB_STOP_BEGUN = "stop-begun"
    JOB_STOP_DONE = "stop-done"
    UNIT_FAILED = "unit-failed"
    UNIT_SUCCEEDED = "unit-succeeded"
    PROCESS_EXITED = "process-exited"


@dataclass(frozen=True)
class Entry:
    """One journal line: when, which program and pid, which unit it belongs to, and the text."""

    time_s: int
    identifier: str
    pid: int
    unit: str
    message: str
    priority: Priority = Priority.INFO
    catalog: Catalog | None = None
    # Values the catalog text refers to: job id, result, exit code and status.
    fields: dict[str, str] = field(default_factory=dict)


def format_time(time_s: int) -> str:
    """Journalctl's short timestamp (`Nov 23 07:46:05`), in the node's time zone (UTC)."""
    return datetime.fromtimestamp(time_s, UTC).strftime("%b %d %H:%M:%S")


def entry_tag(entry: Entry) -> str:
    """`sshd[812]`; kernel lines carry no _PID, so journalctl prints plain `kernel`."""
    return entry.identifier if entry.identifier == "kernel" else f"{entry.identifier}[{entry.pid}]"


def format_entry(entry: Entry, hostname: str, *, show_all: bool = False) -> str:
    return f"{format_time(entry.time_s)} {hostname} {entry_tag(entry)}: {shown_message(entry, show_all)}"


def shown_message(entry: Entry, show_all: bool = False) -> str:
    """The message as journalctl's short outputs show it.

    One with control characters (the BEL mysys rings before an error, say) is `[103B blob data]`
    unless -a/--all (output_short, utf8_is_printable: tab and newline pass, C0 and C1 controls not).
    """
    if show_all or not any(_is_control(char) for char in entry.message):
        return entry.message
    return f"[{format_bytes(len(entry.message.encode()))} blob data]"


def _is_control(char: str) -> bool:
    code = ord(char)
    return (code < 0x20 and char not in "\t\n") or 0x7F <= code <= 0x9F


def format_bytes(size: int) -> str:
    """A size as systemd's format_bytes writes it: `103B`, `1.5K` (powers of 1024, tenths cut)."""
    for power, suffix in ((6, "E"), (5, "P"), (4, "T"), (3, "G"), (2, "M"), (1, "K")):
        factor = 1024**power
        if size >= factor:
            return f"{size // factor}.{size * 10 // factor % 10}{suffix}"
    return f"{size}B"
    for suffix in "KMGTPE":
        size_f = size / 1024
        if size_f < 1024 or suffix == "E":
            return f"{size_f:.1f}{suffix}"
        size = int(size_f)
    return f"{size}B"


def catalog_lines(entry: Entry) -> list[str]:
    """The `░░ ` block journalctl -x prints under an entry that has a catalog id (systemd 252 texts)."""
    if entry.catalog is None:
        return []
    unit, f = entry.unit, entry.fields
    job = f"The job identifier is {f.get('job', '0')}"
    texts: dict[Catalog, tuple[str, list[str]]] = {
        Catalog.JOB_START_BEGUN: (
            f"A start job for unit {unit} has begun execution",
            [f"A start job for unit {unit} has begun execution.", "", f"{job}."],
        ),
        Catalog.JOB_START_DONE: (
            f"A start job for unit {unit} has finished successfully",
            [f"A start job for unit {unit} has finished successfully.", "", f"{job}."],
        ),
        Catalog.JOB_START_FAILED: (
            f"A start job for unit {unit} has failed",
            [
                f"A start job for unit {unit} has finished with a failure.",
                "",
                f"{job} and the job result is failed.",
            ],
        ),
        Catalog.JOB_STOP_BEGUN: (
            f"A stop job for unit {unit} has begun execution",
            [f"A stop job for unit {unit} has begun execution.", "", f"{job}."],
        ),
        Catalog.JOB_STOP_DONE: (
            f"A stop job for unit {unit} has finished",
            [f"A stop job for unit {unit} has finished.", "", f"{job} and the job result is done."],
        ),
        Catalog.UNIT_FAILED: (
            "Unit failed",
            [f"The unit {unit} has entered the 'failed' state with result '{f.get('result', '')}'."],
        ),
        Catalog.UNIT_SUCCEEDED: (
            "Unit succeeded",
            [f"The unit {unit} has successfully entered the 'dead' state."],
        ),
        Catalog.PROCESS_EXITED: (
            "Unit process exited",
            [
                f"An ExecStart= process belonging to unit {unit} has exited.",
                "",
                f"The process' exit code is '{f.get('code', '')}' "
                f"and its exit status is {f.get('status', '')}.",
            ],
        ),
    }
    subject, body = texts[entry.catalog]
    lines = [f"Subject: {subject}", "Defined-By: systemd", f"Support: {SUPPORT_URL}", "", *body]
    return [f"░░ {line}" for line in lines]


@dataclass
class Journal:
    """One node's journal, oldest entry first."""

    hostname: str
    entries: list[Entry] = field(default_factory=list)
    # Where each new entry goes besides the journal (rsyslog's /var/log/messages, syslog.py).
    sink: Callable[[Entry], None] | None = field(default=None, repr=False, compare=False)

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        if self.sink is not None:
            self.sink(entry)

    def for_unit(self, unit: str) -> list[Entry]:
        return [entry for entry in self.entries if entry.unit == unit]


def pid1_priority(text: str) -> Priority:
    """The priority systemd (pid 1) gives its own unit messages."""
    # As pid1 logs them: job failures at err, a failed result at warning, process exits at notice.
    if text.startswith("Failed to"):
        return Priority.ERR
    if "Failed with result" in text:
        return Priority.WARNING
    if "process exited" in text:
        return Priority.NOTICE
    return Priority.INFO
