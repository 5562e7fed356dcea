"""munged's start-up checks, in the order munge 0.5.15 makes them, with its exact messages.

Reference: `reference/slurm-22.05/01-munged-behaviour/` (index.json holds the stderr of each run):
the PRNG seed dir's ownership, then the key file (missing, not a regular file, a symlink, owner,
group bits, other bits, its directory), then opening and reading it (at least 32 bytes), as
munge-0.5.15's src/munged/conf.c (`_conf_open_keyfile`, `create_subkeys`) makes them. A good start
writes `/run/munge/munged.pid`; the key's digest is remembered because munged reads the key once, at
start-up: fixing the file later changes nothing until a restart.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import stat as statmod
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from hpcgym.controller.services.access import FileStat, NodeAccess, NodeFileError, is_symlink
from hpcgym.controller.services.daemon import PID_MARK, Launch, Line, exec_argv, lookup_ids
from hpcgym.controller.services.facts import DaemonFacts
from hpcgym.controller.services.journal import Priority
from hpcgym.controller.services.units import UnitFile

if TYPE_CHECKING:
    from hpcgym.controller.services.network import Network
    from hpcgym.controller.services.peers import NodeClocks

VERSION = "0.5.15"
KEY_FILE = "/etc/munge/munge.key"
SEED_DIR = "/var/lib/munge"
LOG_FILE = "/var/log/munge/munged.log"
PID_FILE = "/run/munge/munged.pid"
SOCKET = "/run/munge/munge.socket.2"
# MUNGE_KEY_LEN_MIN_BYTES (src/libcommon/munge_defs.h). munged sets no upper bound (1024 bytes is
# only mungekey's most); ours is the controller's read cap, past which a key reads as unreadable.
KEY_LEN_MIN_BYTES = 32


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


def key_insecurity(info: FileStat | None, euid: int, *, symlink: bool = False, why: str = "") -> str | None:
    """The first complaint munged 0.5.15 makes of the key file's metadata, or None for one it accepts.

    `symlink`: the key file's own name is a symlink (lstat says so); `why`: stat's error where
    `info` is None (ENOENT's words by default).
    """
    if info is None:
        why = why or os.strerror(errno.ENOENT)
        return f'Failed to find keyfile "{KEY_FILE}": {why} (Did you run mungekey?)'
    if not info.is_file():
        return (
            f'Keyfile is insecure: "{KEY_FILE}" must be a regular file (type={statmod.S_IFMT(info.mode):07o})'
        )
    if symlink:
        return f'Keyfile is insecure: "{KEY_FILE}" should not be a symbolic link'
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


def key_problem(access: NodeAccess, node: str, euid: int) -> str | None:
    """Why munged 0.5.15, running as `euid`, refuses the node's key file at start-up, or None.

    In its order: the metadata (`key_insecurity`), the key's directory (`path_is_secure`), opening
    it as `euid`, and its length.
    """
    info = access.stat(node, KEY_FILE)
    if info is None:
        return key_insecurity(None, euid, why=_lookup_error(access, node))
    problem = key_insecurity(info, euid, symlink=is_symlink(access, node, KEY_FILE))
    if problem is None:
        dir_problem = path_insecurity(access, node, posixpath.dirname(KEY_FILE), euid)
        problem = None if dir_problem is None else f"Keyfile is insecure: {dir_problem}"
    if problem is not None:
        return problem
    # It is the owner's (checked above), so the owner's read bit decides; root reads anything.
    if euid != 0 and not info.mode & statmod.S_IRUSR:
        return f'Failed to open keyfile "{KEY_FILE}": {os.strerror(errno.EACCES)}'
    key = access.read(node, KEY_FILE)
    if key is None:
        return f'Failed to read keyfile "{KEY_FILE}": {os.strerror(errno.EFBIG)}'
    if len(key) < KEY_LEN_MIN_BYTES:
        return f"Keyfile must be at least {KEY_LEN_MIN_BYTES} bytes"
    return None


def _lookup_error(access: NodeAccess, node: str) -> str:
    # What stat(2) would say of a key path it cannot follow (a symlink loop, a file as a directory).
    try:
        access.resolve(node, KEY_FILE)
    except NodeFileError as e:
        return os.strerror(e.errno or errno.ENOENT)
    return os.strerror(errno.ENOENT)


def _log_line(time_s: int, level: str, text: str) -> str:
    stamp = datetime.fromtimestamp(time_s, UTC).strftime("%Y-%m-%d %H:%M:%S +0000")
    return f"{stamp} {level + ':':<11}{text}"


@dataclass(frozen=True)
class MungedFacts(DaemonFacts):
    """The key a running munged read at its start: it signs and checks credentials with that one."""

    key_sha256: str


class MungedHost(Protocol):
    """What munged's start-up asks of the cluster: the node's files, its address, the time."""

    access: NodeAccess
    network: Network
    clocks: NodeClocks


def launch(host: MungedHost, node: str, unit: UnitFile) -> Launch:
    """Start munged as its unit's User= would (daemon mode: only errors reach stderr and the journal)."""
    euid, egid = lookup_ids(host.access, node, unit.user)
    now = host.clocks.now_s
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
    problem = key_problem(host.access, node, euid)
    if problem is not None:
        return fail(problem)
    key = host.access.read(node, KEY_FILE) or b""
    steps += [
        ("Info", "Updating supplementary group mapping every 3600 seconds"),
        ("Info", 'Enabled supplementary group mtime check of "/etc/group"'),
    ]
    result.ok = True
    result.pid_file = PID_FILE
    result.log_lines = [_log_line(now, level, text) for level, text in steps]
    result.facts = MungedFacts(hashlib.sha256(key).hexdigest())
    return result
