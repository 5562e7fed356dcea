"""rsyslog on every node: the journal's lines copied to /var/log/messages, as Rocky 9 configures it.

Rocky's rsyslog.conf reads the journal (imjournal) and writes `*.info;mail.none;authpriv.none;
cron.none` to /var/log/messages in RSYSLOG_TraditionalFileFormat: `Dec  7 14:02:11 compute-01
slurmd[812]: text`, the day of the month padded with a space (not journalctl's `Dec 07`), the
host's short name, the syslog tag `identifier[pid]:` and the message. The file is root's, mode 0600.

A line is appended when the journal gets its entry, through the controller's node-file access; a
node whose /var/log/messages cannot be written (the agent made it a directory, the disk is full)
loses the line, as rsyslog would.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from hpcgym.controller.services.access import NodeAccess, NodeFileError
from hpcgym.controller.services.journal import Entry, Priority

MESSAGES = "/var/log/messages"
MESSAGES_MODE = 0o600


def traditional_line(entry: Entry, hostname: str) -> str:
    """One entry in rsyslog's traditional file format (RFC 3164 timestamp, space-padded day)."""
    when = datetime.fromtimestamp(entry.time_s, UTC)
    stamp = f"{when:%b} {when.day:>2} {when:%H:%M:%S}"
    return f"{stamp} {hostname} {entry.identifier}[{entry.pid}]: {entry.message}\n"


class MessagesSink:
    """Called with each new journal entry of one node; appends what rsyslog would keep."""

    def __init__(self, access: NodeAccess, node: str) -> None:
        self.access = access
        self.node = node

    def __call__(self, entry: Entry) -> None:
        if entry.priority > Priority.INFO:
            return  # *.info: debug lines stay in the journal
        line = traditional_line(entry, self.node.split(".")[0])
        with contextlib.suppress(NodeFileError):
            self.access.append(self.node, MESSAGES, line.encode(), mode=MESSAGES_MODE)
