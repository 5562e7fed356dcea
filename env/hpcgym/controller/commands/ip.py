"""`ip route` and `ip addr` (iproute2 6.2, Rocky 9) over the node's simulated interface.

Only routing is modelled: `ip route [show|list]`, `ip route get ADDR`, `ip route add|del|replace
DEST [via GW] [dev IFACE]`, and `ip addr`/`ip link` listings of lo and eth0. For the agent to see
these, `ip` must be a stub in the image (it is the real iproute2 otherwise, which knows no eth0).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.services import ServiceManager
from hpcgym.controller.services.network import Route

# iproute2 exits 1 for a usage error and 2 for an error from the kernel.
EXIT_USAGE, EXIT_KERNEL = 1, 2
METRIC = 100


def _format_route(services: ServiceManager, node: str, route: Route) -> str:
    dest = "default" if route.dest.prefixlen == 0 else str(route.dest)
    via = f" via {route.gateway}" if route.gateway is not None else ""
    proto = f" proto {route.proto} metric {METRIC}" if route.proto else ""
    return f"{dest}{via} dev {route.dev}{proto}\n"


def _show_routes(services: ServiceManager, node: str) -> str:
    routes = services.network.routes(node)
    ordered = sorted(
        routes, key=lambda r: (r.dest.prefixlen != 0, int(r.dest.network_address), r.dest.prefixlen)
    )
    lines = [_format_route(services, node, r) for r in ordered if r.dest.prefixlen == 0]
    subnet, addr = services.network.subnet(node), services.network.address(node)
    connected = []
    if services.network.is_up(node) and subnet is not None:
        connected.append((subnet, f"{subnet} dev eth0 proto kernel scope link src {addr} metric {METRIC}\n"))
    others = [(r.dest, _format_route(services, node, r)) for r in ordered if r.dest.prefixlen != 0]
    lines += [text for _, text in sorted(connected + others, key=lambda item: int(item[0].network_address))]
    return "".join(lines)


def _parse_route(words: list[str]) -> tuple[Route | None, str | None]:
    if not words:
        return None, 'Error: either "to" is duplicate, or "" is a garbage.'
    dest_text = words[0]
    try:
        dest = IPv4Network("0.0.0.0/0" if dest_text == "default" else dest_text, strict=False)
    except ValueError:
        return None, f'Error: any valid prefix is expected rather than "{dest_text}".'
    gateway, dev = None, "eth0"
    rest = words[1:]
    while rest:
        key = rest.pop(0)
        value = rest.pop(0) if rest else ""
        if key == "via":
            try:
                gateway = IPv4Address(value)
            except ValueError:
                return None, f'Error: inet address is expected rather than "{value}".'
        elif key == "dev":
            dev = value
        elif key not in ("proto", "metric", "scope", "src", "table"):
            return None, f'Error: either "to" is duplicate, or "{key}" is a garbage.'
    if dev not in ("eth0",):
        return None, f'Cannot find device "{dev}"'
    return Route(dest, gateway, dev, proto=""), None


def _route(services: ServiceManager, node: str, words: list[str]) -> ToolReply:
    verb = words[0] if words else "show"
    rest = words[1:]
    network = services.network
    if verb in ("show", "list", "ls", "s", "l"):
        return ToolReply(_show_routes(services, node))
    if verb == "get":
        if not rest:
            return ToolReply("", 'Error: either "to" is duplicate, or "" is a garbage.\n', EXIT_USAGE)
        try:
            dest = IPv4Address(rest[0])
        except ValueError:
            return ToolReply("", f'Error: inet address is expected rather than "{rest[0]}".\n', EXIT_USAGE)
        if not network.can_reach(node, dest) and not any(dest in r.dest for r in network.routes(node)):
            return ToolReply("", "RTNETLINK answers: Network is unreachable\n", EXIT_KERNEL)
        via = next((r.gateway for r in network.routes(node) if dest in r.dest and r.gateway), None)
        subnet = network.subnet(node)
        hop = f" via {via}" if via is not None and (subnet is None or dest not in subnet) else ""
        return ToolReply(f"{dest}{hop} dev eth0 src {network.address(node)} uid 0 \n    cache \n")
    if verb in ("add", "del", "delete", "replace", "change"):
        route, error = _parse_route(rest)
        if error is not None or route is None:
            return ToolReply("", f"{error}\n", EXIT_USAGE)
        if verb in ("del", "delete", "replace", "change"):
            problem = network.delete_route(node, route.dest)
            if problem is not None and verb in ("del", "delete"):
                return ToolReply("", f"{problem}\n", EXIT_KERNEL)
            if verb in ("del", "delete"):
                return ToolReply()
        problem = network.add_route(node, route)
        return ToolReply("", f"{problem}\n", EXIT_KERNEL) if problem is not None else ToolReply()
    return ToolReply("", f'Command "{verb}" is unknown, try "ip route help".\n', 255)


def _addr(services: ServiceManager, node: str, *, links_only: bool, brief: bool) -> ToolReply:
    network = services.network
    up = network.is_up(node)
    state = "UP" if up else "DOWN"
    addr, subnet = network.address(node), network.subnet(node)
    # A stable, node-specific MAC: QEMU's prefix and the node's address.
    mac = "52:54:00:" + ":".join(f"{int(octet):02x}" for octet in str(addr or "0.0.0.0").split(".")[1:])
    inet = f"{addr}/{subnet.prefixlen}" if up and addr is not None and subnet is not None else ""
    if brief:
        if links_only:
            return ToolReply(
                f"{'lo':<16} UNKNOWN        00:00:00:00:00:00 <LOOPBACK,UP,LOWER_UP> \n"
                f"{'eth0':<16} {state:<14} {mac} {_flags(up)} \n"
            )
        return ToolReply(
            f"{'lo':<16} UNKNOWN        127.0.0.1/8 \n{'eth0':<16} {state:<14} {inet} \n".replace(
                "  \n", " \n"
            )
        )
    lo = (
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default "
        "qlen 1000\n"
    )
    eth = (
        f"2: eth0: {_flags(up)} mtu 1500 qdisc fq_codel state {state} mode DEFAULT group default qlen 1000\n"
    )
    if links_only:
        return ToolReply(
            lo
            + "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
            + eth
            + f"    link/ether {mac} brd ff:ff:ff:ff:ff:ff\n"
        )
    text = (
        lo.replace(" mode DEFAULT", "")
        + "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
        + "    inet 127.0.0.1/8 scope host lo\n"
        + "       valid_lft forever preferred_lft forever\n"
        + eth.replace(" mode DEFAULT", "")
        + f"    link/ether {mac} brd ff:ff:ff:ff:ff:ff\n"
    )
    if inet and subnet is not None:
        text += (
            f"    inet {inet} brd {subnet.broadcast_address} scope global noprefixroute eth0\n"
            "       valid_lft forever preferred_lft forever\n"
        )
    return ToolReply(text)


def _flags(up: bool) -> str:
    return "<BROADCAST,MULTICAST,UP,LOWER_UP>" if up else "<BROADCAST,MULTICAST>"


# Options that change nothing in what we print (colour, statistics, details, families we lack).
IGNORED_OPTIONS = {"-4", "-c", "-color", "--color", "-s", "-stats", "-d", "-details", "-h", "-human"}
BRIEF_OPTIONS = {"-br", "-brief"}


def run(ctx: Context, args: list[str]) -> ToolReply:
    services = ctx.services
    brief = any(word in BRIEF_OPTIONS for word in args)
    words = [word for word in args if word not in IGNORED_OPTIONS and word not in BRIEF_OPTIONS]
    if "-6" in words:
        return ToolReply()  # the simulated network is IPv4 only
    if not words:
        return ToolReply("", "Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }\n", 255)
    obj = words[0]
    if "route".startswith(obj) and obj.startswith("r"):
        return _route(services, ctx.node, words[1:])
    if obj in ("a", "ad", "add", "addr", "addre", "addres", "address"):
        return _addr(services, ctx.node, links_only=False, brief=brief)
    if obj in ("l", "li", "lin", "link"):
        return _addr(services, ctx.node, links_only=True, brief=brief)
    if obj in ("n", "ne", "nei", "neig", "neigh", "neighbor", "neighbour"):
        return ToolReply()
    return ToolReply("", f'Object "{obj}" is unknown, try "ip help".\n', 255)
