"""chronyd (chrony 4.5, Rocky 9.5): the daemon that keeps a node's clock on the cluster's time.

A node's clock can be skewed (`NodeClocks.offsets`, services/peers.py): its hardware clock drifted while
chronyd was stopped. Starting chronyd corrects it only when chrony.conf allows a step (`makestep`,
as Rocky's default does: `makestep 1.0 3` steps during the first updates); without one chronyd would
slew at most 83 ms per second, so a skew of minutes stays for hours, which this model keeps as is.
`chronyc makestep` steps whenever chronyd runs. Compute nodes follow `server login01`; the login node
serves its own clock (`local stratum 10`). Which source chronyd reaches, and whether the clock agrees
with it, are decided here once, for chronyd, chronyc and timedatectl, and the grader.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Protocol

from hpcgym.controller.services.daemon import Launch, Line, RunningUnits, exec_argv, lookup_ids
from hpcgym.controller.services.units import UnitFile

if TYPE_CHECKING:
    from hpcgym.controller.services.access import NodeAccess
    from hpcgym.controller.services.network import Network
    from hpcgym.controller.services.peers import NodeClocks

VERSION = "4.5"
FEATURES = "+CMDMON +NTP +REFCLOCK +RTC +PRIVDROP +SCFILTER +SIGND +ASYNCDNS +NTS +SECHASH +IPV6 +DEBUG"
CONF = "/etc/chrony.conf"
PID_FILE = "/run/chrony/chronyd.pid"
UNIT = "chronyd.service"


class ClockHost(Protocol):
    """What chronyd asks of the cluster: its files, its source, each node's clock, what runs.

    chronyd reads chrony.conf, resolves and reaches its source, steps its node's clock to the
    controller's, and chronyc and the grader ask whether chronyd is active.
    """

    access: NodeAccess
    network: Network
    clocks: NodeClocks

    @property
    def controller_host(self) -> str: ...

    @property
    def systemd(self) -> RunningUnits: ...


def conf_directives(host: ClockHost, node: str) -> list[list[str]]:
    """chrony.conf's directives as word lists (comments and blank lines dropped)."""
    raw = host.access.read(node, CONF) or b""
    lines = (line.split("#", 1)[0].split() for line in raw.decode(errors="replace").splitlines())
    return [words for words in lines if words]


def step_threshold(host: ClockHost, node: str) -> float | None:
    """`makestep THRESHOLD LIMIT`'s threshold in seconds, or None when chronyd may not step at start."""
    for words in conf_directives(host, node):
        if words[0] == "makestep" and len(words) >= 3:
            try:
                threshold, limit = float(words[1]), int(words[2])
            except ValueError:
                return None
            return threshold if limit != 0 else None
    return None


def server(host: ClockHost, node: str) -> str | None:
    """The first `server`/`pool` name in chrony.conf, or None for a node that serves its own clock."""
    for words in conf_directives(host, node):
        if words[0] in ("server", "pool") and len(words) >= 2:
            return words[1]
    return None


def source(host: ClockHost, node: str) -> tuple[str, IPv4Address] | None:
    """The source chronyd reaches on `node` (name, address), or None (none configured or reachable)."""
    name = server(host, node)
    if name is None:
        return None
    addr = host.network.resolve(node, name)
    if addr is None or not host.network.can_reach(node, addr):
        return None
    return name, addr


def skew(host: ClockHost, node: str) -> int:
    """How far `node`'s clock is ahead of the time it serves or follows (the controller's)."""
    return host.clocks.offset(node) - host.clocks.offset(host.controller_host)


def is_synchronized(host: ClockHost, node: str) -> bool:
    """Whether chronyd runs and the node's clock agrees with its source (the login node is its own)."""
    if not host.systemd.is_active(node, UNIT):
        return False
    if server(host, node) is None:
        return True
    return source(host, node) is not None and skew(host, node) == 0


def step_lines(correction_s: int) -> list[Line]:
    """What chronyd logs when it steps the clock by `correction_s` seconds."""
    return [
        Line(f"System clock wrong by {correction_s:.6f} seconds"),
        Line(f"System clock was stepped by {correction_s:.6f} seconds"),
        Line("System clock TAI offset set to 37 seconds"),
    ]


def launch(host: ClockHost, node: str, unit: UnitFile) -> Launch:
    """Start chronyd: it picks its source and, if chrony.conf lets it, steps a skewed clock to it."""
    uid, gid = lookup_ids(host.access, node, "root")
    result = Launch(ok=True, comm="chronyd", argv=exec_argv(unit), uid=uid, gid=gid, pid_file=PID_FILE)
    result.stderr = [
        Line(f"chronyd version {VERSION} starting ({FEATURES})"),
        Line("Using right/UTC timezone to obtain leap second data"),
        Line("Loaded seccomp filter (level 2)"),
    ]
    found = source(host, node)
    if found is None:
        return result
    name, addr = found
    result.stderr.append(Line(f"Selected source {addr} ({name})"))
    offset = skew(host, node)
    threshold = step_threshold(host, node)
    if offset and threshold is not None and abs(offset) > threshold:
        result.stderr += step_lines(-offset)
        host.clocks.set_offset(node, host.clocks.offset(host.controller_host))
    return result
