"""sinfo: node and partition summaries (captures */sinfo*.out).

sinfo groups nodes into records: in the partition view one record per partition and distinct set of
displayed values (so one row per partition and state by default), in the node view (-N) one per node
and partition. Node lists, counts and the A/I/O/T totals are aggregated over a record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hpcgym.controller.commands import slurm_json, usage
from hpcgym.controller.commands.base import (
    Context,
    Field,
    ToolReply,
    check_rpc,
    parse_format,
    parse_long_format,
    render_line,
)
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import SLURM_VERSION_REPLY, Prologue, slurm_hint
from hpcgym.controller.hostlist import compress_hostlist, expand_names
from hpcgym.controller.state import NodeBase, NodeFlag, Partition, PartitionState, SlurmNode
from hpcgym.controller.timefmt import format_ctime, format_duration, format_iso

OPTIONS = (
    Option("all", "a", "all"),
    Option("dead", "d", "dead"),
    Option("exact", "e", "exact"),
    Option("noheader", "h", "noheader"),
    Option("iterate", "i", "iterate", Arg.REQUIRED),
    Option("long", "l", "long"),
    Option("clusters", "M", "clusters", Arg.REQUIRED),
    Option("nodes", "n", "nodes", Arg.REQUIRED),
    Option("Node", "N", "Node"),
    Option("format", "o", "format", Arg.REQUIRED),
    Option("Format", "O", "Format", Arg.REQUIRED),
    Option("partition", "p", "partition", Arg.REQUIRED),
    Option("responding", "r", "responding"),
    Option("list-reasons", "R", "list-reasons"),
    Option("summarize", "s", "summarize"),
    Option("sort", "S", "sort", Arg.REQUIRED),
    Option("states", "t", "states", Arg.REQUIRED),
    Option("reservation", "T", "reservation"),
    Option("verbose", "v", "verbose"),
    Option("version", "V", "version"),
    Option("help", None, "help"),
    Option("usage", None, "usage"),
    Option("hide", None, "hide"),
    Option("future", None, "future"),
    Option("local", None, "local"),
    Option("federation", None, "federation"),
    Option("noconvert", None, "noconvert"),
    Option("json", None, "json", Arg.OPTIONAL),
    Option("yaml", None, "yaml", Arg.OPTIONAL),
)
PROLOGUE = Prologue(
    "sinfo",
    OPTIONS,
    answers=(
        ("help", ToolReply(usage.SINFO_HELP)),
        ("usage", ToolReply(usage.SINFO_USAGE)),
        ("version", SLURM_VERSION_REPLY),
    ),
    hint=slurm_hint("sinfo"),
)

DEFAULT_FORMAT = "%#P %.5a %.10l %.6D %.6t %N"
LONG_FORMAT = "%#P %.5a %.10l %.10s %.4r %.8h %.10g %.6D %.11T %N"
NODE_FORMAT = "%#N %.6D %.9P %6t"
NODE_LONG_FORMAT = "%#N %.6D %.9P %.11T %4c %.8z %.6m %.8d %.6w %.8f %20E"
SUMMARY_FORMAT = "%#P %.5a %.10l %.16F %N"
REASON_FORMAT = "%20E %9u %19H %N"
REASON_LONG_FORMAT = "%20E %12U %19H %6t %N"

# Node states sinfo -t accepts, as its error message lists them.
VALID_STATES = (
    "unknown,down,idle,allocated,?,mixed,future,drain,drained,draining,no_respond,reserved,perfctrs,cloud,"
    "completing,powering_down,powered_down,power_down,powering_up,fail,maint,reboot,reboot^,unknown"
)

_STATE_TESTS: dict[str, Callable[[SlurmNode], bool]] = {
    "unknown": lambda n: n.effective_base() is NodeBase.UNKNOWN,
    "unk": lambda n: n.effective_base() is NodeBase.UNKNOWN,
    "down": lambda n: n.effective_base() is NodeBase.DOWN,
    "idle": lambda n: n.effective_base() is NodeBase.IDLE,
    # A mixed node is partly allocated and passes `-t alloc` too (Debian's 22.05.8).
    "allocated": lambda n: n.effective_base() in (NodeBase.ALLOCATED, NodeBase.MIXED),
    "alloc": lambda n: n.effective_base() in (NodeBase.ALLOCATED, NodeBase.MIXED),
    "mixed": lambda n: n.effective_base() is NodeBase.MIXED,
    "mix": lambda n: n.effective_base() is NodeBase.MIXED,
    "future": lambda n: n.effective_base() is NodeBase.FUTURE,
    "drain": lambda n: n.has(NodeFlag.DRAIN),
    "drained": lambda n: n.state_compact().startswith("drain"),
    "draining": lambda n: n.state_compact().startswith("drng"),
    "drng": lambda n: n.state_compact().startswith("drng"),
    "no_respond": lambda n: n.has(NodeFlag.NOT_RESPONDING),
    "completing": lambda n: n.has(NodeFlag.COMPLETING),
    "comp": lambda n: n.has(NodeFlag.COMPLETING),
    "fail": lambda n: n.has(NodeFlag.FAIL),
    "maint": lambda n: n.has(NodeFlag.MAINT),
    "reserved": lambda n: n.has(NodeFlag.RESERVED),
    "resv": lambda n: n.has(NodeFlag.RESERVED),
}
# Accepted states no simulated node is ever in (power saving, reservations, reboots).
_NEVER = frozenset(
    {"?", "perfctrs", "cloud", "powering_down", "powered_down", "power_down", "powering_up"}
    | {"reboot", "reboot^"}
)

# Fields whose value is computed over a whole record rather than compared between nodes.
_AGGREGATE = set("DNnoFCeO")


@dataclass
class Record:
    partition: Partition | None
    key: tuple[str, ...]
    nodes: list[SlurmNode]


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    flags, values = parsed.keys, parsed.values
    failure = check_rpc(ctx, "sinfo", "REQUEST_PARTITION_INFO")
    if failure:
        return ToolReply("", f"{failure.preamble}slurm_load_partitions: {failure.error}\n", 1)
    if "reservation" in flags:
        return ToolReply(_reservations(ctx, header="noheader" not in flags))
    if "json" in flags:
        wanted = set(expand_names(values["nodes"])) if "nodes" in values else None
        nodes = [n for n in ctx.slurm.nodes.values() if wanted is None or n.name in wanted]
        return ToolReply(slurm_json.envelope("nodes", [slurm_json.node_record(n) for n in nodes]))
    states: list[Callable[[SlurmNode], bool]] = []
    for name in values.get("states", "").split(",") if "states" in values else []:
        test = _STATE_TESTS.get(name.lower())
        if test is None and name.lower() not in _NEVER:
            return ToolReply(
                "",
                f'sinfo: error: Bad state string: "{name}"\nsinfo: error: valid states: {VALID_STATES}\n',
                1,
            )
        states.append(test or (lambda n: False))
    node_view = "Node" in flags
    long = "long" in flags
    if "format" in values:
        fmt = values["format"]
    elif "list-reasons" in flags:
        fmt = REASON_LONG_FORMAT if long else REASON_FORMAT
    elif "summarize" in flags:
        fmt = SUMMARY_FORMAT
    elif node_view:
        fmt = NODE_LONG_FORMAT if long else NODE_FORMAT
    else:
        fmt = LONG_FORMAT if long else DEFAULT_FORMAT
    stderr = ""
    if "Format" in values:
        prefix = ""
        fields, headers, stderr = parse_long_format("sinfo", "node", values["Format"], _LONG_FIELDS, _HEADERS)
    else:
        prefix, fields = parse_format(fmt)
        headers = [_HEADERS.get(f.letter, "") for f in fields]
    cluster = ctx.slurm
    wanted_parts = values["partition"].split(",") if "partition" in values else None
    wanted_nodes = set(expand_names(values["nodes"])) if "nodes" in values else None

    def keep(node: SlurmNode) -> bool:
        if wanted_nodes is not None and node.name not in wanted_nodes:
            return False
        if states and not any(test(node) for test in states):
            return False
        # -d is for nodes that do not answer: a node set DOWN by hand that still answers is not dead
        # (Debian's 22.05.8 listed no node for `sinfo -d` after State=DOWN).
        if "dead" in flags and not node.has(NodeFlag.NOT_RESPONDING):
            return False
        if "responding" in flags and node.has(NodeFlag.NOT_RESPONDING):
            return False
        if "list-reasons" in flags:
            return node.reason is not None and (
                node.has(NodeFlag.DRAIN) or node.has(NodeFlag.FAIL) or node.effective_base() is NodeBase.DOWN
            )
        return True

    parts = [
        p
        for p in cluster.partitions.values()
        if (p.name in wanted_parts if wanted_parts is not None else "all" in flags or not p.conf.hidden)
    ]
    shows_partition = any(f.letter in "PR" for f in fields)
    summarize = "summarize" in flags
    # -p limits the nodes even where no partition field is shown (`sinfo -h -p gpu -o %N`).
    only = {name for p in parts for name in p.nodes} if wanted_parts is not None else None
    records = _build_records(ctx, parts, fields, keep, node_view, shows_partition, summarize, only)
    if not node_view and shows_partition and "list-reasons" not in flags:
        present = {id(r.partition) for r in records}
        records += [Record(p, (), []) for p in parts if id(p) not in present]
        order = {p.name: i for i, p in enumerate(parts)}
        records.sort(key=lambda r: order[r.partition.name] if r.partition else 0)
    fields = _finalize_widths(ctx, fields, records)
    out = []
    if long and "format" not in values and "Format" not in values:
        out.append(format_ctime(ctx.now_s) + "\n")
    if "noheader" not in flags:
        out.append(render_line(prefix, fields, headers))
    for record in records:
        out.append(render_line(prefix, fields, [_value(ctx, f.letter, record) for f in fields]))
    return ToolReply("".join(out), stderr)


def _build_records(
    ctx: Context,
    parts: list[Partition],
    fields: list[Field],
    keep: Callable[[SlurmNode], bool],
    node_view: bool,
    shows_partition: bool,
    summarize: bool,
    only: set[str] | None = None,
) -> list[Record]:
    cluster = ctx.slurm
    compared = [f.letter for f in fields if f.letter not in _AGGREGATE]
    if summarize:
        compared = [letter for letter in compared if letter not in "tTE"]
    records: list[Record] = []
    index: dict[tuple[object, ...], Record] = {}
    seen: set[str] = set()
    for part in parts if (shows_partition or node_view) else [None]:
        names = part.nodes if part else [n for n in cluster.nodes if only is None or n in only]
        for name in names:
            node = cluster.nodes[name]
            if not keep(node) or (part is None and name in seen):
                continue
            seen.add(name)
            probe = Record(part, (), [node])
            key = tuple(_value(ctx, letter, probe) for letter in compared)
            group = (
                name if node_view else None,
                part.name if part and (shows_partition or node_view) else None,
                key,
            )
            if group not in index:
                index[group] = Record(part if shows_partition else None, key, [])
                records.append(index[group])
            index[group].nodes.append(node)
    if node_view:
        order = {name: i for i, name in enumerate(cluster.nodes)}
        records.sort(key=lambda r: order[r.nodes[0].name])
    else:
        # "#P,-t": partitions in slurm.conf order, then the numerically larger node state first.
        part_order = {p.name: i for i, p in enumerate(parts)}
        records.sort(
            key=lambda r: (
                part_order.get(r.partition.name, 0) if r.partition else 0,
                -_state_number(r.nodes[0]),
            )
        )
    return records


def _state_number(node: SlurmNode) -> int:
    # slurmctld's numeric node_state: base enum plus flag bits; sinfo sorts rows by it.
    base = {
        NodeBase.UNKNOWN: 0,
        NodeBase.DOWN: 1,
        NodeBase.IDLE: 2,
        NodeBase.ALLOCATED: 3,
        NodeBase.MIXED: 5,
        NodeBase.FUTURE: 6,
    }[node.effective_base()]
    bits = {NodeFlag.DRAIN: 0x200, NodeFlag.COMPLETING: 0x400, NodeFlag.NOT_RESPONDING: 0x800}
    bits |= {NodeFlag.FAIL: 0x2000, NodeFlag.MAINT: 0x8000}
    return base + sum(bit for flag, bit in bits.items() if node.has(flag))


def _finalize_widths(ctx: Context, fields: list[Field], records: list[Record]) -> list[Field]:
    # `%#P` and `%#N` take the longest value, but never less than 9 (MIN_*_FIELD_SIZE in sinfo).
    out = []
    for spec in fields:
        if spec.sized_by_values:
            longest = max((len(_value(ctx, spec.letter, record)) for record in records), default=0)
            spec = Field(spec.letter, max(9, longest), spec.right, spec.suffix)
        out.append(spec)
    return out


def _partition_name(ctx: Context, part: Partition | None) -> str:
    if part is None:
        return "n/a"
    return part.name + ("*" if part.conf.default else "")


def _avail(part: Partition | None) -> str:
    if part is None:
        return "n/a"
    return {
        PartitionState.UP: "up",
        PartitionState.DOWN: "down",
        PartitionState.DRAIN: "drain",
        PartitionState.INACTIVE: "inact",
    }[part.state]


def _range(values: list[int], *, plus: bool) -> str:
    low, high = min(values), max(values)
    if low == high:
        return str(low)
    return f"{low}+" if plus else f"{low}-{high}"


def _is_other(node: SlurmNode) -> bool:
    # sinfo -s and %F/%C count a node as "other" only when it is drained (DRAIN flag, whatever its
    # base) or DOWN; a failed or not-responding idle node is still idle (Debian's 22.05.8).
    return bool(node.flags & NodeFlag.DRAIN) or node.effective_base() is NodeBase.DOWN


def _is_busy(node: SlurmNode) -> bool:
    return node.effective_base() in (NodeBase.ALLOCATED, NodeBase.MIXED) or node.has(NodeFlag.COMPLETING)


def _counts(record: Record) -> tuple[int, int, int, int]:
    alloc = idle = other = 0
    for node in record.nodes:
        if _is_busy(node):
            alloc += 1
        elif _is_other(node):
            other += 1
        else:
            idle += 1
    return alloc, idle, other, len(record.nodes)


def _cpu_counts(record: Record) -> tuple[int, int, int, int]:
    alloc = idle = other = total = 0
    for node in record.nodes:
        total += node.conf.cpus
        alloc += node.cpus_alloc
        if _is_other(node):
            other += node.conf.cpus - node.cpus_alloc
        else:
            idle += node.conf.cpus - node.cpus_alloc
    return alloc, idle, other, total


def _max_time(ctx: Context, record: Record) -> str:
    # _print_time() and _print_default_time(): `_print_secs`, whose hours are not zero-padded and
    # which leaves them out under an hour (`2:00:00`, `48:00`, `1-00:00:00`).
    if record.partition is None:
        return "n/a"
    minutes = record.partition.conf.max_time_min
    return "infinite" if minutes is None else format_duration(minutes * 60)


def _default_time(ctx: Context, record: Record) -> str:
    if record.partition is None:
        return "n/a"
    minutes = record.partition.conf.default_time_min
    return "n/a" if minutes is None else format_duration(minutes * 60)


def _job_size(ctx: Context, record: Record) -> str:
    part = record.partition
    if part is None:
        return "n/a"
    high = "infinite" if part.conf.max_nodes is None else str(part.conf.max_nodes)
    return f"{max(part.conf.min_nodes, 1)}-{high}"


def _root(ctx: Context, record: Record) -> str:
    part = record.partition
    return ("yes" if part.conf.root_only else "no") if part else "n/a"


def _allocated_idle(ctx: Context, record: Record) -> str:
    alloc, idle, _, _ = _counts(record)
    return f"{alloc}/{idle}"


def _reason_user_uid(ctx: Context, record: Record) -> str:
    # %U is the name and the uid of who set the reason (`root(0)`), %u the name alone.
    first = record.nodes[0]
    if first.reason_user is None:
        return "Unknown"
    who = ctx.users.get(first.reason_user)
    return f"{first.reason_user}({who.uid})" if who is not None else first.reason_user


def _socket_core_thread(node: SlurmNode) -> str:
    c = node.conf
    return f"{c.boards * c.sockets_per_board}:{c.cores_per_socket}:{c.threads_per_core}"


def _cpu_load(ctx: Context, record: Record) -> str:
    loads = [n.cpu_load_centi() for n in record.nodes]
    lowest, highest = min(loads), max(loads)
    if lowest == highest:
        return f"{lowest / 100:.2f}"
    return f"{lowest / 100:.2f}-{highest / 100:.2f}"


def _features(node: SlurmNode) -> str:
    return node.conf.features or "(null)"


@dataclass(frozen=True)
class Column:
    """One `%X` field, as a row of the table in Slurm's src/sinfo/print.h: its header and its value.

    `per_node` fields print from a record's nodes (most from its first), so "n/a" for a record with
    none. Slurm's default widths live in the default format strings here; -O's is 20 for every field.
    """

    letter: str
    header: str
    value: Callable[[Context, Record], str]
    per_node: bool = False


def _first(letter: str, header: str, value: Callable[[SlurmNode], str]) -> Column:
    """A field printed from the record's first node."""
    return Column(letter, header, lambda ctx, record: value(record.nodes[0]), per_node=True)


def _spread(letter: str, header: str, number: Callable[[SlurmNode], int], *, plus: bool = True) -> Column:
    """A field printed as the range of a number over the record's nodes (`4`, `4+` or `4-8`)."""
    return Column(
        letter, header, lambda ctx, record: _range([number(n) for n in record.nodes], plus=plus), True
    )


COLUMNS = (
    Column("P", "PARTITION", lambda ctx, r: _partition_name(ctx, r.partition)),
    Column("R", "PARTITION", lambda ctx, r: r.partition.name if r.partition else "n/a"),
    Column("a", "AVAIL", lambda ctx, r: _avail(r.partition)),
    Column("l", "TIMELIMIT", _max_time),
    Column("L", "DEFAULTTIME", _default_time),
    Column("s", "JOB_SIZE", _job_size),
    Column("r", "ROOT", _root),
    Column("h", "OVERSUBSCRIBE", lambda ctx, r: "NO"),
    Column("g", "GROUPS", lambda ctx, r: "all"),
    Column("D", "NODES", lambda ctx, r: str(len(r.nodes))),
    Column("N", "NODELIST", lambda ctx, r: compress_hostlist([n.name for n in r.nodes])),
    Column("n", "HOSTNAMES", lambda ctx, r: compress_hostlist([n.conf.hostname for n in r.nodes])),
    Column("o", "NODE_ADDR", lambda ctx, r: compress_hostlist([n.conf.addr for n in r.nodes])),
    Column("A", "NODES(A/I)", _allocated_idle),
    Column("F", "NODES(A/I/O/T)", lambda ctx, r: "/".join(str(count) for count in _counts(r))),
    Column("C", "CPUS(A/I/O/T)", lambda ctx, r: "/".join(str(count) for count in _cpu_counts(r))),
    _first("t", "STATE", lambda n: n.state_compact()),
    _first("T", "STATE", lambda n: n.state_long()),
    _first("E", "REASON", lambda n: n.reason or "none"),
    _first("u", "USER", lambda n: n.reason_user or "Unknown"),
    Column("U", "USER", _reason_user_uid, per_node=True),
    _first("H", "TIMESTAMP", lambda n: format_iso(n.reason_s)),
    _spread("c", "CPUS", lambda n: n.conf.cpus),
    _first("z", "S:C:T", _socket_core_thread),
    _spread("m", "MEMORY", lambda n: n.conf.real_memory_mb),
    _spread("d", "TMP_DISK", lambda n: n.conf.tmp_disk_mb),
    _spread("w", "WEIGHT", lambda n: n.conf.weight),
    _first("f", "AVAIL_FEATURES", _features),
    _first("b", "ACTIVE_FEATURES", _features),
    _first("G", "GRES", lambda n: n.conf.gres or "(null)"),
    _first("X", "SOCKETS", lambda n: str(n.conf.boards * n.conf.sockets_per_board)),
    _first("Y", "CORES", lambda n: str(n.conf.cores_per_socket)),
    _first("Z", "THREADS", lambda n: str(n.conf.threads_per_core)),
    _spread("e", "FREE_MEM", lambda n: n.free_mem_mb(), plus=False),
    Column("O", "CPU_LOAD", _cpu_load, per_node=True),
)
_COLUMNS = {column.letter: column for column in COLUMNS}
_HEADERS = {column.letter: column.header for column in COLUMNS}


def _value(ctx: Context, letter: str, record: Record) -> str:
    column = _COLUMNS.get(letter)
    if not record.nodes and (column is None or column.per_node):
        return "n/a"
    return column.value(ctx, record) if column is not None else ""


# sinfo -O names -> the equivalent -o letter.
_LONG_FIELDS = {
    "available": "a",
    "cores": "Y",
    "cpus": "c",
    "cpusload": "O",
    "cpusstate": "C",
    "defaulttime": "L",
    "disk": "d",
    "features": "f",
    "features_act": "b",
    "freemem": "e",
    "gres": "G",
    "groups": "g",
    "memory": "m",
    "nodeaddr": "o",
    "nodeaiot": "F",
    "nodehost": "n",
    "nodelist": "N",
    "nodes": "D",
    "oversubscribe": "h",
    "partition": "P",
    "partitionname": "R",
    "reason": "E",
    "root": "r",
    "size": "s",
    "socketcorethread": "z",
    "sockets": "X",
    "statecompact": "t",
    "statelong": "T",
    "threads": "Z",
    "time": "l",
    "timestamp": "H",
    "user": "u",
    "userlong": "U",
    "weight": "w",
}


def _reservations(ctx: Context, *, header: bool) -> str:
    # sinfo -T: the name and the state share 19 columns (name left, state right: `maint_gpu    ACTIVE`,
    # `root_1     INACTIVE`), the times right in 19, the duration right in 11 (a longer value pushes
    # the rest along), then the node list (22.05.8).
    cluster = ctx.slurm
    if not cluster.reservations:
        return "No reservations in the system\n"
    head = "RESV_NAME     STATE           START_TIME             END_TIME     DURATION  NODELIST"
    rows = [head] if header else []
    for resv in sorted(cluster.reservations.values(), key=lambda r: (r.start_s, r.name)):
        state = resv.state_at(cluster.now_s).value
        gap = " " * max(1, 19 - len(resv.name) - len(state))
        rows.append(
            f"{resv.name}{gap}{state}  {format_iso(resv.start_s):>19}"
            f"  {format_iso(resv.end_s):>19}"
            f"  {format_duration(resv.end_s - resv.start_s, always_hours=True):>11}"
            f"  {compress_hostlist(list(resv.nodes))}"
        )
    return "".join(row + "\n" for row in rows)
