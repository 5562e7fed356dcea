"""The resource flags sbatch and srun share, and how they become a `JobRequest`.

Both clients accept the same allocation options (-N, -n, -c, -p, -J, -t, -w, -x, --begin, -H, -D)
and report a bad value the same way, prefixed with their own name.
"""

from __future__ import annotations

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.hostlist import expand_names
from hpcgym.controller.numbers import to_int
from hpcgym.controller.rpc import JobRequest
from hpcgym.controller.timefmt import parse_begin_time, parse_time_limit

SHARED_OPTIONS = (
    Option("account", "A", "account", Arg.REQUIRED),
    Option("begin", "b", "begin", Arg.REQUIRED),
    Option("cpus-per-task", "c", "cpus-per-task", Arg.REQUIRED),
    Option("constraint", "C", "constraint", Arg.REQUIRED),
    Option("chdir", "D", "chdir", Arg.REQUIRED),
    Option("error", "e", "error", Arg.REQUIRED),
    Option("hold", "H", "hold"),
    Option("input", "i", "input", Arg.REQUIRED),
    Option("job-name", "J", "job-name", Arg.REQUIRED),
    Option("nodes", "N", "nodes", Arg.REQUIRED),
    Option("ntasks", "n", "ntasks", Arg.REQUIRED),
    Option("output", "o", "output", Arg.REQUIRED),
    Option("partition", "p", "partition", Arg.REQUIRED),
    Option("qos", "q", "qos", Arg.REQUIRED),
    Option("quiet", "Q", "quiet"),
    Option("time", "t", "time", Arg.REQUIRED),
    Option("verbose", "v", "verbose"),
    Option("version", "V", "version"),
    Option("nodelist", "w", "nodelist", Arg.REQUIRED),
    Option("exclude", "x", "exclude", Arg.REQUIRED),
    Option("exclusive", None, "exclusive", Arg.OPTIONAL),
    Option("mem", None, "mem", Arg.REQUIRED),
    Option("mem-per-cpu", None, "mem-per-cpu", Arg.REQUIRED),
    Option("gres", None, "gres", Arg.REQUIRED),
    Option("gpus", "G", "gpus", Arg.REQUIRED),
    Option("export", None, "export", Arg.REQUIRED),
    Option("ntasks-per-node", None, "ntasks-per-node", Arg.REQUIRED),
    Option("comment", None, "comment", Arg.REQUIRED),
    Option("dependency", "d", "dependency", Arg.REQUIRED),
    Option("requeue", None, "requeue"),
    Option("no-requeue", None, "no-requeue"),
    Option("mail-type", None, "mail-type", Arg.REQUIRED),
    Option("mail-user", None, "mail-user", Arg.REQUIRED),
    Option("licenses", "L", "licenses", Arg.REQUIRED),
    Option("reservation", None, "reservation", Arg.REQUIRED),
    Option("help", "h", "help"),
    Option("usage", None, "usage"),
)


class BadOption(Exception):
    """A flag value the client itself rejects before asking slurmctld; carries the reply."""

    def __init__(self, reply: ToolReply) -> None:
        super().__init__(reply.stderr)
        self.reply = reply


def _count(prog: str, value: str, what: str) -> tuple[int, int | None]:
    low, _, high = value.partition("-")
    first, last = to_int(low), to_int(high) if high else None
    if first is None or first < 1 or (high and last is None):
        raise BadOption(ToolReply("", f"{prog}: error: Invalid {what} specification\n", 255))
    return first, last


def build_request(prog: str, ctx: Context, opts: list[tuple[str, str | None]], *, batch: bool) -> JobRequest:
    """Turn parsed flags into a request; later flags win, as in the real clients.

    Raises:
        BadOption: a value the client rejects locally (`Invalid --time specification`, ...).
    """
    request = JobRequest(name="", user=ctx.user, work_dir=ctx.cwd, batch=batch, command=None)
    for key, value in opts:
        text = value or ""
        if key == "nodes":
            low, high = _count(prog, text, "node count")
            request.min_nodes, request.max_nodes = low, high or low
        elif key == "ntasks":
            request.num_tasks = _count(prog, text, "number of tasks")[0]
        elif key == "cpus-per-task":
            request.cpus_per_task = _count(prog, text, "--cpus-per-task")[0]
        elif key == "partition":
            request.partition = text
        elif key == "job-name":
            request.name = text
        elif key == "time":
            try:
                request.time_limit_min = parse_time_limit(text)
            except ValueError:
                raise BadOption(
                    ToolReply("", f"{prog}: error: Invalid --time specification\n", 255)
                ) from None
            request.time_limit_set = True
        elif key == "nodelist":
            request.req_nodes = expand_names(text)
        elif key == "exclude":
            request.exc_nodes = expand_names(text)
        elif key == "mem":
            request.mem_mb = _memory(prog, text)
        elif key == "gres":
            request.gres = text
        elif key == "exclusive":
            request.exclusive = True
        elif key == "dependency":
            request.dependency = _dependency(prog, text)
        elif key == "output":
            request.stdout_path = text
        elif key == "error":
            request.stderr_path = text
        elif key == "hold":
            request.hold = True
        elif key == "licenses":
            request.licenses = text
        elif key == "reservation":
            request.reservation = text
        elif key == "begin":
            try:
                request.begin_s = parse_begin_time(text, ctx.now_s)
            except ValueError:
                raise BadOption(
                    ToolReply("", f"{prog}: error: Invalid time specification {text}\n", 255)
                ) from None
        elif key == "chdir":
            request.work_dir = text if text.startswith("/") else f"{ctx.cwd.rstrip('/')}/{text}"
    if request.partition is not None:
        for name in request.partition.split(","):
            if name not in ctx.slurm.partitions:
                raise BadOption(
                    ToolReply(
                        "",
                        f"{prog}: error: invalid partition specified: {name}\n"
                        f"{prog}: error: {_failure(prog)}: Invalid partition name specified\n",
                        1,
                    )
                )
        request.partition = request.partition.split(",")[0]
    return request


def _memory(prog: str, text: str) -> int:
    # --mem takes megabytes by default, or a K/M/G/T suffix.
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    number, unit = (text[:-1], text[-1].upper()) if text[-1:].isalpha() else (text, "M")
    count = to_int(number)
    if count is None or unit not in units:
        raise BadOption(ToolReply("", f"{prog}: error: Invalid --mem specification\n", 255))
    return max(1, int(count * units[unit])) if count else 0


_DEPENDENCY_TYPES = ("after", "afterany", "afterok", "afternotok")


def _dependency(prog: str, text: str) -> list[tuple[str, int]]:
    # Form: kind:id[:id...][,kind:id...]; slurmctld refuses the whole request if one is bad.
    pairs = []
    for item in text.split(","):
        kind, _, ids = item.partition(":")
        if kind not in _DEPENDENCY_TYPES or not ids:
            raise BadOption(submit_failed(prog, "Job dependency problem"))
        for job_id in ids.split(":"):
            number = to_int(job_id)
            if number is None:
                raise BadOption(submit_failed(prog, "Job dependency problem"))
            pairs.append((kind, number))
    return pairs


def _failure(prog: str) -> str:
    return "Batch job submission failed" if prog == "sbatch" else "Unable to allocate resources"


def submit_failed(prog: str, message: str, detail: str | None = None) -> ToolReply:
    first = f"{prog}: error: {detail}\n" if detail else ""
    return ToolReply("", f"{first}{prog}: error: {_failure(prog)}: {message}\n", 1)
