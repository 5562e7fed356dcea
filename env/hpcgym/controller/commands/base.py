"""What every tool module shares: the request context, the reply, and Slurm's `%` format strings.

A tool module is a function `run(ctx, args) -> Reply`; `Controller` owns the one table that maps a
program name to it. Format strings follow Slurm's `_parse_format`: `%[.][width]X`, where `.` right-
justifies, a width pads and truncates, and text between fields is printed as is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpcgym.controller.numbers import is_digits, to_int
from hpcgym.controller.slurmctld import SlurmState

if TYPE_CHECKING:
    from hpcgym.controller.services import ServiceManager
from hpcgym.controller.rpc import AUTH_ERROR, CONTROLLER_DOWN, User

SLURM_VERSION = "22.05.8"
MUNGE_SOCKET = "/run/munge/munge.socket.2"


@dataclass(frozen=True)
class ToolReply:
    """What the stub prints and its exit code."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0


@dataclass(frozen=True)
class TaskRequest:
    """One srun task to run on a node: the runtime executes it in that node's sandbox."""

    node: str
    argv: list[str]
    env: dict[str, str]
    cwd: str


@dataclass(frozen=True)
class TaskResult:
    """A task's output; `run_for_s` > 0 keeps the job running that long (a backgrounded srun).

    `timed_out` says the runner stopped the task at its own host-side bound (wall time the
    controller cannot spend on one step): the task had not ended, so neither has its job, and
    `exit_code` is only the runner's kill.
    """

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    run_for_s: int = 0
    timed_out: bool = False


TaskRunner = Callable[[TaskRequest], TaskResult]
FileReader = Callable[[str, str], bytes | None]


@dataclass
class Context:
    """One request: who asks (node, user, cwd) and the cluster it acts on."""

    slurm: SlurmState
    node: str
    cwd: str
    user: User
    users: dict[str, User]
    # The episode's services: systemd units and journals, network, clocks, hardware, munge, ...
    services: ServiceManager
    run_task: TaskRunner | None = None
    read_file: FileReader | None = None
    stdin: str | None = None

    @property
    def now_s(self) -> int:
        return self.slurm.now_s

    @property
    def local_now_s(self) -> int:
        """What this node's own clock reads: the episode's clock plus the node's skew, if any."""
        return self.services.clocks.node_now_s(self.node)

    def find_user(self, name_or_uid: str) -> User | None:
        """Look a user up as getpwnam/getpwuid would on the calling node.

        The node's own /etc/passwd decides when the runtime lets the controller read it (so a user
        the agent adds with useradd exists, as on a real node); otherwise the controller's users do.
        """
        passwd = self.read_file(self.node, "/etc/passwd") if self.read_file else None
        if passwd is None:
            candidates = list(self.users.values())
        else:
            candidates = _parse_passwd(passwd.decode(errors="replace"))
        for user in candidates:
            if user.name == name_or_uid or user.uid == to_int(name_or_uid):
                return user
        return None


# slurmctld's answers to a caller who may not (ESLURM_USER_ID_MISSING, ESLURM_ACCESS_DENIED), and
# what a client exits with for the second: the Slurm errno cut to 8 bits (2002 & 0xff).
INVALID_USER = "Invalid user id"
ACCESS_DENIED = "Access/permission denied"
ACCESS_DENIED_EXIT = 210


def is_super_user(ctx: Context) -> bool:
    """Whether the caller passes slurmctld's validate_super_user: root or SlurmUser (no AdminLevel)."""
    return ctx.user.uid == 0 or ctx.user.name == ctx.slurm.slurm_user


def may_act_on(ctx: Context, job_user: str) -> bool:
    """Whether the caller may signal, hold or change a job of `job_user`: its owner or an operator."""
    return is_super_user(ctx) or job_user == ctx.user.name


def _parse_passwd(text: str) -> list[User]:
    users = []
    for line in text.splitlines():
        fields = line.split(":")
        uid, gid = (to_int(field) for field in fields[2:4]) if len(fields) >= 4 else (None, None)
        if uid is not None and gid is not None:
            users.append(User(fields[0], uid, fields[0], gid))
    return users


@dataclass(frozen=True)
class RpcFailure:
    """Why a client's request to slurmctld failed: lines printed first, then Slurm's errno text."""

    preamble: str
    error: str


def check_rpc(ctx: Context, prog: str, rpc: str) -> RpcFailure | None:
    """Whether `prog` on this node can reach slurmctld with `rpc` (e.g. REQUEST_JOB_INFO).

    Without munged the client cannot sign the request and says so before the RPC's own error; a
    stopped slurmctld fails the connection. Texts as Slurm 21.08/22.05 clients print them.
    """
    if ctx.node in ctx.slurm.munge_down:
        return RpcFailure(
            f"{prog}: error: If munged is up, restart with --num-threads=10\n"
            f'{prog}: error: Munge encode failed: Failed to access "{MUNGE_SOCKET}": '
            "No such file or directory (Did you start munged?)\n"
            f"{prog}: error: slurm_send_node_msg: auth_g_create: {rpc} has authentication error\n",
            AUTH_ERROR,
        )
    if not ctx.slurm.slurmctld_up or ctx.node in ctx.slurm.controller_unreachable:
        return RpcFailure("", CONTROLLER_DOWN)
    return None


@dataclass(frozen=True)
class Field:
    """One `%X` field of a format string, with the literal text that follows it."""

    letter: str
    width: int
    right: bool
    suffix: str

    @property
    def sized_by_values(self) -> bool:
        """`%#P`: the tool sizes this column to its longest value."""
        return self.width == AUTO_WIDTH


AUTO_WIDTH = -1
# Slurm reads a width into a C int and pads into a stack buffer of that size, so a huge one prints
# gigabytes or crashes the tool; no terminal needs more than this, and the agent's reply stays small.
MAX_FIELD_WIDTH = 1024
# A row is cut here however many fields and values it has (`%E%E%E...` over a long drain reason).
MAX_LINE_CHARS = 64 * 1024
_TOKEN = re.compile(r"%(\.)?(#|[0-9]*)(.)")


def parse_format(text: str) -> tuple[str, list[Field]]:
    """Split a Slurm format string into its leading text and fields."""
    matches = list(_TOKEN.finditer(text))
    prefix = text[: matches[0].start()] if matches else text
    fields = []
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        digits = match.group(2)
        width = AUTO_WIDTH if digits == "#" else _field_width(digits)
        fields.append(Field(match.group(3), width, bool(match.group(1)), text[match.end() : end]))
    return prefix, fields


def _field_width(digits: str) -> int:
    if not digits:
        return 0
    value = to_int(digits)
    return MAX_FIELD_WIDTH if value is None else min(value, MAX_FIELD_WIDTH)


_ATOI = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")


def atoi_width(text: str) -> int:
    """The width after a `%` in sacct's -o or sacctmgr's format=, read as their atoi() reads it.

    Leading blanks, a sign and ASCII digits; 0 where there are none (`%x`, `%²`: the tool keeps
    the column's default width). The value is capped at MAX_FIELD_WIDTH either way: the real tool
    puts it in a C int (4000000000 wraps) and pads to it, and a width of billions here would build
    strings of gigabytes on the host.
    """
    match = _ATOI.match(text)
    if match is None:
        return 0
    value = to_int(match.group(2))
    value = MAX_FIELD_WIDTH if value is None else min(value, MAX_FIELD_WIDTH)
    return -value if match.group(1) == "-" else value


def join_cells(cells: list[str]) -> str:
    """A table row of already padded cells, cut at MAX_LINE_CHARS (`-o jobid%1000,jobid%1000,...`)."""
    parts, size = [], 0
    for cell in cells:
        parts.append(cell)
        size += len(cell)
        if size > MAX_LINE_CHARS:
            break
    return "".join(parts)[:MAX_LINE_CHARS] + "\n"


def pad(value: str, width: int, right: bool, *, cut: bool = True) -> str:
    """Slurm's `_print_str`: a width pads and (with `cut`) truncates; width 0 prints the value as is."""
    if width <= 0:
        return value
    if cut:
        value = value[:width]
    return value.rjust(width) if right else value.ljust(width)


def render_line(prefix: str, fields: list[Field], values: list[str], uncut: str = "") -> str:
    """One output row; fields whose letter is in `uncut` overflow their width instead of truncating."""
    parts, size = [prefix], len(prefix)
    for spec, value in zip(fields, values, strict=True):
        parts.append(pad(value, spec.width, spec.right, cut=spec.letter not in uncut) + spec.suffix)
        size += len(parts[-1])
        if size > MAX_LINE_CHARS:
            break
    return "".join(parts)[:MAX_LINE_CHARS] + "\n"


def parse_long_format(
    prog: str, kind: str, spec: str, letters: dict[str, str], headers: dict[str, str]
) -> tuple[list[Field], list[str], str]:
    """Parse `-O name[:[.]width],...` into fields, their headers, and error lines for unknown names.

    Slurm reports an unknown name with `error()` and goes on, so the rest of the format still prints.
    """
    fields, titles, errors = [], [], ""
    for item in spec.split(","):
        name, _, size = item.partition(":")
        letter = letters.get(name.lower())
        if letter is None:
            errors += f"{prog}: error: Invalid {kind} format specification: {name}\n"
            continue
        digits = size.lstrip(".")
        width = _field_width(digits) if is_digits(digits) else 20
        fields.append(Field(letter, width, size.startswith("."), ""))
        titles.append(headers.get(letter, name.upper()))
    return fields, titles, errors
