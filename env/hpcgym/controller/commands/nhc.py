"""nhc (LBNL Node Health Check 1.4.3) run by hand on a node: the same checks slurmd runs on its interval.

Like the real one, a clean run prints nothing and exits 0, and resumes the node when NHC had drained
it ("NHC:" reason); a failing run prints NHC's error line, drains the node (unless it is already
out) and exits 1. The checks themselves live in services/nhc.py.
"""

from __future__ import annotations

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.services import nhc as health


def run(ctx: Context, args: list[str]) -> ToolReply:
    services = ctx.services
    if ctx.user.uid != 0:
        return ToolReply("", "ERROR:  nhc:  Health check failed:  NHC must be run as root.\n", 1)
    message = health.run_on_node(ctx.slurm, services, ctx.node)
    if message is None:
        return ToolReply("")
    return ToolReply(f"ERROR:  nhc:  Health check failed:  {message}\n", "", 1)
