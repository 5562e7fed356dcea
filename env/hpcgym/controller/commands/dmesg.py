"""dmesg (util-linux 2.37.4, Rocky 9): the node's kernel ring buffer on the episode's clock.

The real dmesg reads the host's /dev/kmsg, which belongs to no simulated node. Here the buffer is
the node's journal lines from the `kernel` identifier (services/xid.py writes the NVRM Xid lines
there), stamped in seconds since the node booted (`uptime.boot_time`). Modes: the default
`[ seconds.micros] text`, `-T/--ctime`, `-t/--notime`, `-x/--decode`; `-k`, `-P`, `-L[=when]` and
`-s SIZE` change nothing here. Bad flags get getopt's message and dmesg's hint, as
`dmesg --foo` prints on Debian's util-linux 2.38.1.
"""

from __future__ import annotations

import time
import zlib

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import Prologue
from hpcgym.controller.commands.uptime import boot_time
from hpcgym.controller.services import xid
from hpcgym.controller.services.journal import Priority

VERSION = "dmesg from util-linux 2.37.4\n"
HINT = "Try 'dmesg --help' for more information.\n"
OPTIONS = (
    Option("ctime", "T", "ctime"),
    Option("notime", "t", "notime"),
    Option("decode", "x", "decode"),
    Option("kernel", "k", "kernel"),
    Option("nopager", "P", "nopager"),
    Option("color", "L", "color", Arg.OPTIONAL),
    Option("buffer-size", "s", "buffer-size", Arg.REQUIRED),
    Option("version", "V", "version"),
)
PROLOGUE = Prologue("dmesg", OPTIONS, answers=(("version", ToolReply(VERSION)),), hint=HINT)
LEVELS = {
    Priority.EMERG: "emerg",
    Priority.ALERT: "alert",
    Priority.CRIT: "crit",
    Priority.ERR: "err",
    Priority.WARNING: "warn",
    Priority.NOTICE: "notice",
    Priority.INFO: "info",
    Priority.DEBUG: "debug",
}


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    keys, operands = parsed.keys, parsed.operands
    if operands:
        return ToolReply("", f"dmesg: bad usage\n{HINT}", 1)
    boot_s = boot_time(ctx)
    skew_s = ctx.local_now_s - ctx.now_s
    entries = [e for e in xid.kernel_entries(ctx.services.systemd.journal(ctx.node)) if e.time_s >= boot_s]
    out = []
    seen_in_second: dict[int, int] = {}
    for entry in entries:
        # The ring buffer keeps microseconds; the journal keeps seconds. Lines of one second get
        # increasing microseconds, fixed by the second (so the same episode prints the same).
        nth = seen_in_second.get(entry.time_s, 0)
        seen_in_second[entry.time_s] = nth + 1
        micros = zlib.crc32(str(entry.time_s).encode()) % 900_000 + 23 * nth
        if "notime" in keys:
            stamp = ""
        elif "ctime" in keys:
            stamp = time.strftime("[%a %b %e %H:%M:%S %Y] ", time.gmtime(entry.time_s + skew_s))
        else:
            stamp = f"[{entry.time_s - boot_s:5d}.{micros:06d}] "
        prefix = f"{'kern':<6}:{LEVELS[entry.priority]:<6}: " if "decode" in keys else ""
        out.append(f"{prefix}{stamp}{entry.message}\n")
    return ToolReply("".join(out))
