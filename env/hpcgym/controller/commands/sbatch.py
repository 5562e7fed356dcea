"""sbatch: submit a batch script (captures 50-jobs-running-pending, 60-errors).

The script comes from --wrap, a file on the calling node (read through the runtime) or stdin.
`#SBATCH` lines give defaults that command-line flags override. Running the script on the node is the
runtime's job; until it does (TODO: a batch hook in the runtime, which would also write slurm-N.out),
a script's run time comes from its `sleep N` lines and its exit code from `exit N` or a final `false`.
"""

from __future__ import annotations

import re
import shlex

from hpcgym.controller.commands import usage
from hpcgym.controller.commands.base import (
    Context,
    ToolReply,
    check_rpc,
)
from hpcgym.controller.commands.getopt import Arg, Option, UsageError, parse_args
from hpcgym.controller.commands.jobopts import SHARED_OPTIONS, BadOption, build_request, submit_failed
from hpcgym.controller.commands.prologue import SLURM_VERSION_REPLY, Prologue, slurm_hint
from hpcgym.controller.numbers import to_int
from hpcgym.controller.rpc import SlurmError

OPTIONS = (
    *SHARED_OPTIONS,
    Option("wrap", None, "wrap", Arg.REQUIRED),
    Option("parsable", None, "parsable"),
    Option("array", "a", "array", Arg.REQUIRED),
    Option("wait", "W", "wait"),
)
USAGE = ToolReply(usage.SBATCH_USAGE)
PROLOGUE = Prologue(
    "sbatch",
    OPTIONS,
    answers=(("help", USAGE), ("usage", USAGE), ("version", SLURM_VERSION_REPLY)),
    hint=slurm_hint("sbatch"),
    error_exit=255,
    stop_at_operand=True,
)

NO_SHEBANG = (
    "sbatch: error: This does not look like a batch script.  The first\n"
    "sbatch: error: line must start with #! followed by the path to an interpreter.\n"
    "sbatch: error: For instance: #!/bin/sh\n"
)
_SLEEP = re.compile(r"^\s*sleep\s+([0-9]+)\s*$")
_EXIT = re.compile(r"^\s*exit\s+([0-9]+)\s*$")
# A longer sleep (up to GNU sleep's infinity) runs this long: its end still prints as a date.
MAX_SLEEP_S = 10**10


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    opts, operands, keys = parsed.found, parsed.operands, parsed.keys
    wrap = next((value for key, value in reversed(opts) if key == "wrap"), None)
    if wrap is not None:
        script, name, command = (
            f"#!/bin/sh\n# This script was created by sbatch --wrap.\n\n{wrap}\n",
            "wrap",
            None,
        )
    elif operands:
        path = operands[0]
        absolute = path if path.startswith("/") else f"{ctx.cwd.rstrip('/')}/{path}"
        data = ctx.read_file(ctx.node, absolute) if ctx.read_file else None
        if data is None:
            return ToolReply("", f"sbatch: error: Unable to open file {path}\n", 1)
        script, name, command = data.decode(errors="replace"), path.rsplit("/", 1)[-1], absolute
    else:
        script, name, command = ctx.stdin or "", "sbatch", None
    if not script.strip():
        return ToolReply("", "sbatch: error: Batch script is empty!\n", 1)
    if not script.startswith("#!"):
        return ToolReply("", NO_SHEBANG, 1)
    try:
        directives, _ = parse_args("sbatch", _directives(script), OPTIONS)
    except UsageError as error:
        return PROLOGUE.rejected(error)
    try:
        request = build_request("sbatch", ctx, directives + opts, batch=True)
    except BadOption as bad:
        return bad.reply
    request.name = request.name or name
    request.array_spec = next((value for key, value in reversed(directives + opts) if key == "array"), None)
    request.command = command
    request.run_for_s = estimate_run_s(script)
    request.exit_code = estimate_exit_code(script)
    failure = check_rpc(ctx, "sbatch", "REQUEST_SUBMIT_BATCH_JOB")
    if failure:
        reply = submit_failed("sbatch", failure.error)
        return ToolReply("", failure.preamble + reply.stderr, reply.exit_code)
    try:
        job = ctx.slurm.submit(request)
    except SlurmError as error:
        return submit_failed("sbatch", str(error), error.detail)
    if "parsable" in keys:
        return ToolReply(f"{job.job_id}\n")
    return ToolReply(f"Submitted batch job {job.job_id}\n")


def _directives(script: str) -> list[str]:
    # sbatch reads #SBATCH lines until the first line that is neither blank nor a comment.
    args: list[str] = []
    for line in script.splitlines()[1:]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if stripped.startswith("#SBATCH"):
            try:
                args.extend(shlex.split(stripped[len("#SBATCH") :], comments=True))
            except ValueError:
                continue
    return args


def estimate_run_s(script: str) -> int:
    """Seconds a script runs, from its top-level `sleep N` lines (other commands take no time)."""
    total = 0
    for match in filter(None, map(_SLEEP.match, script.splitlines())):
        seconds = to_int(match.group(1), max_digits=10)
        total += MAX_SLEEP_S if seconds is None else seconds
    return min(total, MAX_SLEEP_S)


def estimate_exit_code(script: str) -> int:
    """The exit code of a script's first top-level `exit N`, or 1 if its last command is `false`."""
    commands = [
        line.strip() for line in script.splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    for line in commands:
        match = _EXIT.match(line)
        if match:
            # bash reads the status as a C long and wraps it; a longer one is "numeric argument required" (2).
            status = to_int(match.group(1))
            return 2 if status is None else status % 256
    return 1 if commands and commands[-1] == "false" else 0
