"""srun: allocate, run one step's tasks on the nodes, print their output (captures 50, 60-errors).

The controller decides where tasks run; the runtime runs them (`Context.run_task`) in the nodes'
sandboxes. Output is printed in task order, which the real srun only approximates (capture 50's
`srun -N4` printed nodes out of order).
"""

from __future__ import annotations

from hpcgym.controller.commands import usage
from hpcgym.controller.commands.base import (
    Context,
    TaskRequest,
    ToolReply,
    check_rpc,
)
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.jobopts import SHARED_OPTIONS, BadOption, build_request, submit_failed
from hpcgym.controller.commands.prologue import SLURM_VERSION_REPLY, Prologue, slurm_hint
from hpcgym.controller.commands.sudo import RUNUSER
from hpcgym.controller.hostlist import compress_hostlist
from hpcgym.controller.rpc import AUTH_ERROR, SlurmError
from hpcgym.controller.state import Job, JobState, Reason
from hpcgym.errors import ControllerError

OPTIONS = (
    *SHARED_OPTIONS,
    Option("label", "l", "label"),
    Option("immediate", "I", "immediate", Arg.OPTIONAL),
    Option("pty", None, "pty"),
    Option("unbuffered", "u", "unbuffered"),
    Option("kill-on-bad-exit", "K", "kill-on-bad-exit", Arg.OPTIONAL),
    Option("overlap", None, "overlap"),
)
USAGE = ToolReply(usage.SRUN_USAGE)
PROLOGUE = Prologue(
    "srun",
    OPTIONS,
    answers=(("help", USAGE), ("usage", USAGE), ("version", SLURM_VERSION_REPLY)),
    hint=slurm_hint("srun"),
    error_exit=255,
    stop_at_operand=True,
)

AUTH_TRIES = 5
UNSIGNED_SOCKET = (
    "srun: error: Srun communication socket apparently being written to by something other than Slurm\n"
)

# What srun says while its job waits, by the job's pending reason.
_WAITING = {
    Reason.PARTITION_CONFIG: "srun: Requested partition configuration not available now\n",
    Reason.REQ_NODE_NOT_AVAIL: "srun: Required node not available (down, drained or reserved)\n",
    Reason.PARTITION_NODE_LIMIT: "srun: Requested partition configuration not available now\n",
    Reason.PARTITION_TIME_LIMIT: "srun: Requested partition configuration not available now\n",
}


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    opts, command, keys = parsed.found, parsed.operands, parsed.keys
    if not command:
        return ToolReply("", "srun: fatal: No command given to execute.\n", 1)
    try:
        request = build_request("srun", ctx, opts, batch=False)
    except BadOption as bad:
        return bad.reply
    request.name = request.name or command[0].rsplit("/", 1)[-1]
    request.command = command[0]
    if request.num_tasks is None:
        request.num_tasks = request.min_nodes or 1
    failure = check_rpc(ctx, "srun", "REQUEST_RESOURCE_ALLOCATION")
    if failure:
        reply = submit_failed("srun", failure.error)
        if failure.error == AUTH_ERROR:
            # srun's allocation request goes out again while the credential cannot be made: five
            # tries, each also tripping over its own response socket (Debian's 22.05.8, munged stopped).
            tries = (failure.preamble + UNSIGNED_SOCKET) * AUTH_TRIES
            return ToolReply("", tries + reply.stderr, reply.exit_code)
        return ToolReply("", failure.preamble + reply.stderr, reply.exit_code)
    try:
        job = ctx.slurm.submit(request)
    except SlurmError as error:
        return submit_failed("srun", str(error), error.detail)
    if job.state is JobState.PENDING and job.reason is Reason.RESOURCES:
        # Real srun blocks until its allocation is granted; nodes still completing an earlier job
        # free up within a second, so waiting for them is part of this same command.
        ctx.slurm.settle_completing()
    if job.state is JobState.PENDING:
        stderr = _WAITING.get(job.reason, "") + f"srun: job {job.job_id} queued and waiting for resources\n"
        if "immediate" in keys:
            ctx.slurm.cancel(job)
            return ToolReply(
                "", stderr + "srun: error: Unable to allocate resources: Requested nodes are busy\n", 1
            )
        # TODO(runtime): the real srun blocks here until the job starts; until the runtime can hold a
        # command open, the job stays queued (as after a timed-out srun) and srun returns at once.
        return ToolReply("", stderr, 1)
    return _run_tasks(ctx, job, command, label="label" in keys)


def _run_tasks(ctx: Context, job: Job, command: list[str], *, label: bool) -> ToolReply:
    if ctx.run_task is None:
        raise ControllerError("srun needs a task runner", hint="pass run_task= to Controller")
    tasks = job.num_tasks or len(job.nodes)
    placement = []
    for node_index, name in enumerate(job.nodes):
        per_node = job.cpus_by_node[name] // job.cpus_per_task
        placement += [(name, node_index, local) for local in range(per_node)]
    placement = placement[:tasks]
    stdout, stderr, worst, run_for, still_running = [], [], 0, 0, False
    for rank, (name, node_index, local) in enumerate(placement):
        env = {
            "SLURM_JOB_ID": str(job.job_id),
            "SLURM_JOBID": str(job.job_id),
            "SLURM_STEP_ID": "0",
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(local),
            "SLURM_NODEID": str(node_index),
            "SLURM_NTASKS": str(tasks),
            "SLURM_NNODES": str(len(job.nodes)),
            "SLURM_JOB_NODELIST": compress_hostlist(job.nodes),
            "SLURM_JOB_PARTITION": job.partition,
            "SLURM_JOB_NAME": job.name,
            "SLURM_SUBMIT_DIR": ctx.cwd,
            "SLURMD_NODENAME": name,
            "SLURM_CPUS_ON_NODE": str(job.cpus_by_node[name]),
        }
        # slurmstepd runs the task as the job's user: runuser in the node, as sudo's tasks do.
        argv = list(command) if job.user == "root" else [RUNUSER, "-u", job.user, "--", *command]
        result = ctx.run_task(TaskRequest(name, argv, env, job.work_dir))
        prefix = f"{rank}: " if label else ""
        stdout += [prefix + line for line in result.stdout.splitlines(keepends=True)]
        stderr += [prefix + line for line in result.stderr.splitlines(keepends=True)]
        if result.timed_out:
            # The runner's host-side bound stopped the process, not Slurm: on the cluster the task
            # still runs, and its kill is no exit code of the step.
            still_running = True
        elif result.exit_code:
            stderr.append(f"srun: error: {name}: task {rank}: Exited with exit code {result.exit_code}\n")
            worst = max(worst, result.exit_code)
        run_for = max(run_for, result.run_for_s)
    if still_running:
        # A step that outlives the runner's bound (`srun sleep 600 &`) runs on the virtual clock as
        # slurmstepd would: the job stays RUNNING on its CPUs until its TimeLimit (TIMEOUT), a scancel
        # or its node failing (NODE_FAIL), as on Debian's slurmctld 22.05.8.
        # TODO(runtime): the real srun also stays until then and prints the step's end; until the
        # runtime can hold a command open past its bound, srun returns now with what the tasks printed.
        ctx.slurm.let_step_run(job, None, worst)
    elif run_for > 0:
        # A backgrounded step (`srun ... &`): the job keeps its nodes until the step would end.
        ctx.slurm.let_step_run(job, run_for, worst)
    else:
        ctx.slurm.finish_step(job, worst)
    return ToolReply("".join(stdout), "".join(stderr), worst)
