"""munged's start-up checks, in the order munge 0.5.15 makes them, with its exact messages.

Reference: `reference/slurm-22.05/01-munged-behaviour/` (index.json holds the stderr of each run):
the PRNG seed dir's ownership, then the key file (missing, owner, group bits, other bits, its
directory). A good start writes `/run/munge/munged.pid`; the key's digest is remembered because
munged reads the key once, at start-up: fixing the file later changes nothing until a restart.
"""

from __future__ import annotations

import hashlib
import posixpath
import stat as statmod
from datetime import UTC, datetime

from hpcgym.controller.services.access import FileStat, NodeAccess
from hpcgym.controller.services.daemon import PID_MARK, DaemonHost, Launch, Line, exec_argv, lookup_ids
from hpcgym.controller.services.journal import Priority
from hpcgym.controller.services.units import UnitFile

VERSION = "0.5.15"
KEY_FILE = "/etc/munge/munge.key"
SEED_DIR = "/var/lib/munge"
LOG_FILE = "/var/log/munge/munged.log"
PID_FILE = "/run/munge/munged.pid"
SOCKET = "/run/munge/munge.socket.2"


def path_insecurity(access: NodeAccess, node: str, path: str, euid: int) -> str | None:
    """Munge's `path_is_secure`: every directory up to / owned by root or us, not group/world-writable."""
    current = posixpath.normpath(path)
    info = access.stat(node, current)
    if info is not None and not info.is_dir():
        current = posixpath.dirname(current)
    while True:
        info = access.stat(node, current)
        if info is None:
            return f'cannot stat "{current}": No such file or directory'
        if info.uid not in (0, euid):
            return f'invalid ownership of "{current}"'
        sticky = bool(info.mode & statmod.S_ISVTX)
        if info.mode & statmod.S_IWGRP and not sticky:
            return f'group-writable permissions without sticky bit set on "{current}"'
        if info.mode & statmod.S_IWOTH and not sticky:
            return f'world-writable permissions without sticky bit set on "{current}"'
        if current == "/":
            return None
        current = posixpath.dirname(current)


def key_insecurity(info: FileStat | None, euid: int) -> str | None:
    """The first key-file complaint munged 0.5.15 makes, or None for a key it accepts."""
    if info is None:
        return f'Failed to find keyfile "{KEY_FILE}": No such file or directory (Did you run mungekey?)'
    if not info.is_file():
        return (
            f'Keyfile is insecure: "{KEY_FILE}" must be a regular file (type={statmod.S_IFMT(info.mode):07o})'
        )
    if info.uid != euid:
        return f'Keyfile is insecure: "{KEY_FILE}" should be owned by UID {euid} instead of UID {info.uid}'
    for who, bits in (
        ("group", statmod.S_IRGRP | statmod.S_IWGRP),
        ("other", statmod.S_IROTH | statmod.S_IWOTH),
    ):
        if info.mode & bits:
            return (
                f'Keyfile is insecure: "{KEY_FILE}" should not be readable or writable by {who} '
                f"(perms={info.perms:04o})"
            )
    return None


def _log_line(time_s: int, level: str, text: str) -> str:
    stamp = datetime.fromtimestamp(time_s, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")
    return f"{stamp} {level + ':':<11}{text}"


def launch(host: DaemonHost, node: str, unit: UnitFile) -> Launch:
    """Start munged as its unit's User= would (daemon mode: only errors reach stderr and the journal)."""
    euid, egid = lookup_ids(host.access, node, unit.user)
    now = host.now_s
    addr = host.network.address(node)
    origin = f"{addr} (eth0)" if addr is not None else "127.0.0.1 (lo)"
    steps = [
        ("Notice", f"Starting munge-{VERSION} daemon (pid {PID_MARK})"),
        ("Info", f"Set origin address to {origin}"),
        ("Info", "Seeded PRNG with 128 bytes from getrandom()"),
    ]
    result = Launch(ok=False, comm="munged", argv=exec_argv(unit), uid=euid, gid=egid, log_file=LOG_FILE)

    def fail(message: str) -> Launch:
        result.stderr.append(Line(f"munged: Error: {message}", Priority.ERR))
        result.exit_status = 1
        result.log_lines = [_log_line(now, level, text) for level, text in [*steps, ("Error", message)]]
        return result

    seed = path_insecurity(host.access, node, SEED_DIR, euid)
    if seed is not None:
        return fail(f"PRNG seed dir is insecure: {seed}")
    steps.append(("Info", "Enabled PRNG entropy pool enhanced stirring"))
    key_problem = key_insecurity(host.access.stat(node, KEY_FILE), euid)
    if key_problem is None:
        dir_problem = path_insecurity(host.access, node, posixpath.dirname(KEY_FILE), euid)
        key_problem = None if dir_problem is None else f"Keyfile is insecure: {dir_problem}"
    if key_problem is not None:
        return fail(key_problem)
    key = host.access.read(node, KEY_FILE) or b""
    steps += [
        ("Info", "Updating supplementary group mapping every 3600 seconds"),
        ("Info", 'Enabled supplementary group mtime check of "/etc/group"'),
    ]
    result.ok = True
    result.pid_file = PID_FILE
    result.log_lines = [_log_line(now, level, text) for level, text in steps]
    result.memo["key_sha256"] = hashlib.sha256(key).hexdigest()
    return result
