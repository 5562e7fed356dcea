"""sacct: job records from slurmdbd (controller/accounting.py), in sacct's own table.

With AccountingStorageType=accounting_storage/none real sacct checks the storage plugin first and
prints one line (captures */sacct*.out, 90-help-usage/sacct_--help_head_-20). With slurmdbd it asks
slurmdbd over its persistent connection; while slurmdbd does not listen the client logs the three
errors of slurm_persist_conn_open and exits 1. The table follows sacct's print_fields: a field with
a negative width is left-justified, a value longer than its width is cut with a '+', every field is
followed by one space (so lines end in one), and -p/-P print `|`-separated values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hpcgym.controller.accounting import DBD_PORT, SLURMDBD_STORAGE, JobRecord
from hpcgym.controller.commands.base import Context, ToolReply, atoi_width, join_cells
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import Prologue, slurm_hint
from hpcgym.controller.numbers import to_int
from hpcgym.controller.timefmt import format_duration, format_iso, parse_begin_time

PROG = "sacct"
DISABLED = "Slurm accounting storage is disabled\n"
DEFAULT_FIELDS = "jobid,jobname,partition,account,alloccpus,state,exitcode"
OPTIONS = (
    Option("allusers", "a", "allusers"),
    Option("accounts", "A", "accounts", Arg.REQUIRED),
    Option("brief", "b", "brief"),
    Option("endtime", "E", "endtime", Arg.REQUIRED),
    Option("format", "o", "format", Arg.REQUIRED),
    Option("help", "h", "help"),
    Option("jobs", "j", "jobs", Arg.REQUIRED),
    Option("long", "l", "long"),
    Option("noheader", "n", "noheader"),
    Option("parsable", "p", "parsable"),
    Option("parsable2", "P", "parsable2"),
    Option("partition", "r", "partition", Arg.REQUIRED),
    Option("state", "s", "state", Arg.REQUIRED),
    Option("starttime", "S", "starttime", Arg.REQUIRED),
    Option("user", "u", "user", Arg.REQUIRED),
    Option("uid", None, "uid", Arg.REQUIRED),
    Option("allocations", "X", "allocations"),
    Option("usage", None, "usage"),
    Option("version", "V", "version"),
    Option("helpformat", "e", "helpformat"),
)
# Only -V is answered first; --help and --usage are not modelled (they list jobs as plain sacct does).
PROLOGUE = Prologue(
    PROG, OPTIONS, answers=(("version", ToolReply("slurm 22.05.8\n")),), hint=slurm_hint(PROG)
)


@dataclass(frozen=True)
class Row:
    """One line of sacct: the job itself or one of its steps (batch, extern)."""

    record: JobRecord
    step: str = ""

    @property
    def job_id(self) -> str:
        return f"{self.record.job_id}.{self.step}" if self.step else str(self.record.job_id)


def _state(row: Row) -> str:
    state = row.record.state
    if row.step == "extern" and state not in ("RUNNING",):
        return "COMPLETED"
    if state == "CANCELLED" and not row.step:
        return "CANCELLED by 0"
    return state


def _exit(row: Row) -> str:
    if row.step == "extern":
        return "0:0"
    return f"{row.record.exit_code}:{row.record.exit_signal}"


def _elapsed(row: Row, now_s: int) -> str:
    start = row.record.start_s
    if start is None:
        return "00:00:00"
    end = row.record.end_s if row.record.end_s is not None else now_s
    return format_duration(max(0, end - start), always_hours=True)


def _limit(row: Row) -> str:
    if row.step:
        return ""
    limit = row.record.time_limit_min
    return "UNLIMITED" if limit is None else format_duration(limit * 60, always_hours=True)


Getter = Callable[[Row, int], str]
# name -> (header, width, value); negative widths are left-justified (sacct.c's fields[]).
FIELDS: dict[str, tuple[str, int, Getter]] = {
    "account": ("Account", 10, lambda r, n: r.record.account),
    "alloccpus": ("AllocCPUS", 10, lambda r, n: str(r.record.alloc_cpus)),
    "allocnodes": ("AllocNodes", 10, lambda r, n: str(r.record.nnodes)),
    "cluster": ("Cluster", 10, lambda r, n: "hpc"),
    "elapsed": ("Elapsed", 10, _elapsed),
    "end": ("End", 19, lambda r, n: format_iso(r.record.end_s)),
    "exitcode": ("ExitCode", 8, lambda r, n: _exit(r)),
    "gid": ("GID", 6, lambda r, n: "" if r.step else str(r.record.gid)),
    "group": ("Group", 9, lambda r, n: "" if r.step else r.record.group),
    "jobid": ("JobID", -12, lambda r, n: r.job_id),
    "jobidraw": ("JobIDRaw", -12, lambda r, n: r.job_id),
    "jobname": ("JobName", 10, lambda r, n: r.step or r.record.name),
    "ncpus": ("NCPUS", 10, lambda r, n: str(r.record.alloc_cpus)),
    "nnodes": ("NNodes", 8, lambda r, n: str(r.record.nnodes)),
    "nodelist": ("NodeList", -15, lambda r, n: r.record.node_list),
    "partition": ("Partition", 10, lambda r, n: "" if r.step else r.record.partition),
    "start": ("Start", 19, lambda r, n: format_iso(r.record.start_s)),
    "state": ("State", 10, lambda r, n: _state(r)),
    "submit": ("Submit", 19, lambda r, n: format_iso(r.record.submit_s)),
    "timelimit": ("Timelimit", 10, lambda r, n: _limit(r)),
    "uid": ("UID", 6, lambda r, n: "" if r.step else str(r.record.uid)),
    "user": ("User", 9, lambda r, n: "" if r.step else r.record.user),
}
_STATE_CODES = {
    "ca": "CANCELLED", "cd": "COMPLETED", "f": "FAILED", "nf": "NODE_FAIL", "pd": "PENDING",
    "r": "RUNNING", "to": "TIMEOUT", "oom": "OUT_OF_MEMORY", "dl": "DEADLINE", "pr": "PREEMPTED",
}  # fmt: skip


def connection_errors(prog: str, host: str) -> str:
    """What a client prints when slurmdbd refuses its persistent connection (slurm_persist_conn.c)."""
    return (
        f"{prog}: error: slurm_persist_conn_open_without_init: failed to open persistent connection to "
        f"host:{host}:{DBD_PORT}: Connection refused\n"
        f"{prog}: error: Sending PersistInit msg: Connection refused\n"
        f"{prog}: error: Problem talking to the database: Connection refused\n"
    )


def dbd_host(ctx: Context) -> str:
    conf = ctx.slurm.conf
    return conf.options.get("accountingstoragehost", conf.controller_host)


def is_enabled(ctx: Context) -> bool:
    return ctx.slurm.conf.options.get("accountingstoragetype", "") == SLURMDBD_STORAGE


def run(ctx: Context, args: list[str]) -> ToolReply:
    if not is_enabled(ctx):
        return ToolReply("", DISABLED, 1)
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    keys, values = parsed.keys, parsed.values
    if "helpformat" in keys:
        names = sorted(header for header, _, _ in FIELDS.values())
        return ToolReply(
            "".join(f"{name:<20}" + ("\n" if i % 4 == 3 else "") for i, name in enumerate(names)) + "\n"
        )
    if not ctx.slurm.accounting.serving:
        return ToolReply("", connection_errors(PROG, dbd_host(ctx)), 1)
    fields, bad = _fields(values.get("format", DEFAULT_FIELDS))
    if bad:
        return ToolReply("", bad, 1)
    try:
        rows = _select(ctx, keys, values)
    except ValueError:
        return ToolReply("", f"{PROG}: error: Invalid time specification\n", 1)
    now = ctx.now_s
    parsable = "parsable" in keys or "parsable2" in keys
    out = []
    if "noheader" not in keys:
        headers = [header for header, _, _ in fields]
        if parsable:
            out.append(_join(headers, "parsable" in keys))
        else:
            out.append(join_cells([_cell(h, w, cut=False) for h, w, _ in fields]))
            out.append(join_cells(["-" * abs(w) + " " for _, w, _ in fields]))
    for row in rows:
        cells = [get(row, now) for _, _, get in fields]
        if parsable:
            out.append(_join(cells, "parsable" in keys))
        else:
            out.append(join_cells([_cell(c, w) for c, (_, w, _) in zip(cells, fields, strict=True)]))
    return ToolReply("".join(out))


def _join(cells: list[str], trailing: bool) -> str:
    return "|".join(cells) + ("|" if trailing else "") + "\n"


def _cell(value: str, width: int, *, cut: bool = True) -> str:
    size = abs(width)
    if cut and len(value) > size:
        value = value[: size - 1] + "+"
    return (value.ljust(size) if width < 0 else value.rjust(size)) + " "


def _fields(spec: str) -> tuple[list[tuple[str, int, Getter]], str]:
    fields = []
    for item in filter(None, spec.split(",")):
        name, _, size = item.partition("%")
        entry = FIELDS.get(name.lower())
        if entry is None:
            return [], f'{PROG}: error: Invalid field requested: "{name}"\n'
        header, width, get = entry
        # sacct's `if (newlen) fields[i].len = newlen;` after atoi(): a minus left-justifies.
        number = atoi_width(size)
        if number < 0:
            width = number
        elif number > 0:
            width = -number if width < 0 else number
        fields.append((header, width, get))
    return fields, ""


def _select(ctx: Context, keys: set[str], values: dict[str, str]) -> list[Row]:
    acct = ctx.slurm.accounting
    now = ctx.local_now_s
    jobs = {to_int(j.split(".")[0]) for j in values["jobs"].split(",")} if "jobs" in values else None
    if "starttime" in values:
        # sacct parses a bare time of day as one already past (parse_time's `past`): today's.
        start = parse_begin_time(values["starttime"], now)
        start -= 86400 if start > now else 0
    elif jobs is not None:
        start = 0
    else:
        start = now - now % 86400  # midnight today, as sacct defaults without -j
    end = parse_begin_time(values["endtime"], now) if "endtime" in values else now
    users = set(values["user"].split(",")) if "user" in values else None
    if users is None and ctx.user.uid != 0 and "allusers" not in keys:
        users = {ctx.user.name}
    accounts = set(values["accounts"].split(",")) if "accounts" in values else None
    states = (
        {_STATE_CODES.get(s.lower(), s.upper()) for s in values["state"].split(",")}
        if "state" in values
        else None
    )
    partitions = set(values["partition"].split(",")) if "partition" in values else None
    rows: list[Row] = []
    for record in sorted(acct.records.values(), key=lambda r: (r.submit_s, r.job_id)):
        if jobs is not None and record.job_id not in jobs:
            continue
        if users is not None and record.user not in users:
            continue
        if accounts is not None and record.account not in accounts:
            continue
        if partitions is not None and record.partition not in partitions:
            continue
        if states is not None and record.state not in states:
            continue
        began = record.start_s if record.start_s is not None else record.submit_s
        if began > end or (record.end_s is not None and record.end_s < start):
            continue
        rows.append(Row(record))
        if "allocations" not in keys and record.start_s is not None:
            if record.batch:
                rows.append(Row(record, "batch"))
            rows.append(Row(record, "extern"))
    return rows
