"""squeue: the job queue (captures */squeue*.out).

Without -t or -j it shows jobs that are pending, running, suspended or completing, sorted as Slurm's
default `P,t,-p` (partition, state, then priority high to low); pending rows print their reason in
parentheses where running rows print their nodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from hpcgym.controller.arrays import NO_TASK, is_meta, label, task_field
from hpcgym.controller.commands import usage
from hpcgym.controller.commands.base import (
    Context,
    ToolReply,
    check_rpc,
    parse_format,
    parse_long_format,
    render_line,
)
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import SLURM_VERSION_REPLY, Prologue, slurm_hint
from hpcgym.controller.hostlist import compress_hostlist, expand_names
from hpcgym.controller.numbers import to_int
from hpcgym.controller.state import SQUEUE_STATE_NAMES, Job, JobState, Step
from hpcgym.controller.timefmt import format_ctime, format_duration, format_iso

MAX_JOB_ID = 2**31 - 1
# squeue prints a time limit longer than this as INVALID (YEAR_SECONDS in print.c).
YEAR_S = 365 * 24 * 3600

OPTIONS = (
    Option("account", "A", "account", Arg.REQUIRED),
    Option("all", "a", "all"),
    Option("array", "r", "array"),
    Option("noheader", "h", "noheader"),
    Option("iterate", "i", "iterate", Arg.REQUIRED),
    Option("jobs", "j", "jobs", Arg.REQUIRED),
    Option("long", "l", "long"),
    Option("licenses", "L", "licenses", Arg.REQUIRED),
    Option("clusters", "M", "clusters", Arg.REQUIRED),
    Option("name", "n", "name", Arg.REQUIRED),
    Option("format", "o", "format", Arg.REQUIRED),
    Option("Format", "O", "Format", Arg.REQUIRED),
    Option("partition", "p", "partition", Arg.REQUIRED),
    Option("priority", "P", "priority"),
    Option("qos", "q", "qos", Arg.REQUIRED),
    Option("reservation", "R", "reservation", Arg.REQUIRED),
    Option("steps", "s", "steps", Arg.OPTIONAL),
    Option("sort", "S", "sort", Arg.REQUIRED),
    Option("states", "t", "states", Arg.REQUIRED),
    Option("user", "u", "user", Arg.REQUIRED),
    Option("verbose", "v", "verbose"),
    Option("version", "V", "version"),
    Option("nodelist", "w", "nodelist", Arg.REQUIRED),
    Option("me", None, "me"),
    Option("start", None, "start"),
    Option("help", None, "help"),
    Option("usage", None, "usage"),
    Option("noconvert", None, "noconvert"),
    Option("local", None, "local"),
    Option("federation", None, "federation"),
    Option("sibling", None, "sibling"),
    Option("json", None, "json", Arg.OPTIONAL),
    Option("yaml", None, "yaml", Arg.OPTIONAL),
)
PROLOGUE = Prologue(
    "squeue",
    OPTIONS,
    answers=(
        ("help", ToolReply(usage.SQUEUE_HELP)),
        ("usage", ToolReply(usage.SQUEUE_USAGE)),
        ("version", SLURM_VERSION_REPLY),
    ),
    hint=slurm_hint("squeue"),
)

DEFAULT_FORMAT = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R"
LONG_FORMAT = "%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R"
START_FORMAT = "%.18i %.9P %.8j %.8u %.2t %.19S %.6D %20Y %R"
STEP_FORMAT = "%.15i %.8j %.9P %.8u %.9M %N"

# squeue -O names -> the equivalent -o letter.
_LONG_FIELDS = {
    "jobid": "i",
    "jobarrayid": "i",
    "arrayjobid": "F",
    "arraytaskid": "K",
    "name": "j",
    "username": "u",
    "statecompact": "t",
    "state": "T",
    "timeused": "M",
    "timelimit": "l",
    "timeleft": "L",
    "numnodes": "D",
    "reasonlist": "R",
    "reason": "r",
    "nodelist": "N",
    "partition": "P",
    "starttime": "S",
    "endtime": "e",
    "submittime": "V",
    "schednodes": "Y",
    "numcpus": "C",
    "priority": "Q",
    "workdir": "Z",
    "command": "o",
    "userid": "U",
    "groupname": "g",
    "groupid": "G",
    "account": "a",
    "qos": "q",
    "batchhost": "B",
    "dependency": "E",
    "reqnodes": "n",
    "excnodes": "x",
    "licenses": "W",
    "reservation": "v",
}


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    flags, values = parsed.keys, parsed.values
    failure = _rpc_failure(ctx, flags)
    if failure is not None:
        return failure
    selection = _parse_selection(ctx, flags, values)
    if isinstance(selection, ToolReply):
        return selection
    selected = _select_jobs(ctx, selection, flags, values)
    if "steps" in flags:
        return _steps(ctx, selected, "noheader" in flags, selection.stderr)
    _order(ctx, selected, flags, values)
    return _render(ctx, selected, flags, values, selection.stderr)


@dataclass
class _Selection:
    """What -j, -t and -u/--me asked for (None where not given), and the errors -u printed."""

    job_ids: list[int] | None
    array_tasks: set[tuple[int, int]]
    states: set[str] | None
    users: set[str] | None
    stderr: str


def _rpc_failure(ctx: Context, flags: set[str]) -> ToolReply | None:
    failure = check_rpc(ctx, "squeue", "REQUEST_JOB_STEP_INFO" if "steps" in flags else "REQUEST_JOB_INFO")
    if not failure:
        return None
    call = "slurm_get_job_steps" if "steps" in flags else "slurm_load_jobs"
    return ToolReply("", f"{failure.preamble}{call} error: {failure.error}\n", 1)


def _parse_selection(ctx: Context, flags: set[str], values: dict[str, str]) -> _Selection | ToolReply:
    """Read -j, -t, -w and -u/--me in squeue's order: the first bad one refuses the whole call."""
    job_ids: list[int] | None = None
    array_tasks: set[tuple[int, int]] = set()
    if "jobs" in values:
        ids = _parse_job_ids(ctx, values["jobs"])
        if isinstance(ids, ToolReply):
            return ids
        job_ids, array_tasks = ids
    states: set[str] | None = None
    if "states" in values:
        parsed_states = _parse_states(values["states"])
        if isinstance(parsed_states, ToolReply):
            return parsed_states
        states = parsed_states
    if "nodelist" in values:
        for name in expand_names(values["nodelist"]):
            if name not in ctx.slurm.nodes:
                return ToolReply("", f"squeue: error: Invalid node name {name}\n", 1)
    users, stderr = _parse_users(ctx, flags, values)
    return _Selection(job_ids, array_tasks, states, users, stderr)


def _parse_job_ids(ctx: Context, spec: str) -> tuple[list[int], set[tuple[int, int]]] | ToolReply:
    cluster = ctx.slurm
    job_ids: list[int] = []
    array_tasks: set[tuple[int, int]] = set()
    for text in spec.split(","):
        # An array task, 1_3: its own record, or the array's while that task still waits.
        base, _, task = text.partition("_")
        if task and to_int(task) is not None and to_int(base) is not None:
            array_tasks.add((to_int(base) or 0, to_int(task) or 0))
            continue
        # The client reads an id as a C int: 0 and 2147483648 up are refused, as real squeue does
        # (it wraps some longer ones into range; here they are all refused).
        job_id = to_int(text)
        if job_id is None or not 0 < job_id <= MAX_JOB_ID:
            return ToolReply("", f"squeue: error: Invalid job id: {text}\n", 1)
        job_ids.append(job_id)
    if (
        len(job_ids) == 1
        and job_ids[0] not in cluster.jobs
        and not _array_ids(cluster.jobs.values(), job_ids)
    ):
        return ToolReply("", "slurm_load_jobs error: Invalid job id specified\n", 1)
    return job_ids, array_tasks


def _parse_states(spec: str) -> set[str] | ToolReply:
    states: set[str] = set()
    for text in spec.upper().split(","):
        known = [s for s in JobState if text in (s.value, s.compact)] or (
            list(JobState) if text == "ALL" else []
        )
        if not known and text not in ("CG", "COMPLETING", "CF", "CONFIGURING"):
            return ToolReply(
                "",
                f"squeue: error: Invalid job state specified: {text}\n"
                f"squeue: error: Valid job states include: {SQUEUE_STATE_NAMES}\n\n",
                1,
            )
        states.update(s.value for s in known)
        if text in ("CG", "COMPLETING"):
            states.add("COMPLETING")
    return states


def _parse_users(ctx: Context, flags: set[str], values: dict[str, str]) -> tuple[set[str] | None, str]:
    """-u names squeue cannot find print an error but do not stop the listing."""
    stderr = ""
    users: set[str] | None = None
    if "user" in values:
        users = set()
        for name in values["user"].split(","):
            user = ctx.find_user(name)
            if user is not None:
                users.add(user.name)
            else:
                stderr += f"squeue: error: Invalid user: {name}\n\n"
    if "me" in flags:
        users = (users or set()) | {ctx.user.name}
    return users, stderr


def _select_jobs(ctx: Context, selection: _Selection, flags: set[str], values: dict[str, str]) -> list[Job]:
    # Array tasks sort under their array's job id, its pending tasks after the started ones.
    jobs = sorted(ctx.slurm.jobs.values(), key=_id_order)
    selected = [job for job in jobs if _keep(job, selection, flags, values)]
    if "array" in flags:
        # -r: one line per pending task of an array too.
        selected = [row for job in selected for row in _array_rows(job)]
    return selected


def _keep(job: Job, selection: _Selection, flags: set[str], values: dict[str, str]) -> bool:
    job_ids = selection.job_ids
    named = job_ids is None or job.job_id in job_ids or job.array_job_id in job_ids
    if not named and not any(
        job.array_job_id == base and task in _tasks(job) for base, task in selection.array_tasks
    ):
        return False
    if selection.states is not None:
        if job.state_long not in selection.states and job.state.value not in selection.states:
            return False
    elif job_ids is None and not job.is_active():
        return False
    if selection.users is not None and job.user not in selection.users:
        return False
    if "partition" in values and job.partition not in values["partition"].split(","):
        return False
    if "name" in values and job.name not in values["name"].split(","):
        return False
    if "nodelist" in values:
        wanted = set(expand_names(values["nodelist"]))
        if not wanted.intersection(job.nodes) or job.state is JobState.PENDING:
            return False
    return not ("start" in flags and job.state is not JobState.PENDING)


def _order(ctx: Context, selected: list[Job], flags: set[str], values: dict[str, str]) -> None:
    """--start lists by expected start, the rest as Slurm's default `P,t,-p`; then any -S keys."""
    if "start" in flags:
        selected.sort(key=lambda j: (_expected_start(j) is None, _expected_start(j) or 0))
    else:
        selected.sort(key=lambda j: (j.partition, _state_rank(j), -j.priority))
    if "sort" in values:
        _sort_by(ctx, selected, values["sort"])


def _render(
    ctx: Context, selected: list[Job], flags: set[str], values: dict[str, str], stderr: str
) -> ToolReply:
    if "Format" in values:
        prefix = ""
        fields, headers, errors = parse_long_format("squeue", "job", values["Format"], _LONG_FIELDS, _HEADERS)
        stderr += errors
    else:
        prefix, fields = parse_format(_format_string(flags, values))
        headers = [_HEADERS.get(f.letter, "") for f in fields]
    out = []
    if "long" in flags:
        out.append(format_ctime(ctx.now_s) + "\n")
    if "noheader" not in flags:
        out.append(render_line(prefix, fields, headers))
    for job in selected:
        out.append(render_line(prefix, fields, [_value(ctx, f.letter, job) for f in fields], UNCUT))
    return ToolReply("".join(out), stderr)


def _format_string(flags: set[str], values: dict[str, str]) -> str:
    if "start" in flags:
        return values.get("format", START_FORMAT)
    return values.get("format", LONG_FORMAT if "long" in flags else DEFAULT_FORMAT)


def _sort_by(ctx: Context, jobs: list[Job], spec: str) -> None:
    # squeue -S: comma-separated keys, `-` for descending; applied last key first so the first wins.
    keys = {
        "i": _id_order,
        "A": lambda j: j.job_id,
        "j": lambda j: j.name,
        "u": lambda j: j.user,
        "P": lambda j: j.partition,
        "t": _state_rank,
        "T": _state_rank,
        "p": lambda j: j.priority,
        "Q": lambda j: j.priority,
        "M": lambda j: _elapsed(ctx, j),
        "D": lambda j: len(j.nodes) or j.min_nodes,
        "l": lambda j: j.time_limit_min if j.time_limit_min is not None else 1 << 40,
        "S": lambda j: _expected_start(j) or 0,
        "V": lambda j: j.submit_s,
        "N": lambda j: compress_hostlist(j.nodes),
    }
    for item in reversed([part for part in spec.split(",") if part]):
        descending = item.startswith("-")
        key = keys.get(item.lstrip("+-"))
        if key is not None:
            jobs.sort(key=key, reverse=descending)


def _id_order(job: Job) -> tuple[int, int]:
    if job.array_job_id is None:
        return (job.job_id, 0)
    return (job.array_job_id, job.array_task_id if job.array_task_id is not None else NO_TASK)


def _tasks(job: Job) -> list[int]:
    return [job.array_task_id] if job.array_task_id is not None else job.array_pending


def _array_ids(jobs: Iterable[Job], job_ids: list[int]) -> bool:
    return any(job.array_job_id in job_ids for job in jobs)


def _array_rows(job: Job) -> list[Job]:
    if not is_meta(job):
        return [job]
    return [replace(job, array_task_id=task, array_pending=[]) for task in job.array_pending]


def _state_rank(job: Job) -> str:
    # squeue sorts states by their names: COMPLETED, COMPLETING, FAILED, NODE_FAIL before PENDING
    # and RUNNING (Debian's 22.05.8: `squeue -t all` listed CD, CD, F, PD, R, R; a CG task came
    # before the pending and running ones of its array).
    return job.state_long


def _expected_start(job: Job) -> int | None:
    if job.state is not JobState.PENDING:
        return job.start_s
    return job.begin_s if job.held is None else None


def _elapsed(ctx: Context, job: Job) -> int:
    if job.start_s is None or job.state is JobState.PENDING:
        return 0
    end = job.end_s if job.end_s is not None else ctx.now_s
    return end - job.start_s


def _time_limit(ctx: Context, job: Job) -> str:
    # _print_job_time_limit(): squeue's `_print_secs`, short like sinfo's (`2:00:00`), and INVALID
    # past a year.
    if job.time_limit_min is None:
        return "UNLIMITED"
    return "INVALID" if job.time_limit_min * 60 > YEAR_S else format_duration(job.time_limit_min * 60)


def _time_left(ctx: Context, job: Job) -> str:
    if job.time_limit_min is None:
        return "UNLIMITED"
    left = job.time_limit_min * 60 - _elapsed(ctx, job)
    return "INVALID" if not 0 <= left <= YEAR_S else format_duration(left)


def _nodes_or_reason(ctx: Context, job: Job) -> str:
    # Pending, failed and timed-out jobs show why, once they are no longer completing.
    shows_reason = job.state in (JobState.PENDING, JobState.FAILED, JobState.TIMEOUT)
    if shows_reason and not job.completing:
        return f"({job.reason_text()})"
    return compress_hostlist(job.nodes)


@dataclass(frozen=True)
class Column:
    """One `%X` field, as a row of the table in Slurm's src/squeue/print.h: its header and its value.

    `whole` fields (times and numbers) overflow their width instead of being cut (TIME_LIMI prints
    "1-00:00:00"). Slurm's default widths live in the default format strings; -O's is 20 for every field.
    """

    letter: str
    header: str
    value: Callable[[Context, Job], str]
    whole: bool = False


def _attr(letter: str, header: str, value: Callable[[Job], str], *, whole: bool = False) -> Column:
    """A field that needs only the job."""
    return Column(letter, header, lambda ctx, job: value(job), whole=whole)


COLUMNS = (
    _attr("i", "JOBID", label, whole=True),
    _attr("A", "JOBID", lambda job: str(job.job_id), whole=True),
    _attr(
        "F", "ARRAY_JOB_ID", lambda job: str(job.array_job_id if job.array_job_id is not None else job.job_id)
    ),
    _attr("K", "ARRAY_TASK_ID", lambda job: task_field(job) if job.array_job_id is not None else "N/A"),
    _attr("j", "NAME", lambda job: job.name),
    _attr("u", "USER", lambda job: job.user),
    _attr("t", "ST", lambda job: job.state_compact),
    _attr("T", "STATE", lambda job: job.state_long),
    Column("M", "TIME", lambda ctx, job: format_duration(_elapsed(ctx, job)), whole=True),
    Column("l", "TIME_LIMIT", _time_limit, whole=True),
    Column("L", "TIME_LEFT", _time_left, whole=True),
    _attr("D", "NODES", lambda job: str(len(job.nodes) if job.nodes else job.min_nodes), whole=True),
    Column("R", "NODELIST(REASON)", _nodes_or_reason),
    _attr("r", "REASON", lambda job: job.reason_text()),
    _attr("N", "NODELIST", lambda job: compress_hostlist(job.nodes)),
    _attr("P", "PARTITION", lambda job: job.partition),
    _attr("S", "START_TIME", lambda job: format_iso(_expected_start(job), none="N/A"), whole=True),
    _attr("e", "END_TIME", lambda job: format_iso(job.end_s, none="N/A"), whole=True),
    _attr("V", "SUBMIT_TIME", lambda job: format_iso(job.submit_s), whole=True),
    _attr("Y", "SCHEDNODES", lambda job: "(null)"),
    _attr("C", "CPUS", lambda job: str(job.cpus), whole=True),
    _attr("Q", "PRIORITY", lambda job: str(job.priority), whole=True),
    _attr("Z", "WORK_DIR", lambda job: job.work_dir),
    _attr("o", "COMMAND", lambda job: job.command or "(null)"),
    _attr("U", "UID", lambda job: str(job.uid), whole=True),
    _attr("g", "GROUP", lambda job: job.group),
    _attr("G", "GID", lambda job: str(job.gid), whole=True),
    _attr("a", "ACCOUNT", lambda job: "(null)"),
    _attr("q", "QOS", lambda job: "(null)"),
    _attr("B", "EXEC_HOST", lambda job: job.batch_host or "n/a"),
    _attr(
        "E", "DEPENDENCY", lambda job: ",".join(f"{kind}:{dep}" for kind, dep in job.dependency) or "(null)"
    ),
    _attr("n", "REQ_NODES", lambda job: compress_hostlist(job.req_nodes)),
    _attr("x", "EXC_NODES", lambda job: compress_hostlist(job.exc_nodes)),
    _attr("W", "LICENSES", lambda job: job.licenses or "(null)"),
    _attr("v", "RESERVATION", lambda job: job.reservation or "(null)"),
)
_COLUMNS = {column.letter: column for column in COLUMNS}
_HEADERS = {column.letter: column.header for column in COLUMNS}
UNCUT = "".join(column.letter for column in COLUMNS if column.whole)


def _value(ctx: Context, letter: str, job: Job) -> str:
    column = _COLUMNS.get(letter)
    return column.value(ctx, job) if column is not None else ""


def _steps(ctx: Context, jobs: list[Job], noheader: bool, stderr: str) -> ToolReply:
    prefix, fields = parse_format(STEP_FORMAT)
    headers = {"i": "STEPID", "j": "NAME", "P": "PARTITION", "u": "USER", "M": "TIME", "N": "NODELIST"}
    out = [] if noheader else [render_line(prefix, fields, [headers[f.letter] for f in fields])]
    for job in jobs:
        if job.state is not JobState.RUNNING:
            continue
        for step in job.steps:
            out.append(render_line(prefix, fields, [_step_value(ctx, f.letter, job, step) for f in fields]))
    return ToolReply("".join(out), stderr)


def _step_value(ctx: Context, letter: str, job: Job, step: Step) -> str:
    return {
        "i": step.step_id,
        "j": step.name,
        "P": job.partition,
        "u": job.user,
        "M": format_duration(ctx.now_s - step.start_s),
        "N": compress_hostlist(step.nodes),
    }[letter]
