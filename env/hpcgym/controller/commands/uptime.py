"""uptime (procps-ng 3.3.17, Rocky 9) on the episode's virtual clock.

The real uptime prints the host's wall clock, the host's boot and the host's load, none of which
belong to the simulated node. Here each node booted a fixed time before the episode started (the
login node first, compute nodes later in name order), the time is the virtual clock's, and the load
is an idle node's. The user count is the agent's session on the login node.
"""

from __future__ import annotations

import time
import zlib

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.commands.getopt import Option
from hpcgym.controller.commands.prologue import Prologue
from hpcgym.controller.commands.usage import read_help

VERSION = "uptime from procps-ng 3.3.17\n"
USAGE = read_help("uptime-help.txt")
OPTIONS = (
    Option("pretty", "p", "pretty"),
    Option("help", "h", "help"),
    Option("since", "s", "since"),
    Option("version", "V", "version"),
)
PROLOGUE = Prologue(
    "uptime", OPTIONS, answers=(("help", ToolReply(USAGE)), ("version", ToolReply(VERSION))), hint=USAGE
)
DAY_S = 86400
# The login node came up 19 days before the episode; the compute nodes were rebooted later.
LOGIN_UP_S = 19 * DAY_S + 3 * 3600 + 17 * 60


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    keys, operands = parsed.keys, parsed.operands
    if operands:
        return ToolReply("", USAGE, 1)
    boot_s = boot_time(ctx)
    # Time up comes from the monotonic clock; only the wall-clock readings carry the node's skew.
    skew_s = ctx.local_now_s - ctx.now_s
    if "since" in keys:
        return ToolReply(time.strftime("%Y-%m-%d %H:%M:%S\n", time.gmtime(boot_s + skew_s)))
    up_s = ctx.now_s - boot_s
    if "pretty" in keys:
        return ToolReply(pretty(up_s) + "\n")
    clock = time.strftime("%H:%M:%S", time.gmtime(ctx.local_now_s))
    users = 1 if ctx.node == ctx.slurm.conf.controller_host else 0
    load = ", ".join(f"{x:.2f}" for x in load_average(ctx.node))
    who = f"{users:2d} {'user' if users == 1 else 'users'}"
    return ToolReply(f" {clock} {since_text(up_s)} {who},  load average: {load}\n")


def boot_time(ctx: Context) -> int:
    """When the node booted: fixed per node name before the episode, unless it rebooted since."""
    rebooted = ctx.slurm.host_boot_s.get(ctx.node)
    if rebooted is not None:
        return rebooted
    start = ctx.slurm.clock.start_s
    if ctx.node == ctx.slurm.conf.controller_host:
        return start - LOGIN_UP_S
    # Compute nodes: between 2 and 9 days up, minutes apart, fixed by the name.
    spread = zlib.crc32(ctx.node.encode()) % (7 * DAY_S)
    return start - 2 * DAY_S - spread


def since_text(up_s: int) -> str:
    days, rest = divmod(up_s, DAY_S)
    hours, minutes = rest // 3600, rest % 3600 // 60
    text = "up "
    if days:
        text += f"{days} {'day' if days == 1 else 'days'}, "
    text += f"{hours:2d}:{minutes:02d}," if hours else f"{minutes} min,"
    return text


def pretty(up_s: int) -> str:
    minutes_total = up_s // 60
    parts = []
    for name, size in (("year", 525600), ("week", 10080), ("day", 1440), ("hour", 60), ("minute", 1)):
        count, minutes_total = divmod(minutes_total, size)
        if count:
            parts.append(f"{count} {name}{'' if count == 1 else 's'}")
    return "up " + ", ".join(parts or ["0 minutes"])


def load_average(node: str) -> tuple[float, float, float]:
    # An idle node: a little background noise, fixed per node.
    seed = zlib.crc32(f"load:{node}".encode())
    return (seed % 3 / 100, seed // 3 % 5 / 100, seed // 15 % 8 / 100)
