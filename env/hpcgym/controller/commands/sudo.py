"""`sudo` for root on a node (sudo 1.9, as Rocky 9 ships it): run a command as another user.

Every shell of the agent is root's, so this is what an operator uses sudo for: `sudo -u alice cmd`
(or `-i` for her login shell) to see what a user sees, and `sudo -l`. The command runs for real in
the node, as the user, through runuser(1) in the node's own root (the srun task runner), with the
environment sudoers' env_reset leaves: secure_path, the target's HOME (always_set_home), and the
SUDO_* variables. `sudo -l` prints the node's /etc/sudoers Defaults and root's rules in sudo's
layout (items wrapped at 80 columns under a 4-space indent). Messages match Debian's sudo 1.9.13
(unknown user, command not found, usage). `sudo -i`/`-s` without a command, typed as the whole line,
never gets here: the cluster opens the user's shell itself (`runtime/su.py`); inside a longer line it
gets an empty stdin and returns at once.
"""

from __future__ import annotations

import posixpath
import re
import shlex

from hpcgym.controller.commands.base import Context, TaskRequest, ToolReply
from hpcgym.controller.commands.usage import read_help

SUDOERS = "/etc/sudoers"
DEFAULT_SECURE_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"
RUNUSER = "/usr/sbin/runuser"
USAGE = read_help("sudo-usage.txt")
VERSION = "Sudo version 1.9.5p2\n"
AUDIT_FAILED = "sudo: error initializing audit plugin sudoers_audit\n"
PASSWORD_REQUIRED = (
    "sudo: a terminal is required to read the password; either use the -S option to read from "
    "standard input or configure an askpass helper\nsudo: a password is required\n"
)
WIDTH = 80
# /etc/sudoers is the node's (hostile) and sudo runs under the controller's lock: at most this many
# of its lines are read (Rocky's is 120), and secure_path is searched in its first MAX_PATH_ENTRIES
# directories only (a real PATH has under 10; a million ":/x" would be a million stat calls).
MAX_SUDOERS_LINES = 1024
MAX_PATH_ENTRIES = 64
_WITH_ARG = set("ugCDhpRrTtU")
_FLAGS = set("ABbEHiKklNnPSsVv")


def run(ctx: Context, args: list[str]) -> ToolReply:
    options: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            letter = {"user": "u", "list": "l", "login": "i", "shell": "s", "version": "V"}.get(name)
            if letter is None:
                return ToolReply("", f"sudo: unrecognized option '{arg}'\n{USAGE}", 1)
            if letter == "u" and not value:
                i += 1
                value = args[i] if i < len(args) else ""
            options[letter] = value
            i += 1
            continue
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter in _WITH_ARG:
                value = arg[j + 1 :]
                if not value:
                    i += 1
                    if i >= len(args):
                        return ToolReply("", f"sudo: option requires an argument -- '{letter}'\n{USAGE}", 1)
                    value = args[i]
                options[letter] = value
                break
            if letter not in _FLAGS:
                return ToolReply("", f"sudo: invalid option -- '{letter}'\n{USAGE}", 1)
            options[letter] = ""
            j += 1
        i += 1
    command = args[i:]
    if "V" in options:
        return ToolReply(VERSION)
    if "k" in options or "K" in options:
        return ToolReply()
    if ctx.user.uid != 0:
        # A user with no NOPASSWD rule (Rocky's sudoers gives her none) must type her password,
        # and a tool's stdin here is no terminal.
        return ToolReply("", PASSWORD_REQUIRED, 1)
    sudoers = _read_sudoers(ctx)
    if "l" in options:
        if command:
            return _list_command(ctx, sudoers, command)
        return ToolReply(_list(ctx, sudoers))
    if not command and "i" not in options and "s" not in options:
        return ToolReply("", USAGE, 1)
    user = options.get("u", "root")
    account = _account(ctx, user)
    if account is None:
        return ToolReply("", f"sudo: unknown user {user}\n{AUDIT_FAILED}", 1)
    home, shell = account
    secure_path = _secure_path(sudoers)
    if command and "i" not in options and "s" not in options and _find(ctx, command[0], secure_path) is None:
        return ToolReply("", f"sudo: {command[0]}: command not found\n", 1)
    if ctx.run_task is None:
        return ToolReply("", "sudo: unable to execute: no task runner\n", 1)
    env = {
        "PATH": secure_path,
        "HOME": home,
        "SHELL": shell,
        "USER": user,
        "LOGNAME": user,
        "SUDO_USER": ctx.user.name,
        "SUDO_UID": str(ctx.user.uid),
        "SUDO_GID": str(ctx.user.gid),
        "SUDO_COMMAND": " ".join(command) if command else shell,
    }
    if "i" in options:
        argv = [RUNUSER, "-l", user, *(["-c", shlex.join(command)] if command else [])]
        cwd = home
    elif "s" in options:
        argv = [RUNUSER, "-u", user, "--", shell, *(["-c", shlex.join(command)] if command else [])]
        cwd = ctx.cwd
    else:
        argv = [RUNUSER, "-u", user, "--", *command]
        cwd = ctx.cwd
    done = ctx.run_task(TaskRequest(ctx.node, argv, env, cwd))
    return ToolReply(done.stdout, done.stderr, done.exit_code)


def _read_sudoers(ctx: Context) -> list[str]:
    if ctx.read_file is None:
        return []
    raw = ctx.read_file(ctx.node, SUDOERS) or b""
    lines, pending = [], ""
    for line in raw.decode(errors="replace").splitlines()[:MAX_SUDOERS_LINES]:
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _defaults(sudoers: list[str]) -> list[str]:
    items: list[str] = []
    for line in sudoers:
        if not re.match(r"Defaults\s", line):
            continue
        body = line.split(None, 1)[1].strip()
        found = re.match(r"(!?\w+)\s*(\+=|-=|=)?\s*(.*)$", body)
        if found is None:
            continue
        name, op, value = found[1], found[2], found[3].strip()
        if not op:
            items += [item.strip() for item in body.split(",") if item.strip()]
        elif value.startswith('"'):
            items.append(f"{name}{op}{value}")
        else:
            items.append(f"{name}{op}{value.replace(':', chr(92) + ':')}")
    return items


def _secure_path(sudoers: list[str]) -> str:
    for item in _defaults(sudoers):
        if item.startswith("secure_path="):
            entries = item.split("=", 1)[1].replace("\\:", ":").split(":")
            return ":".join(entries[:MAX_PATH_ENTRIES])
    return DEFAULT_SECURE_PATH


def _wrap(items: list[str]) -> str:
    lines, line = [], "   "
    for index, item in enumerate(items):
        piece = item + ("," if index < len(items) - 1 else "")
        if len(line) + 1 + len(piece) > WIDTH and line.strip():
            lines.append(line)
            line = "   "
        line += " " + piece
    lines.append(line)
    return "".join(f"{text}\n" for text in lines)


def _root_rules(sudoers: list[str]) -> list[str]:
    rules = []
    for line in sudoers:
        found = re.match(r"root\s+\S+\s*=\s*(\([^)]*\))?\s*(.*)$", line)
        if found:
            runas = found[1] or "(root)"
            rules.append(f"{runas.replace(' ', '')} {found[2].strip()}".replace(":", " : "))
    return rules


def _list(ctx: Context, sudoers: list[str]) -> str:
    host = ctx.node.split(".")[0]
    text = f"Matching Defaults entries for root on {host}:\n" + _wrap(_defaults(sudoers))
    text += f"\nUser root may run the following commands on {host}:\n"
    return text + "".join(f"    {rule}\n" for rule in _root_rules(sudoers))


def _list_command(ctx: Context, sudoers: list[str], command: list[str]) -> ToolReply:
    path = _find(ctx, command[0], _secure_path(sudoers))
    if path is None:
        return ToolReply("", f"sudo: {command[0]}: command not found\n", 1)
    return ToolReply(" ".join([path, *command[1:]]) + "\n")


def _account(ctx: Context, user: str) -> tuple[str, str] | None:
    if ctx.read_file is None:
        return None
    raw = ctx.read_file(ctx.node, "/etc/passwd") or b""
    for line in raw.decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 7 and (fields[0] == user or (user.startswith("#") and fields[2] == user[1:])):
            return fields[5], fields[6]
    return None


def _find(ctx: Context, name: str, path: str) -> str | None:
    services = ctx.services
    entries = path.split(":")[:MAX_PATH_ENTRIES]
    candidates = [name] if "/" in name else [posixpath.join(d, name) for d in entries if d]
    for candidate in candidates:
        full = candidate if candidate.startswith("/") else posixpath.join(ctx.cwd, candidate)
        found = services.access.stat(ctx.node, full)
        if found is not None and found.is_file() and found.mode & 0o111:
            return full
    return None
