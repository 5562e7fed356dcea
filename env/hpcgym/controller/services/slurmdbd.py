"""slurmdbd and the MariaDB server under it: their start-up checks, and whether slurmdbd serves.

Real slurmdbd (22.05) reads /etc/slurm/slurmdbd.conf, which must be mode 600 and owned by SlurmUser
(read_config.c: a fatal otherwise), then loads accounting_storage/mysql, whose init connects to the
database and, while that fails, logs the MySQL client's error and "The database must be up when
starting the MYSQL plugin.  Trying again in 5 seconds." and tries again, for ever: the unit stays
`active (running)` but slurmdbd never opens its port, so every client is refused. It keeps the
StoragePass it read at start, so a corrected slurmdbd.conf needs a restart; a database that comes
back is found at the next try, every 5 s, and slurmdbd then goes on with its start (`follow_database`
logs each try as the manager's clock passes it). The MariaDB server itself is mariadb.py.

The database's accounts live in the login node's datadir as MariaDB keeps them, in a file of our own
text format: one `'user'@'host' IDENTIFIED BY PASSWORD '*HASH'` line per account, HASH being MySQL's
native password hash (SHA1 of SHA1, upper-case hex). A rotated password is a changed line there.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from hpcgym.controller.numbers import to_int
from hpcgym.controller.services.daemon import Launch, Line, RunningUnits, exec_argv, iso_time, lookup_ids
from hpcgym.controller.services.facts import DaemonFacts
from hpcgym.controller.services.journal import Priority
from hpcgym.controller.services.mariadb import DATADIR, MARIADB_VERSION, SOCKET, running_server
from hpcgym.controller.services.units import UnitFile

if TYPE_CHECKING:
    from hpcgym.controller.services.access import NodeAccess
    from hpcgym.controller.services.peers import NodeClocks

SLURMDBD_CONF = "/etc/slurm/slurmdbd.conf"
SLURMDBD = "slurmdbd.service"
# The privilege table of the image's datadir (the site's accounts); a server elsewhere has its own.
GRANTS_IN_DATADIR = "mysql/global_priv.MAD"
GRANTS = f"{DATADIR}/{GRANTS_IN_DATADIR}"
SLURMDBD_VERSION = "22.05.8"
RETRY_TEXT = "error: The database must be up when starting the MYSQL plugin.  Trying again in 5 seconds."
RETRY_S = 5
# Tries logged at most per catch-up, the latest ones: a clock moved by hours logs the last of them.
MAX_TRIES_LOGGED = 120
_GRANT = re.compile(r"^'([^']*)'@'([^']*)' IDENTIFIED BY PASSWORD '(\*[0-9A-F]{40})'\s*$")


@dataclass(frozen=True)
class SlurmdbdFacts(DaemonFacts):
    """A running slurmdbd's database login, and its start-up wait for the database."""

    storage_user: str = ""
    storage_pass: str = ""
    # When its next try at the database is due, while it still waits for one (else None).
    next_try_s: int | None = None


def native_hash(password: str) -> str:
    """MySQL's mysql_native_password hash of `password`."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


def grant_line(user: str, host: str, password: str) -> str:
    return f"'{user}'@'{host}' IDENTIFIED BY PASSWORD '{native_hash(password)}'\n"


class SlurmdbdHost(Protocol):
    """What slurmdbd's start-up (and its clients) ask of the cluster: files, the time, what runs.

    The same as mariadbd's (`MariadbHost`): slurmdbd reaches its database through it.
    """

    access: NodeAccess
    clocks: NodeClocks

    @property
    def systemd(self) -> RunningUnits: ...


def read_grants(host: SlurmdbdHost, node: str, datadir: str = DATADIR) -> dict[tuple[str, str], str]:
    raw = host.access.read(node, posixpath.join(datadir, GRANTS_IN_DATADIR))
    grants = {}
    for line in (raw or b"").decode(errors="replace").splitlines():
        match = _GRANT.match(line)
        if match:
            grants[(match[1], match[2])] = match[3]
    return grants


def parse_dbd_conf(text: str) -> dict[str, str]:
    """slurmdbd.conf's Key=Value lines, keys lower-cased (s_p_parse_file is case-blind)."""
    options = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        key, sep, value = line.partition("=")
        if sep:
            options[key.strip().lower()] = value.strip()
    return options


def read_dbd_conf(host: SlurmdbdHost, node: str) -> dict[str, str] | None:
    raw = host.access.read(node, SLURMDBD_CONF)
    return None if raw is None else parse_dbd_conf(raw.decode(errors="replace"))


def connect_error(host: SlurmdbdHost, node: str, user: str, password: str) -> str | None:
    """The MySQL client's error for slurmdbd's connection now (StorageHost=localhost), or None.

    The client knows one socket, the compiled-in one: a server that listens on another (its
    `socket=` changed) is as absent as one that does not run.
    """
    server = running_server(host, node)
    if server is None or server.socket != SOCKET:
        return f"2002 Can't connect to local server through socket '{SOCKET}' (2)"
    if read_grants(host, node, server.datadir).get((user, "localhost")) != native_hash(password):
        using = "YES" if password else "NO"
        return f"1045 Access denied for user '{user}'@'localhost' (using password: {using})"
    return None


def is_serving(host: SlurmdbdHost, node: str) -> bool:
    """Whether slurmdbd on `node` runs and has its database (so it listens on DbdPort).

    One still in its start-up loop serves from the try that reaches the database on.
    """
    if not host.systemd.is_active(node, SLURMDBD):
        return False
    running = host.systemd.facts(node, SLURMDBD, SlurmdbdFacts) or SlurmdbdFacts()
    if running.next_try_s is not None:
        return False
    return connect_error(host, node, running.storage_user, running.storage_pass) is None


def follow_database(
    host: SlurmdbdHost, node: str, running: SlurmdbdFacts
) -> tuple[SlurmdbdFacts, list[tuple[int, str]]]:
    """The tries a waiting slurmdbd made since it was last followed, as (time, log text) lines.

    Each try that fails logs the client's error and the plugin's "Trying again"; the one that
    succeeds logs slurmdbd's start and ends the wait. The database's state is read once, now: a
    server that came back between two follows is found at the first try due. Returns the facts
    with the wait moved on, and the lines.
    """
    if running.next_try_s is None:
        return running, []
    due = running.next_try_s
    if due > host.clocks.now_s:
        return running, []
    error = connect_error(host, node, running.storage_user, running.storage_pass)
    if error is None:
        return replace(running, next_try_s=None), [(due, text) for text in started_texts()]
    tries = list(range(due, host.clocks.now_s + 1, RETRY_S))[-MAX_TRIES_LOGGED:]
    failed = (f"error: mysql_real_connect failed: {error}", RETRY_TEXT)
    lines = [(when, text) for when in tries for text in failed]
    return replace(running, next_try_s=tries[-1] + RETRY_S), lines


def started_texts() -> list[str]:
    return [
        "accounting_storage/as_mysql: _check_mysql_concat_is_sane: MySQL server version is: "
        f"{MARIADB_VERSION}",
        f"slurmdbd version {SLURMDBD_VERSION} started",
    ]


def _names(host: SlurmdbdHost, node: str) -> dict[int, str]:
    raw = host.access.read(node, "/etc/passwd")
    names: dict[int, str] = {}
    for line in (raw or b"").decode(errors="replace").splitlines():
        fields = line.split(":")
        uid = to_int(fields[2]) if len(fields) >= 3 else None  # "²".isdigit() is True; int() raises
        if uid is not None:
            names.setdefault(uid, fields[0])
    return names


def launch_slurmdbd(host: SlurmdbdHost, node: str, unit: UnitFile) -> Launch:
    """`slurmdbd -D -s`: fatal on a slurmdbd.conf others can read or SlurmUser does not own."""
    uid, gid = lookup_ids(host.access, node, unit.user)
    result = Launch(ok=False, comm="slurmdbd", argv=exec_argv(unit), uid=uid, gid=gid)
    info = host.access.stat(node, SLURMDBD_CONF)
    conf = read_dbd_conf(host, node)
    texts: list[str] = []
    if info is None or conf is None:
        texts = [f"fatal: Could not open/read/parse slurmdbd.conf file {SLURMDBD_CONF}"]
    else:
        slurm_user = conf.get("slurmuser", "root")
        want_uid = lookup_ids(host.access, node, slurm_user)[0]
        result.log_file = conf.get("logfile", "")
        if info.perms != 0o600:
            texts = [
                f"fatal: slurmdbd.conf file {SLURMDBD_CONF} should be 600 is {info.perms:o} "
                "accessible for group or others"
            ]
        elif info.uid != want_uid:
            owner = _names(host, node).get(info.uid, str(info.uid))
            texts = [f"fatal: slurmdbd.conf not owned by SlurmUser {owner}!={slurm_user}"]
        else:
            result.ok = True
            result.pid_file = conf.get("pidfile", "/run/slurmdbd.pid")
            user, password = conf.get("storageuser", "slurm"), conf.get("storagepass", "")
            error = connect_error(host, node, user, password)
            if error is not None:
                texts = [f"error: mysql_real_connect failed: {error}", RETRY_TEXT]
                result.facts = SlurmdbdFacts(user, password, next_try_s=host.clocks.now_s + RETRY_S)
            else:
                texts = started_texts()
                result.facts = SlurmdbdFacts(user, password)
    if not result.ok:
        result.exit_status = 1
    result.stderr = [
        Line(f"slurmdbd: {t}", Priority.ERR if t.startswith(("error", "fatal")) else Priority.INFO)
        for t in texts
    ]
    result.log_lines = [f"[{iso_time(host.clocks.now_s)}.000] {t}" for t in texts]
    return result
