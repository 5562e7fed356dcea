"""ping (iputils 20210202, Rocky 9) over the simulated network.

The sandboxes have only loopback, so the real ping would say "Network is unreachable" on a healthy
cluster and mislead exactly the agents that check a route. This one asks the controller's network
model, as curl and slurmd do: no route fails at connect(), a gateway that is no router gives
"Destination Host Unreachable", an address nobody owns (or a node whose eth0 is down) never answers,
and a reachable node answers with ttl 64 on its own subnet or 63 through a router. Round-trip times
are fixed per (source, destination, sequence), so the same commands print the same bytes.

Without -c or -w the real ping runs until interrupted; here it stops after `UNBOUNDED_COUNT`
packets, as if the operator pressed Ctrl-C then.
"""

from __future__ import annotations

import math
import zlib
from ipaddress import IPv4Address

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import Prologue
from hpcgym.controller.commands.usage import read_help
from hpcgym.controller.services.network import Path

VERSION = "ping from iputils 20210202\n"
UNBOUNDED_COUNT = 4
USAGE = read_help("ping-help.txt")
_FLAGS = "aABdfhLnOqUvVR4b6"
_VALUED = "cIilmMpQsStwWTFN"
OPTIONS = (
    *(Option(letter, letter) for letter in _FLAGS),
    *(Option(letter, letter, arg=Arg.REQUIRED) for letter in _VALUED),
)
# ping -h prints its usage on stderr and exits 2, as a bad flag does.
PROLOGUE = Prologue(
    "ping",
    OPTIONS,
    answers=(("h", ToolReply("", USAGE, 2)), ("V", ToolReply(VERSION))),
    hint=USAGE,
    error_exit=2,
)
LOCALHOST_V6 = "::1"


class PingError(Exception):
    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.text = text
        self.code = code


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    try:
        return _ping(ctx, dict(parsed.found), parsed.operands)
    except PingError as e:
        return ToolReply("", e.text, e.code)


def _number(value: str | None, low: int, high: int) -> int:
    try:
        number = int(value or "")
    except ValueError:
        raise PingError(f"ping: invalid argument: '{value}'\n", 1) from None
    if not low <= number <= high:
        raise PingError(f"ping: invalid argument: '{value}': out of range: {low} <= value <= {high}\n", 1)
    return number


def _ping(ctx: Context, options: dict[str, str | None], operands: list[str]) -> ToolReply:
    if not operands:
        raise PingError("ping: usage error: Destination address required\n", 1)
    count = _number(options["c"], 1, 2**63 - 1) if "c" in options else None
    deadline = _number(options["w"], 0, 2**31 - 1) if "w" in options else None
    size = _number(options["s"], 0, 65507) if "s" in options else 56
    if count is None:
        count = max(deadline, 1) if deadline is not None else UNBOUNDED_COUNT
    host = operands[-1]
    if host in ("localhost", LOCALHOST_V6) and "4" not in options:
        return _loopback_v6(host, count, size, quiet="q" in options, numeric="n" in options)
    services = ctx.services
    network = services.network
    dest = IPv4Address("127.0.0.1") if host == "localhost" else network.resolve(ctx.node, host)
    if dest is None:
        raise PingError(f"ping: {host}: Name or service not known\n", 2)
    path = network.path(ctx.node, dest)
    if path is Path.NO_ROUTE:
        raise PingError("ping: connect: Network is unreachable\n", 2)
    numeric = "n" in options or _is_numeric(host)
    if numeric:
        shown = str(dest)
    else:
        name = _reverse_name(ctx, dest) or host
        shown = f"{name} ({dest})"
    head = f"PING {host} ({dest}) {size}({size + 28}) bytes of data.\n"
    owner = services.node_at(dest)
    answers = path is Path.LOCAL or (
        owner is not None and (network.is_up(owner) or owner == ctx.node) and path is not Path.DEAD_GATEWAY
    )
    lines: list[str] = []
    if answers:
        ttl = 63 if path is Path.ROUTED else 64
        times = [_rtt(ctx.node, str(dest), seq, local=path is Path.LOCAL) for seq in range(1, count + 1)]
        lines = _replies(shown, size, ttl, times)
        summary = _summary(host, count, count, 0, times)
        code = 0
    elif path is Path.SUBNET or path is Path.DEAD_GATEWAY:
        source = network.address(ctx.node)
        lines = [f"From {source} icmp_seq={n} Destination Host Unreachable\n" for n in range(1, count + 1)]
        summary = _summary(host, count, 0, count, [])
        code = 1
    else:
        summary = _summary(host, count, 0, 0, [])
        code = 1
    body = "" if "q" in options else "".join(lines)
    return ToolReply(head + body + summary, "", code)


def _loopback_v6(host: str, count: int, size: int, *, quiet: bool, numeric: bool) -> ToolReply:
    shown = LOCALHOST_V6 if numeric or host == LOCALHOST_V6 else f"localhost ({LOCALHOST_V6})"
    head = f"PING {host}({shown}) {size} data bytes\n"
    times = [_rtt("lo", LOCALHOST_V6, seq, local=True) for seq in range(1, count + 1)]
    lines = _replies(shown, size, 64, times)
    return ToolReply(head + ("" if quiet else "".join(lines)) + _summary(host, count, count, 0, times))


def _replies(shown: str, size: int, ttl: int, times: list[float]) -> list[str]:
    return [
        f"{size + 8} bytes from {shown}: icmp_seq={seq} ttl={ttl} time={rtt:.3f} ms\n"
        for seq, rtt in enumerate(times, 1)
    ]


def _summary(host: str, sent: int, received: int, errors: int, times: list[float]) -> str:
    loss = round(100 * (sent - received) / sent)
    error_text = f", +{errors} errors" if errors else ""
    elapsed = 1001 * (sent - 1)
    counts = f"{sent} packets transmitted, {received} received{error_text}, {loss}% packet loss"
    text = f"\n--- {host} ping statistics ---\n{counts}, time {elapsed}ms\n"
    if times:
        mean = sum(times) / len(times)
        mdev = math.sqrt(max(sum(t * t for t in times) / len(times) - mean * mean, 0.0))
        text += f"rtt min/avg/max/mdev = {min(times):.3f}/{mean:.3f}/{max(times):.3f}/{mdev:.3f} ms\n"
    elif errors:
        text += "\n"
    return text


def _rtt(source: str, dest: str, seq: int, *, local: bool) -> float:
    # A fixed, plausible round trip: ~0.03 ms on loopback, ~0.2 ms across the cluster's switch.
    spread = zlib.crc32(f"{source}>{dest}#{seq}".encode()) % 1000 / 1000
    return (0.025 + 0.03 * spread) if local else (0.150 + 0.12 * spread)


def _is_numeric(host: str) -> bool:
    try:
        IPv4Address(host)
    except ValueError:
        return False
    return True


def _reverse_name(ctx: Context, dest: IPv4Address) -> str | None:
    """The first name the asking node's /etc/hosts gives `dest`, as getnameinfo would find it."""
    return next((name for name, addr in ctx.services.network.hosts(ctx.node).items() if addr == dest), None)
