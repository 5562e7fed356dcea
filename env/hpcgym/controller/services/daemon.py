"""What a simulated daemon is to the service manager: a launch that succeeds or fails, and its logs.

Each daemon module (`munged.py`, `slurm.py`, `httpd.py`) has one `launch(host, node, unit)` that
runs the checks the real program runs at start-up, against the node's own files, and returns a
`Launch`: whether it came up, what it wrote to stderr (the journal) and to its own log file, and the
facts the manager keeps while it runs (facts.py). The manager turns that into unit states and
systemd's lines.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Protocol

from hpcgym.controller.numbers import to_int
from hpcgym.controller.services.access import NodeAccess, NodeFileError
from hpcgym.controller.services.facts import DaemonFacts, Facts
from hpcgym.controller.services.journal import Priority
from hpcgym.controller.services.network import Network
from hpcgym.controller.services.units import UnitFile

if TYPE_CHECKING:
    from hpcgym.controller.services.peers import Hardware, NodeClocks

PID_MARK = "{pid}"
# Service accounts of the images (images/common/setup-node.sh); used when /etc/passwd lacks them.
DEFAULT_IDS = {
    "root": (0, 0),
    "munge": (981, 981),
    "slurm": (982, 982),
    "apache": (48, 48),
    "mysql": (983, 983),
}


@dataclass(frozen=True)
class Line:
    """One line a daemon writes to stderr, which systemd puts in the journal under its name and pid."""

    text: str
    priority: Priority = Priority.INFO


@dataclass
class Launch:
    """The outcome of starting a daemon."""

    ok: bool
    comm: str
    argv: list[str]
    uid: int = 0
    gid: int = 0
    stderr: list[Line] = field(default_factory=list)
    exit_status: int = 0
    pid_file: str = ""
    log_file: str = ""
    # Lines for the daemon's own log file; PID_MARK stands for the pid, known only once it runs.
    log_lines: list[str] = field(default_factory=list)
    # What the manager keeps while it runs (munged's key digest, for example).
    facts: DaemonFacts | None = None
    # The node path of a program that runs as itself (a unit's ExecStart that is no simulated
    # daemon); "" for a simulated daemon, which runs as its stand-in process named `comm`.
    program: str = ""


class RunningUnits(Protocol):
    """What a daemon's checks may ask of the node's systemd: what serves, and what it left."""

    def is_active(self, node: str, unit: str) -> bool: ...

    def facts(self, node: str, unit: str, kind: type[Facts]) -> Facts | None: ...


class DaemonHost(Protocol):
    """Everything a daemon's checks may ask of the rest of the cluster (`ServiceManager` provides it).

    slurmd and slurmctld (slurm.py) ask all of it; each other launcher names the part it uses
    (munged.MungedHost, httpd.HttpdHost, chrony.ClockHost, mariadb.MariadbHost, slurmdbd.SlurmdbdHost).
    """

    access: NodeAccess
    network: Network
    # The episode's time and each node's skew.
    clocks: NodeClocks
    # What each compute node physically has (hardware.py), as slurmd finds it at its start.
    hardware: Hardware

    @property
    def controller_host(self) -> str: ...

    @property
    def systemd(self) -> RunningUnits: ...

    def controller_addr(self, node: str) -> IPv4Address | None: ...


def lookup_ids(access: NodeAccess, node: str, user: str) -> tuple[int, int]:
    """The uid and gid of `user` from the node's /etc/passwd (the account a unit's User= names)."""
    return _passwd_ids(access, node, user) or DEFAULT_IDS.get(user, (0, 0))


def _passwd_ids(access: NodeAccess, node: str, user: str) -> tuple[int, int] | None:
    raw = access.read(node, "/etc/passwd")
    for line in (raw or b"").decode(errors="replace").splitlines():
        fields = line.split(":")
        uid, gid = (to_int(field) for field in fields[2:4]) if len(fields) >= 4 else (None, None)
        if fields[0] == user and uid is not None and gid is not None:
            return uid, gid
    return None


def find_account(access: NodeAccess, node: str, user: str) -> tuple[int, int] | None:
    """User='s uid and gid as systemd resolves them: root always, a number as itself, else passwd.

    None where the node's /etc/passwd has no such user (or cannot be read): systemd's 217/USER.
    """
    if user in ("", "root", "0"):
        return 0, 0
    if (number := to_int(user)) is not None:
        return number, number
    return _passwd_ids(access, node, user)


def find_group(access: NodeAccess, node: str, group: str) -> int | None:
    """Group='s gid from the node's /etc/group (root and numbers as systemd takes them), or None."""
    if group in ("root", "0"):
        return 0
    if (number := to_int(group)) is not None:
        return number
    raw = access.read(node, "/etc/group")
    for line in (raw or b"").decode(errors="replace").splitlines():
        fields = line.split(":")
        gid = to_int(fields[2]) if len(fields) >= 3 else None
        if fields[0] == group and gid is not None:
            return gid
    return None


def append_log(access: NodeAccess, node: str, path: str, lines: list[str], uid: int, gid: int) -> None:
    if not path or not lines:
        return
    # A daemon that cannot write its log (a full disk, a directory in the way) carries on without it.
    with contextlib.suppress(NodeFileError):
        access.append(
            node, path, "".join(f"{line}\n" for line in lines).encode(), mode=0o640, uid=uid, gid=gid
        )


def fill_pid(lines: list[str], pid: int) -> list[str]:
    return [line.replace(PID_MARK, str(pid)) for line in lines]


def iso_time(time_s: int) -> str:
    return datetime.fromtimestamp(time_s, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def exec_argv(unit: UnitFile) -> list[str]:
    """ExecStart with the unset $OPTIONS-style variables dropped, as systemd expands them."""
    return [word for word in unit.exec_start.split() if not word.startswith("$")]
