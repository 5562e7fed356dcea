"""sdiag: slurmctld's statistics (REQUEST_STATS_INFO), in sdiag.c's layout.

What matters for the accounting incidents is "DBD Agent queue size": the messages slurmctld holds
for slurmdbd (accounting.py), which grows while slurmdbd does not answer and falls to 0 once it
does. The scheduler's timings are fixed small numbers: the simulation has no cycles to time.
"""

from __future__ import annotations

from hpcgym.controller.commands.base import Context, ToolReply, check_rpc
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import Prologue, slurm_hint
from hpcgym.controller.state import JobState
from hpcgym.controller.timefmt import format_ctime

PROG = "sdiag"
OPTIONS = (
    Option("all", "a", "all"),
    Option("help", "h", "help"),
    Option("reset", "r", "reset"),
    Option("sort-by-id", "i", "sort-by-id"),
    Option("sort-by-time", "t", "sort-by-time"),
    Option("sort-by-time2", "T", "sort-by-time2"),
    Option("cluster", "M", "cluster", Arg.REQUIRED),
    Option("usage", None, "usage"),
    Option("version", "V", "version"),
)
USAGE = ToolReply("Usage: sdiag [-M cluster] [-aritT]\n")
PROLOGUE = Prologue(
    PROG,
    OPTIONS,
    answers=(("help", USAGE), ("usage", USAGE), ("version", ToolReply("slurm 22.05.8\n"))),
    hint=slurm_hint(PROG),
)
_STARS = "*" * 55


def _stamp(epoch_s: int) -> str:
    # slurm_ctime2 zero-pads the day ("Dec 07"), as ctime's own form does not.
    text = format_ctime(epoch_s)
    return f"{text} ({epoch_s})"


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    keys = parsed.keys
    failure = check_rpc(ctx, PROG, "REQUEST_STATS_INFO")
    if failure is not None:
        return ToolReply("", f"{failure.preamble}slurm_get_statistics: {failure.error}\n", 1)
    cluster = ctx.slurm
    if "reset" in keys:
        if ctx.user.uid != 0:
            return ToolReply("", "slurm_reset_statistics: Access/permission denied\n", 1)
        return ToolReply("Reset scheduling statistics\n")
    since = cluster.slurmctld_start_s
    jobs = [job for job in cluster.jobs.values() if job.submit_s >= since]
    started = [job for job in jobs if job.start_s is not None]
    ended = [job for job in jobs if job.state.is_finished()]
    counts = {state: sum(1 for job in ended if job.state is state) for state in JobState}
    pending = sum(1 for job in cluster.jobs.values() if job.state is JobState.PENDING)
    running = sum(1 for job in cluster.jobs.values() if job.state is JobState.RUNNING)
    now = ctx.now_s
    lines = [
        _STARS,
        f"sdiag output at {_stamp(now)}",
        f"Data since      {_stamp(since)}",
        _STARS,
        "Server thread count:  3",
        "Agent queue size:     0",
        "Agent count:          0",
        "Agent thread count:   0",
        f"DBD Agent queue size: {cluster.accounting.queue_size}",
        "",
        f"Jobs submitted: {len(jobs)}",
        f"Jobs started:   {len(started)}",
        f"Jobs completed: {counts[JobState.COMPLETED]}",
        f"Jobs canceled:  {counts[JobState.CANCELLED]}",
        f"Jobs failed:    {counts[JobState.FAILED] + counts[JobState.NODE_FAIL]}",
        "",
        f"Job states ts:  {_stamp(now - now % 30)}",
        f"Jobs pending:   {pending}",
        f"Jobs running:   {running}",
        "",
        "Main schedule statistics (microseconds):",
        "\tLast cycle:   41",
        "\tMax cycle:    212",
        f"\tTotal cycles: {max(1, (now - since) // 60)}",
        "\tMean cycle:   57",
        "\tMean depth cycle:  0",
        "\tCycles per minute: 1",
        f"\tLast queue length: {pending}",
        "",
        "Backfilling stats",
        "\tTotal backfilled jobs (since last slurm start): 0",
        "\tTotal backfilled jobs (since last stats cycle start): 0",
        "\tTotal backfilled heterogeneous job components: 0",
        "\tTotal cycles: 0",
        "\tLast cycle when: None",
        "\tLast cycle: 0",
        "\tMax cycle:  0",
        "\tLast depth cycle: 0",
        "\tLast depth cycle (try sched): 0",
        "\tLast queue length: 0",
        "\tLast table size: 0",
        "",
        "Latency for 1000 calls to gettimeofday(): 18 microseconds",
        "",
        "Remote Procedure Call statistics by message type",
        "\tREQUEST_STATS_INFO                      ( 2035) count:1      ave_time:92     total_time:92",
        "",
        "Remote Procedure Call statistics by user",
        f"\t{ctx.user.name:<15} ({ctx.user.uid:>8}) count:1      ave_time:92     total_time:92",
        "",
        "Pending RPC statistics",
        "\tNo pending RPCs",
    ]
    return ToolReply("".join(f"{line}\n" for line in lines))
