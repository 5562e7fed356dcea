"""scontrol: show, update, ping, hold/release/requeue (captures */scontrol_*.out, 60-errors).

The argument grammar and every error text follow scontrol 22.05; what an update does to the cluster
is `SlurmState`'s business (for instance RESUME is refused for a node that is not drained or down).
"""

from __future__ import annotations

from dataclasses import replace

from hpcgym.controller.commands import scontrol_config, scontrol_resv, usage
from hpcgym.controller.commands import scontrol_show as show
from hpcgym.controller.commands.base import (
    ACCESS_DENIED,
    INVALID_USER,
    Context,
    ToolReply,
    check_rpc,
    is_super_user,
    may_act_on,
)
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import SLURM_VERSION_REPLY, Prologue, slurm_hint
from hpcgym.controller.hostlist import compress_hostlist, expand_names
from hpcgym.controller.numbers import is_digits, to_int
from hpcgym.controller.rpc import SlurmError
from hpcgym.controller.scheduler import exceeds
from hpcgym.controller.slurmconf import SLURM_CONF_PATH, parse_slurm_conf
from hpcgym.controller.state import Job, JobState, PartitionState, Reason, TimeLimitSource
from hpcgym.controller.timefmt import TimeLimit, parse_time_limit
from hpcgym.errors import ControllerError

OPTIONS = (
    Option("all", "a", "all"),
    Option("details", "d", "details"),
    Option("help", "h", "help"),
    Option("clusters", "M", "clusters", Arg.REQUIRED),
    Option("oneliner", "o", "oneliner"),
    Option("quiet", "Q", "quiet"),
    Option("uid", "u", "uid", Arg.REQUIRED),
    Option("verbose", "v", "verbose"),
    Option("version", "V", "version"),
    Option("usage", None, "usage"),
    Option("local", None, "local"),
    Option("sibling", None, "sibling"),
    Option("federation", None, "federation"),
    Option("future", None, "future"),
    Option("hide", None, "hide"),
    Option("json", None, "json", Arg.OPTIONAL),
    Option("yaml", None, "yaml", Arg.OPTIONAL),
)
HELP_REPLY = ToolReply(usage.SCONTROL_HELP)
PROLOGUE = Prologue(
    "scontrol",
    OPTIONS,
    answers=(("help", HELP_REPLY), ("usage", HELP_REPLY), ("version", SLURM_VERSION_REPLY)),
    hint=slurm_hint("scontrol"),
)

VALID_NODE_STATES = "NoResp DRAIN FAIL FUTURE RESUME POWER_DOWN POWER_UP UNDRAIN"
_ENTITIES = (
    "node",
    "nodes",
    "partition",
    "partitions",
    "job",
    "jobs",
    "step",
    "steps",
    "config",
    "reservation",
    "reservations",
    "licenses",
)
# Entities scontrol matches only when spelled out.
_HOST_ENTITIES = ("hostnames", "hostlist", "hostlistsorted")


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    flags, words = parsed.keys, parsed.operands
    if not words:
        # Interactive mode needs a terminal the controller does not have; real scontrol reads stdin.
        return ToolReply()
    keyword, rest = words[0].lower(), words[1:]
    details, oneliner = "details" in flags, "oneliner" in flags
    if keyword == "help":
        return HELP_REPLY
    if keyword == "version":
        return SLURM_VERSION_REPLY
    if keyword == "ping":
        return _ping(ctx)
    if keyword in ("show", "update", "hold", "uhold", "release", "requeue"):
        failed = _rpc_failed(ctx, keyword, rest)
        if failed is not None:
            return failed
    if keyword == "create":
        return _create(ctx, rest)
    if keyword == "delete":
        return _delete(ctx, rest)
    if keyword == "show":
        return _show(ctx, rest, details=details, oneliner=oneliner)
    if keyword == "update":
        return _update(ctx, rest)
    if keyword in ("hold", "uhold", "release", "requeue"):
        return _job_action(ctx, keyword, rest)
    if keyword in ("reconfigure", "reconfig"):
        return _reconfigure(ctx)
    return ToolReply("", f"invalid keyword: {words[0]}\n", 1)


# What scontrol ping adds below a DOWN primary with no backup (Debian's 22.05.8, munged or
# slurmctld stopped).
RESTORE_BANNER = (
    "*****************************************\n"
    "** RESTORE SLURMCTLD DAEMON TO SERVICE **\n"
    "*****************************************\n"
)


def _ping(ctx: Context) -> ToolReply:
    host = ctx.slurm.conf.controller_host
    failure = check_rpc(ctx, "scontrol", "REQUEST_PING")
    if failure is not None:
        # Without munged the ping cannot be signed, and the client says so on stderr first.
        return ToolReply(f"Slurmctld(primary) at {host} is DOWN\n{RESTORE_BANNER}", failure.preamble, 1)
    return ToolReply(f"Slurmctld(primary) at {host} is UP\n")


def _rpc_failed(ctx: Context, keyword: str, rest: list[str]) -> ToolReply | None:
    # Each subcommand names the RPC that failed, as slurm_perror() does.
    entity = rest[0].lower()[:2] if rest else ""
    if keyword == "show":
        rpc, call = {
            "no": ("REQUEST_NODE_INFO", "slurm_load_node error"),
            "pa": ("REQUEST_PARTITION_INFO", "slurm_load_partitions error"),
            "st": ("REQUEST_JOB_STEP_INFO", "slurm_get_job_steps error"),
            "co": ("REQUEST_BUILD_INFO", "slurm_load_ctl_conf error"),
            "re": ("REQUEST_RESERVATION_INFO", "slurm_load_reservations error"),
            "li": ("REQUEST_LICENSE_INFO", "slurm_load_license error"),
        }.get(entity, ("REQUEST_JOB_INFO", "slurm_load_jobs error"))
    elif keyword == "update":
        rpc = {
            "no": "REQUEST_UPDATE_NODE",
            "pa": "REQUEST_UPDATE_PARTITION",
            "re": "REQUEST_UPDATE_RESERVATION",
        }.get(entity, "REQUEST_UPDATE_JOB")
        call = "slurm_update error"
    else:
        rpc = "REQUEST_JOB_REQUEUE" if keyword == "requeue" else "REQUEST_UPDATE_JOB"
        call = ""
    failure = check_rpc(ctx, "scontrol", rpc)
    if failure is None:
        return None
    if call:
        return ToolReply("", f"{failure.preamble}{call}: {failure.error}\n", 1)
    return ToolReply("", f"{failure.preamble}{failure.error} for job {rest[0] if rest else ''}\n", 1)


def _show(ctx: Context, words: list[str], *, details: bool, oneliner: bool) -> ToolReply:
    cluster = ctx.slurm
    if not words:
        return ToolReply("", "too few arguments for keyword:show\n", 1)
    entity = words[0].lower()
    target = words[1] if len(words) > 1 else None
    if entity in _HOST_ENTITIES:
        return _show_hosts(entity, target)
    # scontrol accepts any unique prefix of the entity name ("show part", "show no").
    matches = [name for name in _ENTITIES if name.startswith(entity)] if len(entity) >= 2 else []
    if not matches:
        return ToolReply("", f"invalid entity:{words[0]} for keyword:show \n", 1)
    entity = matches[0].rstrip("s") if matches[0] != "steps" else "step"
    if entity == "reservation":
        return scontrol_resv.show(cluster, target, oneliner=oneliner)
    if entity == "license":
        return scontrol_resv.show_licenses(cluster, target, oneliner=oneliner)
    if entity == "node":
        names = expand_names(target) if target else list(cluster.nodes)
        missing = [name for name in names if name not in cluster.nodes]
        if missing:
            return ToolReply(f"Node {target} not found\n", "", 1)
        records = [show.node_record(cluster.nodes[name]) for name in names]
        return ToolReply(show.render(records, oneliner=oneliner))
    if entity == "partition":
        parts = list(cluster.partitions.values())
        if target:
            parts = [p for p in parts if p.name == target]
            if not parts:
                return ToolReply(f"Partition {target} not found\n", "", 1)
        return ToolReply(show.render([show.partition_record(cluster, p) for p in parts], oneliner=oneliner))
    if entity == "job":
        # Records in slurmctld's job list order (an array's own record after its started tasks).
        jobs = sorted(cluster.jobs.values(), key=lambda j: j.seq)
        if target:
            base, _, task = target.partition("_")
            if not is_digits(base) or (task and not is_digits(task)):
                return ToolReply("", "scontrol_print_job error: Invalid job id specified\n", 1)
            jobs = _select_jobs(jobs, to_int(base), to_int(task) if task else None)
            if not jobs:
                return ToolReply("", "slurm_load_jobs error: Invalid job id specified\n", 1)
        if not jobs:
            return ToolReply("No jobs in the system\n")
        records = [show.job_record(cluster, j, details=details, alloc_host=ctx.node) for j in jobs]
        return ToolReply(show.render(records, oneliner=oneliner))
    if entity == "step":
        return _show_steps(ctx, target, oneliner)
    if entity == "config":
        uids = {user.name: user.uid for user in ctx.users.values()} | {"slurm": 64030}
        return ToolReply(scontrol_config.render(cluster, uids))
    return ToolReply("", f"invalid entity:{words[0]} for keyword:show \n", 1)


def _select_jobs(jobs: list[Job], job_id: int | None, task: int | None) -> list[Job]:
    # An array's job id names every record of the array, its own first and then the tasks from
    # the last started; `1_3` names one task, or the array's record while task 3 still waits
    # (shown as that one task). Seen on Debian's 22.05.8.
    if task is not None:
        for job in jobs:
            if job.array_job_id == job_id and job.array_task_id == task:
                return [job]
        meta = next((j for j in jobs if j.array_job_id == job_id and task in j.array_pending), None)
        return [] if meta is None else [replace(meta, array_pending=[task])]
    array = [j for j in jobs if j.array_job_id == job_id and j.array_job_id is not None]
    if array:
        own = [j for j in array if j.job_id == job_id]
        return own + [j for j in reversed(array) if j.job_id != job_id]
    return [j for j in jobs if j.job_id == job_id]


def _show_hosts(entity: str, target: str | None) -> ToolReply:
    # Without an argument the real tool reads SLURM_JOB_NODELIST, which an agent's shell never has.
    if not target:
        return ToolReply("", "", 1)
    hosts = expand_names(target)
    if entity == "hostnames":
        return ToolReply("".join(f"{host}\n" for host in hosts))
    return ToolReply(compress_hostlist(hosts) + "\n")


def _show_steps(ctx: Context, target: str | None, oneliner: bool) -> ToolReply:
    records = []
    for job in sorted(ctx.slurm.jobs.values(), key=lambda j: j.job_id):
        if job.state is not JobState.RUNNING:
            continue
        for step in job.steps:
            if step.step_id.endswith(".batch"):
                continue
            if target is None or target in (step.step_id, str(job.job_id)):
                records.append(show.step_record(job, step, ctx.node))
    if not records:
        if target is not None:
            return ToolReply("", "slurm_get_job_steps error: Invalid job id specified\n", 1)
        return ToolReply("No job steps in the system\n")
    return ToolReply(show.render(records, oneliner=oneliner))


def _pairs(words: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for word in words:
        key, _, value = word.partition("=")
        pairs.append((key, value))
    return pairs


def _update(ctx: Context, words: list[str]) -> ToolReply:
    pairs = _pairs(words)
    if not pairs:
        return ToolReply("", "No changes specified\n", 1)
    first = pairs[0][0].lower()
    if first not in ("jobid", "job") and not is_super_user(ctx):
        # Nodes, partitions and reservations are slurmctld's operators' alone.
        return ToolReply("", f"slurm_update error: {INVALID_USER}\n", 1)
    if first in ("nodename", "node"):
        return _update_node(ctx, pairs, words)
    if first in ("jobid", "job"):
        return _update_job(ctx, pairs)
    if first in ("partitionname", "partition"):
        return _update_partition(ctx, pairs)
    if len(first) >= 3 and "reservationname".startswith(first):
        return scontrol_resv.update(ctx, words)
    return ToolReply("", f"Update of this parameter is not supported: {words[0]}\nRequest aborted\n", 1)


def _update_node(ctx: Context, pairs: list[tuple[str, str]], words: list[str]) -> ToolReply:
    cluster = ctx.slurm
    names = expand_names(pairs[0][1])
    state: str | None = None
    reason: str | None = None
    for key, value in pairs[1:]:
        lower = key.lower()
        if not value and f"{key}=" not in words:
            return ToolReply("", f"Invalid input: {key}\nRequest aborted\n", 1)
        if lower == "state":
            state = value
        elif lower == "reason":
            reason = value
        else:
            return ToolReply(
                "", f"Update of this parameter is not supported: {key}={value}\nRequest aborted\n", 1
            )
    action = _node_action(state) if state is not None else None
    if state is not None and action is None:
        return ToolReply(
            "",
            f"Invalid input: State={state}\nRequest aborted\nValid states are: {VALID_NODE_STATES}\n"
            "Not all states are valid given a node's prior state\n",
            1,
        )
    if action in ("DRAIN", "DOWN", "FAIL") and not reason:
        return ToolReply("", "You must specify a reason when DOWNING or DRAINING a node. Request denied\n", 1)
    if any(name not in cluster.nodes for name in names):
        return ToolReply("", "slurm_update error: Invalid node name specified\n", 1)
    # update_node() goes on past a node whose state may not change that way (RESUME of an idle
    # node): the others change, and the request still fails with the error.
    failed: SlurmError | None = None
    for name in names:
        node = cluster.nodes[name]
        try:
            if action == "DRAIN":
                cluster.drain(node, reason or "", ctx.user.name)
            elif action == "DOWN":
                cluster.set_down(node, reason or "", ctx.user.name)
            elif action == "FAIL":
                cluster.fail(node, reason or "", ctx.user.name)
            elif action in ("RESUME", "IDLE"):
                cluster.resume(node)
            elif action == "UNDRAIN":
                cluster.undrain(node)
            elif action == "NORESP":
                cluster.mark_not_responding(node)
            elif reason is not None:
                cluster.rewrite_reason(node, reason)
        except SlurmError as error:
            failed = error
    cluster.schedule()
    if failed is not None:
        return ToolReply("", f"slurm_update error: {failed}\n", 1)
    return ToolReply()


def _node_action(state: str) -> str | None:
    upper = state.upper()
    for name in ("NORESP", "DRAIN", "FAIL", "FUTURE", "RESUME", "UNDRAIN", "DOWN", "IDLE"):
        if upper == name:
            return name
    return None


def _update_job(ctx: Context, pairs: list[tuple[str, str]]) -> ToolReply:
    cluster = ctx.slurm
    job_text = pairs[0][1]
    job = cluster.jobs.get(to_int(job_text) or 0)
    if job is None:
        return ToolReply("", f"Invalid job id specified for job {job_text}\n", 1)
    if not may_act_on(ctx, job.user):
        return ToolReply("", f"{INVALID_USER} for job {job_text}\n", 1)
    for key, value in pairs[1:]:
        lower = key.lower()
        if lower == "timelimit":
            try:
                minutes = parse_time_limit(value)
            except ValueError:
                return ToolReply("", f"Invalid TimeLimit value: {value}\nRequest aborted\n", 1)
            if not _set_time_limit(ctx, job, minutes):
                return ToolReply("", f"Access/permission denied for job {job_text}\n", 1)
        elif lower == "partition" and value in cluster.partitions:
            cluster.update_job(job, partition=value)
        elif lower in ("numnodes", "minnodes") and (count := to_int(value)) is not None:
            cluster.update_job(job, min_nodes=count)
        elif lower == "name" or lower == "jobname":
            cluster.update_job(job, name=value)
        else:
            return ToolReply(
                "", f"Update of this parameter is not supported: {key}={value}\nRequest aborted\n", 1
            )
    cluster.schedule()
    return ToolReply()


def _set_time_limit(ctx: Context, job: Job, minutes: TimeLimit) -> bool:
    """TimeLimit= as _update_job() takes it; False where slurmctld refuses (a user asking for more)."""
    source = job.time_limit_source
    if source is not TimeLimitSource.PARTITION and minutes == job.time_limit_min:
        return True  # "new time limit identical to old time limit": nothing is set
    # A job without a limit of its own (NO_VAL) counts as longer than any finite limit.
    shorter = minutes is not None and (
        source is TimeLimitSource.PARTITION or exceeds(job.time_limit_min, minutes)
    )
    part = ctx.slurm.partitions.get(job.partition)
    fits = job.state is JobState.PENDING and part is not None and not exceeds(minutes, part.conf.max_time_min)
    if not (is_super_user(ctx) or shorter or fits):
        return False
    # An operator's limit is ADMIN_SET_LIMIT: partition time limits no longer hold the job.
    source = TimeLimitSource.ADMIN if is_super_user(ctx) else TimeLimitSource.JOB
    ctx.slurm.set_time_limit(job, minutes, source)
    return True


def _update_partition(ctx: Context, pairs: list[tuple[str, str]]) -> ToolReply:
    part = ctx.slurm.partitions.get(pairs[0][1])
    if part is None:
        return ToolReply("", "slurm_update error: Invalid partition name specified\n", 1)
    state: PartitionState | None = None
    # The new MaxTime, if one was given (None itself is UNLIMITED).
    max_time: tuple[TimeLimit, ...] = ()
    for arg_key, value in pairs[1:]:
        key = arg_key.lower()
        if key == "state" and value.upper() in PartitionState.__members__:
            state = PartitionState[value.upper()]
        elif len(key) >= 4 and "maxtime".startswith(key):
            # scontrol_parse_part_options(): time_str2mins(), checked before anything is sent;
            # the caller then reports the (unset) errno too (Debian's 22.05.8).
            try:
                max_time = (parse_time_limit(value),)
            except ValueError:
                return ToolReply(
                    "", f"scontrol: error: Invalid input {arg_key}={value}\nslurm_update error: No error\n", 1
                )
        else:
            return ToolReply(
                "", f"Update of this parameter is not supported: {arg_key}={value}\nRequest aborted\n", 1
            )
    if state is not None:
        ctx.slurm.set_partition_state(part, state)
    if max_time:
        ctx.slurm.set_partition_max_time(part, max_time[0])
    ctx.slurm.schedule()
    return ToolReply()


def _job_action(ctx: Context, keyword: str, words: list[str]) -> ToolReply:
    cluster = ctx.slurm
    if not words:
        return ToolReply("", f"too few arguments for keyword:{keyword}\n", 1)
    errors = []
    for text in ",".join(words).split(","):
        job = cluster.jobs.get(to_int(text) or 0)
        if job is None:
            errors.append(f"Invalid job id specified for job {text}\n")
            continue
        if not may_act_on(ctx, job.user):
            # Debian's 22.05.8: hold and release report through slurm_suspend's perror as well.
            if keyword == "requeue":
                errors.append(f"{ACCESS_DENIED} for job {text}\n")
            else:
                errors.append(f"{INVALID_USER} for job {text}\nslurm_suspend error: {INVALID_USER}\n")
            continue
        try:
            if keyword == "hold":
                cluster.hold(job, Reason.HELD_ADMIN)
            elif keyword == "uhold":
                cluster.hold(job, Reason.HELD_USER)
            elif keyword == "release":
                cluster.release(job)
            else:
                cluster.requeue(job)
        except SlurmError as error:
            errors.append(f"{error} for job {text}\n")
    return ToolReply("", "".join(errors), 1 if errors else 0)


def _create(ctx: Context, words: list[str]) -> ToolReply:
    # scontrol's _create_it: the entity is the first word (or a tag of the first pair).
    if not words:
        return ToolReply("", "too few arguments for keyword:create\n", 1)
    entity = words[0].partition("=")[0].lower()
    if len(entity) < 3 or not ("reservation".startswith(entity) or "reservationname".startswith(entity)):
        return ToolReply("", f"Invalid creation entity: {words[0]}\n", 1)
    refusal = _resv_refusal(ctx, "REQUEST_CREATE_RESERVATION", "Error creating the reservation")
    return refusal or scontrol_resv.create(ctx, words)


def _delete(ctx: Context, words: list[str]) -> ToolReply:
    # scontrol's _delete_it: `delete ENTITY=ID` or `delete ENTITY ID`.
    proper = "scontrol: error: Proper format is 'delete <ENTITY>=<ID>' or 'delete <ENTITY> <ID>'\n"
    if len(words) == 1 and "=" in words[0]:
        tag, _, value = words[0].partition("=")
    elif len(words) == 2:
        tag, value = words
    else:
        return ToolReply("", proper, 1)
    if len(tag) < 3 or not "reservationname".startswith(tag.lower()):
        return ToolReply("", f"Invalid deletion entity: {words[0]}\n", 1)
    refusal = _resv_refusal(ctx, "REQUEST_DELETE_RESERVATION", f"delete_reservation {words[0]}")
    return refusal or scontrol_resv.delete(ctx, words[0], value)


def _resv_refusal(ctx: Context, rpc: str, prefix: str) -> ToolReply | None:
    """Why slurmctld refuses a reservation's create or delete before looking at it, or None.

    Either the RPC fails (`check_rpc`) or the caller is not a Slurm super user.
    """
    failure = check_rpc(ctx, "scontrol", rpc)
    if failure is not None:
        return ToolReply("", f"{failure.preamble}{prefix}: {failure.error}\n", 1)
    if not is_super_user(ctx):
        return ToolReply("", f"{prefix}: {INVALID_USER}\n", 1)
    return None


# slurm_strerror(ESLURM_NEED_RESTART), Slurm 22.05's slurm_errno.c.
NEED_RESTART = (
    "The node configuration changes that were made require restart of the slurmctld daemon to take effect"
)


def _reconfigure(ctx: Context) -> ToolReply:
    # slurmctld re-reads slurm.conf on its own host; without a way to read it nothing changes.
    failure = check_rpc(ctx, "scontrol", "REQUEST_RECONFIGURE")
    if failure:
        return ToolReply("", f"{failure.preamble}slurm_reconfigure error: {failure.error}\n", 1)
    if not is_super_user(ctx):
        return ToolReply("", f"slurm_reconfigure error: {INVALID_USER}\n", 1)
    cluster = ctx.slurm
    data = ctx.read_file(cluster.conf.controller_host, SLURM_CONF_PATH) if ctx.read_file else None
    if data is not None:
        try:
            conf = parse_slurm_conf(data.decode(errors="replace"))
        except ControllerError:
            return ToolReply("", "slurm_reconfigure error: Unspecified error\n", 1)
        if cluster.reconfigure(conf):
            # _slurm_rpc_reconfigure_controller logs the error and returns ESLURM_NEED_RESTART.
            text = f"error: _slurm_rpc_reconfigure_controller: {NEED_RESTART}"
            cluster.log_lines.append((cluster.now_s, text))
            return ToolReply("", f"slurm_reconfigure error: {NEED_RESTART}\n", 1)
    return ToolReply()
