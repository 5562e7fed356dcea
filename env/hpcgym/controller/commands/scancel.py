"""scancel: signal or cancel jobs (captures 60-errors/scancel*.out).

Real scancel is quiet about jobs it cannot kill unless -v is given, and still exits 0 for them; a
malformed id or a missing target is an error.
"""

from __future__ import annotations

import re

from hpcgym.controller.commands import usage
from hpcgym.controller.commands.base import (
    ACCESS_DENIED,
    ACCESS_DENIED_EXIT,
    Context,
    ToolReply,
    check_rpc,
    may_act_on,
)
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import SLURM_VERSION_REPLY, Prologue, slurm_hint
from hpcgym.controller.hostlist import expand_names
from hpcgym.controller.numbers import to_int
from hpcgym.controller.rpc import AUTH_ERROR, SlurmError
from hpcgym.controller.state import Job

OPTIONS = (
    Option("account", "A", "account", Arg.REQUIRED),
    Option("batch", "b", "batch"),
    Option("full", "f", "full"),
    Option("interactive", "i", "interactive"),
    Option("clusters", "M", "clusters", Arg.REQUIRED),
    Option("name", "n", "name", Arg.REQUIRED),
    Option("partition", "p", "partition", Arg.REQUIRED),
    Option("quiet", "Q", "quiet"),
    Option("qos", "q", "qos", Arg.REQUIRED),
    Option("reservation", "R", "reservation", Arg.REQUIRED),
    Option("signal", "s", "signal", Arg.REQUIRED),
    Option("state", "t", "state", Arg.REQUIRED),
    Option("user", "u", "user", Arg.REQUIRED),
    Option("verbose", "v", "verbose"),
    Option("version", "V", "version"),
    Option("nodelist", "w", "nodelist", Arg.REQUIRED),
    Option("wckey", None, "wckey", Arg.REQUIRED),
    Option("hurry", "H", "hurry"),
    Option("me", None, "me"),
    Option("help", None, "help"),
    Option("usage", None, "usage"),
)
USAGE = ToolReply(usage.SCANCEL_USAGE)
PROLOGUE = Prologue(
    "scancel",
    OPTIONS,
    answers=(("help", USAGE), ("usage", USAGE), ("version", SLURM_VERSION_REPLY)),
    hint=slurm_hint("scancel"),
)

_JOB_ID = re.compile(r"^([0-9]+)(?:_([0-9]+))?(?:\.([0-9]+|batch))?$")
_FILTERS = ("name", "partition", "state", "user", "nodelist", "account", "qos", "me")


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    operands, keys, values = parsed.operands, parsed.keys, parsed.values
    if "user" in values:
        for name in values["user"].split(","):
            if ctx.find_user(name) is None:
                return ToolReply("", f"scancel: error: Invalid user name: {name}\n", 1)
    verbose = "verbose" in keys
    cluster = ctx.slurm
    targets: list[tuple[str, Job | None, str | None]] = []
    for text in operands:
        match = _JOB_ID.match(text)
        if match is None:
            return ToolReply("", f"scancel: error: Invalid job id {text}\n", 1)
        # An id past any job's (past 32 bits) names no job: slurmctld says so, and scancel only with -v.
        job_id = to_int(match.group(1)) or 0
        task = to_int(match.group(2)) if match.group(2) else None
        array = [j for j in cluster.jobs.values() if j.array_job_id == job_id]
        if array and match.group(3) is None:
            if task is None:
                # An array's job id cancels every task, running or still pending.
                targets += [(text, j, None) for j in sorted(array, key=lambda j: j.seq)]
                continue
            job = next((j for j in array if j.array_task_id == task), None)
            meta = next((j for j in array if task in j.array_pending), None)
            if job is None and meta is not None and len(meta.array_pending) > 1:
                # A pending task leaves the array's record; the others still wait (22.05.8).
                cluster.drop_pending_task(meta, task)
                continue
            targets.append((text, job or meta, None))
            continue
        job = cluster.jobs.get(job_id) if task is None else None
        targets.append((text, job, match.group(3)))
    if not operands and not any(key in keys for key in _FILTERS):
        return ToolReply("", "scancel: error: No job identification provided\n", 1)
    stderr, code = [], 0
    failure = check_rpc(ctx, "scancel", "REQUEST_KILL_JOB")
    if failure:
        for text, _, _ in targets:
            stderr.append(
                f"{failure.preamble}scancel: error: Kill job error on job id {text}: {failure.error}\n"
            )
        # scancel exits with the Slurm errno of its last failure, cut to 8 bits:
        # SLURM_PROTOCOL_AUTHENTICATION_ERROR (1007) gives 239 (Debian's 22.05.8 with munged stopped).
        return ToolReply("", "".join(stderr), 239 if failure.error == AUTH_ERROR else 1)
    for text, job, step in targets:
        if step is not None and (job is None or not any(s.step_id == text for s in job.steps)):
            stderr.append(f"scancel: error: Kill job error on job step id {text}: Invalid job id specified\n")
            code = 1
            continue
        if verbose:
            stderr.append(f"scancel: Terminating job {text}\n")
        if job is None or not _matches(ctx, job, values, keys):
            if verbose and job is None:
                stderr.append(f"scancel: error: Kill job error on job id {text}: Invalid job id specified\n")
            continue
        if not may_act_on(ctx, job.user):
            stderr.append(f"scancel: error: Kill job error on job id {text}: {ACCESS_DENIED}\n")
            code = ACCESS_DENIED_EXIT
            continue
        try:
            cluster.cancel(job)
        except SlurmError as error:
            if verbose:
                stderr.append(f"scancel: error: Kill job error on job id {text}: {error}\n")
    if not operands:
        for job in sorted(cluster.jobs.values(), key=lambda j: j.job_id):
            if job.is_active() and not job.completing and _matches(ctx, job, values, keys):
                if verbose:
                    stderr.append(f"scancel: Terminating job {job.job_id}\n")
                if not may_act_on(ctx, job.user):
                    stderr.append(f"scancel: error: Kill job error on job id {job.job_id}: {ACCESS_DENIED}\n")
                    code = ACCESS_DENIED_EXIT
                    continue
                cluster.cancel(job)
    return ToolReply("", "".join(stderr), code)


def _matches(ctx: Context, job: Job, values: dict[str, str], keys: set[str]) -> bool:
    if "name" in values and job.name != values["name"]:
        return False
    if "partition" in values and job.partition not in values["partition"].split(","):
        return False
    if "user" in values and job.user not in values["user"].split(","):
        return False
    if "me" in keys and job.user != ctx.user.name:
        return False
    if "state" in values:
        wanted = {text.upper() for text in values["state"].split(",")}
        if job.state.value not in wanted and job.state.compact not in wanted:
            return False
    if "nodelist" in values and not set(expand_names(values["nodelist"])).intersection(job.nodes):
        return False
    if "batch" in keys and not job.batch:
        return False
    return not ("interactive" in keys and job.batch)
