"""Each node's simulated IPv4 network: its address, whether eth0 is up, and its routes.

The sandboxes have no network of their own (loopback only), so whether a daemon can reach another
node is decided here. Addresses come from the node's `/etc/hosts`; a compute node's routes come from
its RHEL network-scripts (`ifcfg-eth0`, `route-eth0`), applied at boot and by `ifup`/`ifdown`, which
is what a broken `route-eth0` breaks. How far this goes, on purpose:

- eth0 gets its address from /etc/hosts and a /24 connected route (the simulated DHCP server hands
  out addresses only, never a default gateway, so a compute node reaches the service network
  10.10.0.0/24 only through the route in route-eth0);
- a node without `ifcfg-eth0` (the login node) is provisioned statically: eth0 up, plus a default
  route via `.254` of its subnet;
- the routers are the `.254` address of each cluster subnet (or the host number the episode's site
  chose, `Network.router_host`); a route whose gateway is not on the node's own subnet, or is no
  router, carries nothing (NetworkManager installs nothing for it);
- only the path from the asking node matters (every return path works).
`ip route` inside the sandbox is the real iproute2 and shows none of this unless `ip` is routed to
the controller (commands/ip.py models `ip route` and `ip addr` over this state).
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from hpcgym.controller.services.access import NodeAccess

SCRIPTS_DIR = "/etc/sysconfig/network-scripts"
ROUTER_HOST = 254
LOOPBACK = IPv4Network("127.0.0.0/8")
# nmcli's exit code for "connection, device or access point does not exist".
NMCLI_NOT_FOUND = 10
_ROUTE_LINE = re.compile(r"^(?P<dest>default|[\d./]+)(?:\s+via\s+(?P<via>[\d.]+))?(?:\s+dev\s+(?P<dev>\S+))?")


class Path(enum.Enum):
    """Where the kernel sends a packet: what `ping` and `curl` tell apart by their errors."""

    LOCAL = "local"  # loopback or the node's own address
    SUBNET = "subnet"  # on eth0's /24, no gateway
    ROUTED = "routed"  # through a router (.254 of the subnet)
    NO_ROUTE = "no-route"  # eth0 down or no matching route: ENETUNREACH at connect()
    DEAD_GATEWAY = "dead-gateway"  # the route's gateway never answers ARP: host unreachable


@dataclass(frozen=True)
class Route:
    """One kernel route; `proto` says who installed it (`static` from route-eth0, "" by `ip route add`)."""

    dest: IPv4Network
    gateway: IPv4Address | None
    dev: str = "eth0"
    proto: str = "static"


@dataclass(frozen=True)
class IfResult:
    """What `ifup`/`ifdown` print and exit with (NetworkManager's nmcli under the hood on Rocky 9)."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0


@dataclass
class Interface:
    up: bool = False
    routes: list[Route] = field(default_factory=list)


class RouteFileError(ValueError):
    """route-eth0 has a line NetworkManager's ifcfg-rh reader rejects."""


def parse_hosts(text: str) -> dict[str, IPv4Address]:
    names: dict[str, IPv4Address] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            addr = IPv4Address(fields[0])
        except ValueError:
            continue
        for name in fields[1:]:
            names.setdefault(name, addr)
    return names


@functools.lru_cache(maxsize=64)
def _parse_hosts_bytes(raw: bytes) -> dict[str, IPv4Address]:
    # Every reachability question reads /etc/hosts again (the agent may have edited it); parsing is
    # the expensive part, and nodes share a few distinct contents, so parse each content once.
    return parse_hosts(raw.decode(errors="replace"))


# Every tick asks each node's path to the controller: the same few names and addresses each time,
# and building them (a failed IPv4Address, an IPv4Network) cost more than the rest of the question.
@functools.lru_cache(maxsize=1024)
def _dotted_quad(host: str) -> IPv4Address | None:
    try:
        return IPv4Address(host)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1024)
def _subnet_of(addr: IPv4Address) -> IPv4Network:
    return IPv4Network(f"{addr}/24", strict=False)


def parse_route_file(text: str, dev: str = "eth0") -> list[Route]:
    """Read route-IFACE in either of its formats (`ADDRESS0=`/`NETMASK0=`/`GATEWAY0=`, or `ip route` lines).

    Raises:
        RouteFileError: a value is not an address, or a netmask is not a netmask.
    """
    keyed: dict[str, str] = {}
    routes = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Z]+\d+", key.strip()):
            keyed[key.strip()] = value.strip().strip("\"'")
            continue
        match = _ROUTE_LINE.match(line)
        if match is None:
            raise RouteFileError(line)
        try:
            dest = IPv4Network("0.0.0.0/0" if match["dest"] == "default" else match["dest"], strict=False)
            via = IPv4Address(match["via"]) if match["via"] else None
        except ValueError:
            raise RouteFileError(line) from None
        routes.append(Route(dest, via, match["dev"] or dev))
    index = 0
    while f"ADDRESS{index}" in keyed:
        try:
            dest = IPv4Network(
                f"{keyed[f'ADDRESS{index}']}/{keyed.get(f'NETMASK{index}', '255.255.255.255')}", strict=False
            )
            gateway = keyed.get(f"GATEWAY{index}")
            routes.append(Route(dest, IPv4Address(gateway) if gateway else None, dev))
        except ValueError:
            raise RouteFileError(f"ADDRESS{index}") from None
        index += 1
    return routes


class Network:
    """All nodes' interfaces and routes, and the one question daemons ask: can A reach B?"""

    def __init__(self, access: NodeAccess) -> None:
        self.access = access
        self.interfaces: dict[str, Interface] = {}
        # Where the routers sit on every subnet: the site's choice (episode.site), `.254` by default.
        self.router_host = ROUTER_HOST
        self._activations = 0
        # Each node's parsed /etc/hosts with the file's version when it was read. Reachability asks
        # for it many times per request: within one request or tick (until `forget`) it is read once,
        # and across them it is read again only where its version changed (or cannot be told).
        self._hosts: dict[str, tuple[tuple[int, ...] | None, dict[str, IPv4Address]]] = {}
        self._fresh: set[str] = set()

    def forget(self) -> None:
        """Make the next question look at the nodes' files again (the controller calls it per request)."""
        self._fresh.clear()

    def hosts(self, node: str) -> dict[str, IPv4Address]:
        cached = self._hosts.get(node)
        if node in self._fresh and cached is not None:
            return cached[1]
        # The version is taken before the read: a change racing the read is seen next time.
        version = self.access.version(node, "/etc/hosts")
        if cached is None or version is None or cached[0] != version:
            raw = self.access.read(node, "/etc/hosts")
            cached = (version, _parse_hosts_bytes(raw) if raw else {})
            self._hosts[node] = cached
        self._fresh.add(node)
        return cached[1]

    def resolve(self, node: str, host: str) -> IPv4Address | None:
        """What the node's resolver returns for `host` (only /etc/hosts and dotted quads: no DNS)."""
        return _dotted_quad(host) or self.hosts(node).get(host)

    def address(self, node: str) -> IPv4Address | None:
        return self.hosts(node).get(node)

    def _subnet(self, node: str) -> IPv4Network | None:
        addr = self.address(node)
        return None if addr is None else _subnet_of(addr)

    def _has_scripts(self, node: str, iface: str) -> bool:
        return self.access.read(node, f"{SCRIPTS_DIR}/ifcfg-{iface}") is not None

    def boot(self, node: str) -> None:
        """Bring eth0 up as the node's boot would (a failing route file leaves only the subnet route)."""
        if not self._has_scripts(node, "eth0"):
            subnet = self._subnet(node)
            routes = []
            if subnet is not None:
                routes.append(Route(IPv4Network("0.0.0.0/0"), subnet.network_address + self.router_host))
            self.interfaces[node] = Interface(up=True, routes=routes)
            return
        if self.ifup(node, "eth0").exit_code != 0:
            self.interfaces[node] = Interface(up=True)

    def ifup(self, node: str, iface: str) -> IfResult:
        """Apply ifcfg-IFACE and route-IFACE, as Rocky 9's `ifup` (nmcli connection load + up) does."""
        cfg = f"{SCRIPTS_DIR}/ifcfg-{iface}"
        if iface != "eth0" or not self._has_scripts(node, iface):
            return _unknown_connection(cfg)
        raw = self.access.read(node, f"{SCRIPTS_DIR}/route-{iface}")
        try:
            routes = parse_route_file(raw.decode(errors="replace"), iface) if raw else []
        except RouteFileError:
            return _unknown_connection(cfg)
        # NetworkManager activates the connection anyway but cannot install a route whose gateway is
        # not on the interface's subnet; it only logs a warning.
        subnet = self._subnet(node)
        routes = [r for r in routes if r.gateway is None or (subnet is not None and r.gateway in subnet)]
        self.interfaces[node] = Interface(up=True, routes=routes)
        self._activations += 1
        path = f"/org/freedesktop/NetworkManager/ActiveConnection/{self._activations}"
        return IfResult(f"Connection successfully activated (D-Bus active path: {path})\n")

    def ifdown(self, node: str, iface: str) -> IfResult:
        current = self.interfaces.get(node)
        if iface != "eth0" or current is None or not current.up:
            return IfResult(
                "",
                f"Error: '{iface}' is not an active connection.\nError: no active connection provided.\n",
                NMCLI_NOT_FOUND,
            )
        self.interfaces[node] = Interface(up=False)
        self._activations += 1
        path = f"/org/freedesktop/NetworkManager/ActiveConnection/{self._activations}"
        return IfResult(f"Connection '{iface}' successfully deactivated (D-Bus active path: {path})\n")

    def set_routes(self, node: str, routes: list[Route], *, up: bool = True) -> None:
        """Scenario hook: replace a node's live routes without touching its files."""
        self.interfaces[node] = Interface(up=up, routes=list(routes))

    def subnet(self, node: str) -> IPv4Network | None:
        """The /24 eth0 sits on, whether or not eth0 is up."""
        return self._subnet(node)

    def is_up(self, node: str) -> bool:
        iface = self.interfaces.get(node)
        return iface is not None and iface.up

    def add_route(self, node: str, route: Route) -> str | None:
        """`ip route add`: None, or iproute2's error text."""
        iface = self.interfaces.get(node)
        subnet = self._subnet(node)
        if iface is None or not iface.up:
            return "Error: Nexthop device is not up."
        if route.gateway is not None and (subnet is None or route.gateway not in subnet):
            return "Error: Nexthop has invalid gateway."
        if any(existing.dest == route.dest for existing in iface.routes):
            return "RTNETLINK answers: File exists"
        iface.routes.append(route)
        return None

    def delete_route(self, node: str, dest: IPv4Network) -> str | None:
        """`ip route del`: None, or iproute2's error text."""
        iface = self.interfaces.get(node)
        kept = [route for route in (iface.routes if iface else []) if route.dest != dest]
        if iface is None or len(kept) == len(iface.routes):
            return "RTNETLINK answers: No such process"
        iface.routes = kept
        return None

    def routes(self, node: str) -> list[Route]:
        iface = self.interfaces.get(node)
        return list(iface.routes) if iface is not None and iface.up else []

    def path(self, node: str, dest: IPv4Address) -> Path:
        """How a packet from `node` to `dest` leaves: locally, on the subnet, via a router, or not at all."""
        own = self.address(node)
        if dest in LOOPBACK or dest == own:
            return Path.LOCAL
        iface = self.interfaces.get(node)
        subnet = self._subnet(node)
        if iface is None or not iface.up or subnet is None:
            return Path.NO_ROUTE
        if dest in subnet:
            return Path.SUBNET
        candidates = [route for route in iface.routes if dest in route.dest]
        if not candidates:
            return Path.NO_ROUTE
        best = max(candidates, key=lambda route: route.dest.prefixlen)
        gateway = best.gateway
        if gateway is not None and gateway in subnet and int(gateway) & 0xFF == self.router_host:
            return Path.ROUTED
        return Path.DEAD_GATEWAY

    def can_reach(self, node: str, dest: IPv4Address) -> bool:
        """Whether a packet from `node` gets to `dest`: loopback, own subnet, or a route via a router."""
        return self.path(node, dest) in (Path.LOCAL, Path.SUBNET, Path.ROUTED)


def _unknown_connection(cfg: str) -> IfResult:
    return IfResult(
        "",
        f"Could not load file '{cfg}'\nError: unknown connection '{cfg}'.\n",
        NMCLI_NOT_FOUND,
    )
