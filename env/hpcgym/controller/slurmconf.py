r"""Read the image's real slurm.conf into the topology the controller simulates.

Only the syntax matters here (case-insensitive keys, `#` comments, `\` continuations, quoted values,
`NodeName=DEFAULT`/`PartitionName=DEFAULT` lines, hostlist ranges in NodeName, NodeAddr, NodeHostname
and Port); what the values mean for node and job state is `slurmctld.py`'s business.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from hpcgym.controller.hostlist import expand_hostlist
from hpcgym.controller.timefmt import TimeLimit, parse_time_limit
from hpcgym.errors import ControllerError

# Where every Slurm client and daemon looks for the configuration on its node.
SLURM_CONF_PATH = "/etc/slurm/slurm.conf"
# Slurm reads slurm.conf with fgets into a buffer of this many bytes (parse_config.c, BUFFER_SIZE):
# a longer line arrives in pieces, each parsed as a line of its own, and a continued line stops
# growing there. It also keeps a line the agent made 3 MB long from costing shlex minutes.
LINE_BUFFER_CHARS = 4096
# How Slurm 22.05 words a NodeName that two lines define (it checks the name, says NodeHostName).
DUPLICATED_NODE = "Duplicated NodeHostName"


@dataclass(frozen=True)
class NodeConf:
    """One node as slurm.conf describes it (after range expansion)."""

    name: str
    hostname: str
    addr: str
    port: int
    boards: int = 1
    sockets_per_board: int = 1
    cores_per_socket: int = 1
    threads_per_core: int = 1
    cpus: int = 1
    real_memory_mb: int = 1
    tmp_disk_mb: int = 0
    weight: int = 1
    gres: str = ""
    features: str = ""
    state: str = "UNKNOWN"


@dataclass(frozen=True)
class PartitionConf:
    """One PartitionName line."""

    name: str
    nodes: tuple[str, ...]
    default: bool = False
    max_time_min: TimeLimit = None
    default_time_min: TimeLimit = None
    max_nodes: int | None = None
    min_nodes: int = 0
    state: str = "UP"
    priority_tier: int = 1
    root_only: bool = False
    hidden: bool = False


@dataclass(frozen=True)
class SlurmConf:
    """The parts of slurm.conf the controller acts on; `options` keeps every plain key as written."""

    cluster_name: str
    controller_host: str
    controller_addr: str
    nodes: tuple[NodeConf, ...]
    partitions: tuple[PartitionConf, ...]
    slurmd_timeout_s: int = 300
    return_to_service: int = 0
    min_job_age_s: int = 300
    kill_wait_s: int = 30
    # Licenses=: each cluster-wide license and how many the site has, as slurm.conf lists them.
    licenses: tuple[tuple[str, int], ...] = ()
    options: dict[str, str] = field(default_factory=dict)

    def node(self, name: str) -> NodeConf | None:
        return next((node for node in self.nodes if node.name == name), None)


_NODE_KEYS = {
    "boards": "boards",
    "socketsperboard": "sockets_per_board",
    "sockets": "sockets_per_board",
    "corespersocket": "cores_per_socket",
    "threadspercore": "threads_per_core",
    "cpus": "cpus",
    "procs": "cpus",
    "realmemory": "real_memory_mb",
    "tmpdisk": "tmp_disk_mb",
    "weight": "weight",
}


def _physical_lines(text: str) -> list[str]:
    size = LINE_BUFFER_CHARS - 1
    return [raw[i : i + size] for raw in text.splitlines() for i in range(0, max(len(raw), 1), size)]


def _logical_lines(text: str) -> list[str]:
    lines, pending = [], ""
    for raw in _physical_lines(text):
        line = raw.split("#", 1)[0].rstrip()
        if line.endswith("\\") and len(pending) + len(line) < LINE_BUFFER_CHARS:
            pending += line[:-1] + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            lines.append(line)
    return lines


def _pairs(line: str) -> list[tuple[str, str]]:
    try:
        # shlex only where quoting needs it: it costs some 100 times str.split per line.
        quoted = '"' in line or "'" in line or "\\" in line
        tokens = shlex.split(line) if quoted else line.split()
    except ValueError as error:
        raise ControllerError(f"slurm.conf: cannot parse line {line[:200]!r}: {error}") from None
    pairs = []
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep:
            raise ControllerError(f"slurm.conf: expected KEY=VALUE, got {token!r} in {line!r}")
        pairs.append((key.lower(), value))
    return pairs


def _spread(values: str, count: int, what: str) -> list[str]:
    # NodeAddr, NodeHostname and Port may be one value for all nodes of the line or one per node.
    if not values:
        return []
    expanded = expand_hostlist(values)
    if len(expanded) == 1:
        return expanded * count
    if len(expanded) != count:
        raise ControllerError(f"slurm.conf: {what}={values} does not match the {count} node names")
    return expanded


def _finalize_layout(numbers: dict[str, int]) -> None:
    # read_config.c `_parse_nodename` (22.05): a zero count is reset to 1; missing Sockets are
    # inferred from CPUs; missing CPUs are sockets x cores x threads; CPUs that are none of
    # sockets, sockets x cores or sockets x cores x threads are reset to the last ("NodeNames=...
    # CPUs=N match no Sockets, Sockets*CoresPerSocket or Sockets*CoresPerSocket*ThreadsPerCore.
    # Resetting CPUs.").
    for attr in ("boards", "sockets_per_board", "cores_per_socket", "threads_per_core", "cpus"):
        if numbers.get(attr) == 0:
            numbers[attr] = 1
    boards = numbers.get("boards", 1)
    cores, threads = numbers.get("cores_per_socket", 1), numbers.get("threads_per_core", 1)
    if "sockets_per_board" not in numbers:
        cpus = numbers.get("cpus")
        per_core = cores * threads
        fits = cpus is not None and cpus >= per_core and cpus % per_core == 0
        inferred = cpus // per_core if fits and cpus is not None else boards
        numbers["sockets_per_board"] = max(1, inferred // boards) if inferred % boards == 0 else inferred
        if inferred % boards:
            numbers["boards"] = boards = 1
    sockets = boards * numbers["sockets_per_board"]
    if numbers.get("cpus") not in (sockets, sockets * cores, sockets * cores * threads):
        numbers["cpus"] = sockets * cores * threads


def _node_lines(pairs: list[tuple[str, str]], defaults: dict[str, str], port: int) -> list[NodeConf]:
    values = {**defaults, **dict(pairs)}
    names = expand_hostlist(values["nodename"])
    hostnames = _spread(values.get("nodehostname", ""), len(names), "NodeHostname") or names
    addrs = _spread(values.get("nodeaddr", ""), len(names), "NodeAddr") or hostnames
    ports = _spread(values.get("port", ""), len(names), "Port") or [str(port)] * len(names)
    numbers = {attr: int(values[key]) for key, attr in _NODE_KEYS.items() if key in values}
    _finalize_layout(numbers)
    return [
        NodeConf(
            name=name,
            hostname=hostname,
            addr=addr,
            port=int(node_port),
            gres=values.get("gres", ""),
            features=values.get("feature", values.get("features", "")),
            state=values.get("state", "UNKNOWN").upper(),
            **numbers,
        )
        for name, hostname, addr, node_port in zip(names, hostnames, addrs, ports, strict=True)
    ]


def _partition_line(
    pairs: list[tuple[str, str]], defaults: dict[str, str], all_nodes: list[str]
) -> PartitionConf:
    values = {**defaults, **dict(pairs)}
    node_expr = values.get("nodes", "")
    nodes = all_nodes if node_expr.upper() == "ALL" else expand_hostlist(node_expr)
    max_nodes = values.get("maxnodes", "UNLIMITED")
    max_time = parse_time_limit(values.get("maxtime", "INFINITE"))
    default_time = parse_time_limit(values["defaulttime"]) if "defaulttime" in values else None
    if default_time is not None and max_time is not None and default_time > max_time:
        # slurmctld: "partition P DefaultTime exceeds MaxTime (D > M)", and the DefaultTime is dropped.
        default_time = None
    return PartitionConf(
        name=values["partitionname"],
        nodes=tuple(nodes),
        default=values.get("default", "NO").upper() == "YES",
        max_time_min=max_time,
        default_time_min=default_time,
        max_nodes=None if max_nodes.upper() in ("UNLIMITED", "INFINITE") else int(max_nodes),
        min_nodes=int(values.get("minnodes", "0")),
        state=values.get("state", "UP").upper(),
        priority_tier=int(values.get("prioritytier", values.get("priority", "1"))),
        root_only=values.get("rootonly", "NO").upper() == "YES",
        hidden=values.get("hidden", "NO").upper() == "YES",
    )


def parse_licenses(text: str) -> tuple[tuple[str, int], ...] | None:
    """`name[:count],...` (count 1 when left out), as Licenses= and `sbatch -L` take it; None if malformed.

    A name given twice adds up, as slurmctld's license list does.
    """
    counts: dict[str, int] = {}
    for item in text.split(","):
        name, sep, count_text = item.replace("*", ":").partition(":")
        count = int(count_text) if count_text.isdigit() and count_text.isascii() else None
        if not name or (sep and count is None):
            return None
        counts[name] = counts.get(name, 0) + (count if count is not None else 1)
    return tuple(counts.items())


def parse_slurm_conf(text: str) -> SlurmConf:
    """Parse slurm.conf text.

    Raises:
        ControllerError: a line is malformed, a number is not one, or ClusterName/SlurmctldHost/nodes
            are missing. Every caller treats it as a file slurmctld or slurmd would refuse.
    """
    try:
        return _parse_slurm_conf(text)
    except ValueError as e:
        # int() of a value the agent wrote (SlurmdTimeout=x, CPUs=²): s_p_parse's words for it.
        found = re.search(r"with base 10: '(.*)'$", str(e))
        value = found[1] if found else "?"
        raise ControllerError(f'slurm.conf: "{value}" is not a valid number') from None


def _parse_slurm_conf(text: str) -> SlurmConf:
    options: dict[str, str] = {}
    node_defaults: dict[str, str] = {}
    part_defaults: dict[str, str] = {}
    nodes: list[NodeConf] = []
    partition_lines: list[list[tuple[str, str]]] = []
    for line in _logical_lines(text):
        if line.split()[0].lower() == "include":
            continue  # plugstack and friends configure nothing the controller simulates
        pairs = _pairs(line)
        first_key, first_value = pairs[0]
        if first_key == "nodename":
            if first_value.upper() == "DEFAULT":
                node_defaults.update(dict(pairs[1:]))
            else:
                port = int(options.get("slurmdport", "6818"))
                nodes.extend(_node_lines(pairs, node_defaults, port))
        elif first_key == "partitionname":
            if first_value.upper() == "DEFAULT":
                part_defaults.update(dict(pairs[1:]))
            else:
                partition_lines.append(pairs)
        else:
            for key, value in pairs:
                # The first SlurmctldHost is the primary; later ones are backups.
                if key in ("slurmctldhost", "controlmachine") and "slurmctldhost" in options:
                    continue
                options["slurmctldhost" if key == "controlmachine" else key] = value
    if "clustername" not in options or "slurmctldhost" not in options:
        raise ControllerError("slurm.conf: ClusterName and SlurmctldHost are required")
    all_names = [node.name for node in nodes]
    seen: set[str] = set()
    for name in all_names:
        if name in seen:
            # node_conf.c `_build_single_nodeline_info`: a node defined twice is fatal to every daemon.
            raise ControllerError(f"{DUPLICATED_NODE} {name} in config file")
        seen.add(name)
    partitions = [_partition_line(pairs, part_defaults, all_names) for pairs in partition_lines]
    host, _, addr = options["slurmctldhost"].partition("(")
    licenses = parse_licenses(options["licenses"]) if options.get("licenses") else ()
    if licenses is None:
        raise ControllerError(f"slurm.conf: invalid Licenses={options['licenses'][:200]}")
    return SlurmConf(
        cluster_name=options["clustername"],
        controller_host=host,
        controller_addr=addr.rstrip(")") or host,
        nodes=tuple(nodes),
        partitions=tuple(partitions),
        slurmd_timeout_s=int(options.get("slurmdtimeout", "300")),
        return_to_service=int(options.get("returntoservice", "0")),
        min_job_age_s=int(options.get("minjobage", "300")),
        kill_wait_s=int(options.get("killwait", "30")),
        licenses=licenses,
        options=options,
    )


def load_slurm_conf(path: Path) -> SlurmConf:
    """Read and parse a slurm.conf file (the image's `/etc/slurm/slurm.conf`)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ControllerError(
            f"cannot read slurm.conf at {path}: {error.strerror}", hint="build the image or pass --slurm-conf"
        ) from None
    return parse_slurm_conf(text)
