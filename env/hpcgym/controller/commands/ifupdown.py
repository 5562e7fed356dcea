"""ifup / ifdown as Rocky 9 ships them: NetworkManager's wrappers over `nmcli connection load/up/down`.

They apply the node's own `/etc/sysconfig/network-scripts/ifcfg-IFACE` and `route-IFACE` to its
simulated interface (services/network.py), so editing a broken route-eth0 and running `ifup eth0`
is what brings the route back. Registered as two programs, `ifup` and `ifdown`.
"""

from __future__ import annotations

from hpcgym.controller.commands.base import Context, ToolReply


def _iface(args: list[str]) -> str | None:
    if not args:
        return None
    name = args[0]
    return name.removeprefix("ifcfg-")


def _run(ctx: Context, args: list[str], prog: str) -> ToolReply:
    """Run `prog` (ifup or ifdown): one configuration name, handed to the node's network service."""
    iface = _iface(args)
    if iface is None:
        return ToolReply(f"usage: {prog} <configuration>\n", "", 1)
    network = ctx.services.network
    result = network.ifup(ctx.node, iface) if prog == "ifup" else network.ifdown(ctx.node, iface)
    return ToolReply(result.stdout, result.stderr, result.exit_code)


def run_ifup(ctx: Context, args: list[str]) -> ToolReply:
    return _run(ctx, args, "ifup")


def run_ifdown(ctx: Context, args: list[str]) -> ToolReply:
    return _run(ctx, args, "ifdown")
