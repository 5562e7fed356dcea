"""What `su - alice` and `sudo -i -u alice` mean at the agent's prompt: a shell of that user, stacked.

Typed as the whole command line by root, these open the user's interactive shell on the same node
(`runtime/shell.py`'s JoinedShell), and `exit` there comes back to root's. Anything else (`su -c`,
`su -s SHELL`, a user that does not exist or cannot log in, a line with more on it, a caller who is
not root) is left to the node's real su and sudo, which give their own answers. Which account a name
is comes from the node's own `getent passwd`, so the node's NSS and files decide it, not the host.
"""

from __future__ import annotations

import math
import os
import select
import time
from dataclasses import dataclass

from hpcgym.runtime.init import IO_NULL, IO_PASSED, NodeInit, SpawnFailed, Stdio
from hpcgym.runtime.shell import Account

SU = ("su", "/usr/bin/su", "/bin/su")
SUDO = ("sudo", "/usr/bin/sudo", "/bin/sudo")
# A line with any of these is more than a bare su: the node's bash runs it as typed.
_SHELL_SYNTAX = set(";&|<>()`$\\\n#*?[]{}~!'\"")
# util-linux su 2.37 options that leave "open a shell" as it is.
_SU_LOGIN = ("-", "-l", "--login")
_SU_HARMLESS = ("-m", "-p", "--preserve-environment", "-P", "--pty")
_SUDO_WITH_USER = ("-u", "--user")
LOOKUP_TIMEOUT_S = 2.0
MAX_PASSWD_LINE = 4096
_LOGIN_SHELLS = ("/bin/bash", "/usr/bin/bash", "/bin/sh", "/usr/bin/sh")


@dataclass(frozen=True)
class SwitchUser:
    user: str
    login: bool


def parse_switch_user(command: str) -> SwitchUser | None:
    """The shell `command` asks for, if it is a bare `su`/`sudo -i`/`sudo -s` line; else None."""
    if any(ch in _SHELL_SYNTAX for ch in command):
        return None
    words = command.split()
    if not words:
        return None
    if words[0] in SU:
        return _parse_su(words[1:])
    if words[0] in SUDO:
        return _parse_sudo(words[1:])
    return None


def _parse_su(args: list[str]) -> SwitchUser | None:
    login = False
    users: list[str] = []
    for arg in args:
        if arg in _SU_LOGIN:
            login = True
        elif arg in _SU_HARMLESS:
            continue
        elif arg.startswith("-") or users:
            return None
        else:
            users.append(arg)
    return SwitchUser(users[0] if users else "root", login)


def _parse_sudo(args: list[str]) -> SwitchUser | None:
    user, mode = "root", ""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--login":
            mode = mode or "login"
        elif arg == "--shell":
            mode = mode or "shell"
        elif arg.startswith("--user="):
            user = arg.removeprefix("--user=")
        elif arg in _SUDO_WITH_USER:
            if i + 1 >= len(args):
                return None
            user, i = args[i + 1], i + 1
        elif arg.startswith("-") and not arg.startswith("--") and len(arg) > 1:
            letters = arg[1:]
            for j, letter in enumerate(letters):
                if letter == "i":
                    mode = mode or "login"
                elif letter == "s":
                    mode = mode or "shell"
                elif letter == "u":
                    rest = letters[j + 1 :]
                    if rest:
                        user = rest
                    elif i + 1 < len(args):
                        user, i = args[i + 1], i + 1
                    else:
                        return None
                    break
                else:
                    return None
        else:
            break
        i += 1
    command = args[i:]
    if command:
        # `sudo su - alice`: sudo makes root, then su makes alice.
        return _parse_su(command[1:]) if command[0] in SU and not mode else None
    if not mode or not user:
        return None
    return SwitchUser(user, mode == "login")


def lookup_account(init: NodeInit, name: str, timeout_s: float = LOOKUP_TIMEOUT_S) -> Account | None:
    """`name`'s passwd entry as the node's `getent passwd` gives it; None if it gives none in time.

    Raises:
        InitError: the node's init is gone or silent (infrastructure).
    """
    if not name or name.startswith("-") or len(name) > 256:
        return None
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        try:
            pid = init.spawn(
                "/usr/bin/getent",
                ["getent", "passwd", name],
                {"PATH": "/usr/sbin:/usr/bin", "LANG": "C"},
                stdio=Stdio(IO_NULL, IO_PASSED, IO_NULL),
                fds=[w],
            )
        except SpawnFailed:
            return None
        finally:
            os.close(w)
        data = _read_bounded(r, time.monotonic() + timeout_s)
    finally:
        os.close(r)
    status = init.exit_status(pid)
    if data is None or (status is not None and os.waitstatus_to_exitcode(status) != 0):
        return None
    fields = data.decode("utf-8", "replace").split("\n", 1)[0].split(":")
    if len(fields) != 7 or fields[0] != name:
        return None
    try:
        uid, gid = int(fields[2]), int(fields[3])
    except ValueError:
        return None
    if not (0 <= uid < 1 << 31 and 0 <= gid < 1 << 31) or not fields[5].startswith("/"):
        return None
    return Account(name, uid, gid, fields[5], fields[6])


def can_log_in(account: Account) -> bool:
    """Whether su would give this account an interactive bash (not nologin, false or another shell)."""
    return account.shell in _LOGIN_SHELLS


def _read_bounded(fd: int, deadline: float) -> bytes | None:
    """Read `fd` to its end, at most MAX_PASSWD_LINE bytes, before `deadline`; None past it."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_PASSWD_LINE:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(math.ceil(left * 1000)):
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)[:MAX_PASSWD_LINE]
