"""scontrol create/update/delete/show reservation and show licenses (scontrol 22.05's create_res.c).

Arguments are parsed as `_parse_res_options` does (a tag matches by a unique prefix, a bare word
starting with `res` is skipped), with its error texts; what a reservation does to nodes and jobs is
`SlurmState`'s business. Texts checked against Debian's 22.05.8 (fidelity states `reservation-*`,
`licenses`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.hostlist import compress_hostlist, expand_names
from hpcgym.controller.rpc import SlurmError
from hpcgym.controller.slurmctld import INFINITE_RESV_S, SlurmState
from hpcgym.controller.state import Reservation, ReservationFlag
from hpcgym.controller.timefmt import format_duration, format_iso, parse_begin_time, parse_time_limit

# Flags an operator may ask for (SPEC_NODES is slurmctld's own); parse_resv_flags() spellings.
_ASKABLE = {
    "MAINT": ReservationFlag.MAINT,
    "FLEX": ReservationFlag.FLEX,
    "OVERLAP": ReservationFlag.OVERLAP,
    "IGNORE_JOBS": ReservationFlag.IGNORE_JOBS,
    "DAILY": ReservationFlag.DAILY,
    "WEEKLY": ReservationFlag.WEEKLY,
}
# Tags and the shortest prefix each one matches by, in the order _parse_res_options() tries them.
_TAGS = (
    ("accounts", 1),
    ("flags", 2),
    ("groups", 1),
    ("users", 1),
    ("reservationname", 1),
    ("burstbuffer", 2),
    ("starttime", 2),
    ("endtime", 1),
    ("duration", 1),
    ("maxstartdelay", 2),
    ("nodecnt", 5),
    ("nodecount", 5),
    ("corecnt", 5),
    ("nodes", 5),
    ("features", 2),
    ("licenses", 2),
    ("partitionname", 1),
    ("tres", 1),
    ("watts", 1),
)


class ResvUsage(Exception):
    """An argument scontrol itself rejects; the message is its error line."""


@dataclass
class _Request:
    name: str | None = None
    start_s: int | None = None
    end_s: int | None = None
    duration_s: int | None = None
    nodes: list[str] | None = None
    users: list[str] | None = None
    flags: ReservationFlag | None = None
    flags_minus: ReservationFlag = ReservationFlag.NONE
    partition: str | None = None
    accounts: str | None = None
    unsupported: list[str] = field(default_factory=list)


def _match(tag: str) -> str | None:
    lower = tag.lower()
    for name, shortest in _TAGS:
        if name.startswith(lower) and len(lower) >= shortest:
            return name
    return None


def _parse(words: list[str], now_s: int, tail: str) -> _Request:
    request = _Request()
    for word in words:
        tag, sep, value = word.partition("=")
        if not sep:
            if word.lower().startswith("res"):
                continue
            raise ResvUsage(
                f"Misformatted parameter '{word}', most options have a parameter after '='.  {tail}"
            )
        sign = tag[-1] if tag[-1:] in "+-" else ""
        tag = tag[:-1] if sign else tag
        name = _match(tag)
        if name is None:
            raise ResvUsage(f"Unknown parameter {word}.  {tail}")
        if sign and name != "flags":
            raise ResvUsage(f"The +=/-= notation is not supported when updating {tag}.  {tail}")
        if name == "reservationname":
            request.name = value
        elif name == "starttime":
            try:
                request.start_s = parse_begin_time(value, now_s)
            except ValueError:
                raise ResvUsage(f"Invalid start time {word}.  {tail}") from None
        elif name == "endtime":
            try:
                request.end_s = parse_begin_time(value, now_s)
            except ValueError:
                raise ResvUsage(f"Invalid end time {word}.  {tail}") from None
        elif name == "duration":
            try:
                minutes = parse_time_limit(value)
            except ValueError:
                raise ResvUsage(f"Invalid duration {word}.  {tail}") from None
            request.duration_s = INFINITE_RESV_S if minutes is None else minutes * 60
        elif name == "nodes":
            request.nodes = expand_names(value) if value else []
        elif name == "users":
            if request.users is not None:
                raise ResvUsage(f"Parameter {word} specified more than once")
            request.users = [user for user in value.split(",") if user]
        elif name == "flags":
            flags = _flags(value)
            if flags is None:
                raise ResvUsage(f"Error parsing flags {value}.  {tail}")
            if sign == "-":
                request.flags_minus |= flags
            else:
                request.flags = (request.flags or ReservationFlag.NONE) | flags
        elif name == "partitionname":
            request.partition = value
        elif name == "accounts":
            request.accounts = value
        else:
            request.unsupported.append(word)
    return request


def _flags(text: str) -> ReservationFlag | None:
    flags = ReservationFlag.NONE
    for item in text.split(","):
        flag = _ASKABLE.get(item.strip().upper())
        if flag is None:
            return None
        flags |= flag
    return flags


def _error(text: str) -> ToolReply:
    return ToolReply("", f"scontrol: error: {text}\n", 1)


def _request(ctx: Context, words: list[str], tail: str) -> _Request | ToolReply:
    """The words as a reservation request, or scontrol's usage error (ending in `tail`)."""
    try:
        return _parse(words, ctx.now_s, tail)
    except ResvUsage as error:
        return _error(str(error))


def create(ctx: Context, words: list[str]) -> ToolReply:
    """`scontrol create reservation ...`: the checks scontrol makes, then slurmctld's."""
    tail = "No reservation created."
    request = _request(ctx, words, tail)
    if isinstance(request, ToolReply):
        return request
    if request.start_s is None:
        return _error(f"A start time must be given.  {tail}")
    if request.end_s is None and request.duration_s is None:
        return _error(f"An end time or duration must be given.  {tail}")
    both = request.end_s is not None and request.duration_s is not None
    if both and request.start_s + (request.duration_s or 0) != request.end_s:
        return _error(f"StartTime + Duration does not equal EndTime.  {tail}")
    if request.end_s is not None and request.start_s > request.end_s:
        return _error(f"Start time cannot be after end time.  {tail}")
    if not request.nodes and request.partition is None:
        return _error(f"CoreCnt, Nodes, NodeCnt, BurstBuffer, Licenses or Watts must be specified.  {tail}")
    if not request.users and not request.accounts:
        return _error(f"Either Users/Groups and/or Accounts must be specified.  {tail}")
    if request.unsupported or request.accounts or not request.nodes:
        # Accounts need slurmdbd, NodeCnt/CoreCnt/Features a node picker: neither is simulated.
        what = (request.unsupported or [f"Accounts={request.accounts}" if request.accounts else "Nodes"])[0]
        return _error(f"{what} is not supported in this cluster.  {tail}")
    all_nodes = [name.upper() for name in request.nodes] == ["ALL"]
    if all_nodes:
        request.nodes = list(ctx.slurm.nodes)
    users = request.users or []
    if any(ctx.find_user(user) is None for user in users):
        return ToolReply("", "Error creating the reservation: Invalid user id\n", 1)
    end = request.end_s if request.end_s is not None else request.start_s + (request.duration_s or 0)
    resv = Reservation(
        name=request.name or "",
        start_s=request.start_s,
        end_s=end,
        nodes=tuple(request.nodes),
        users=tuple(users),
        flags=(request.flags or ReservationFlag.NONE)
        | (ReservationFlag.ALL_NODES if all_nodes else ReservationFlag.NONE),
        partition=request.partition,
    )
    try:
        name = ctx.slurm.create_reservation(resv)
    except SlurmError as error:
        return ToolReply("", f"Error creating the reservation: {error}\n", 1)
    return ToolReply(f"Reservation created: {name}\n")


def update(ctx: Context, words: list[str]) -> ToolReply:
    """`scontrol update ReservationName=... key=value ...`."""
    tail = "No reservation update."
    request = _request(ctx, words, tail)
    if isinstance(request, ToolReply):
        return request
    if request.name is None:
        return _error(f"Reservation must be given.  {tail}")
    if request.unsupported or request.accounts:
        what = (request.unsupported or [f"Accounts={request.accounts}"])[0]
        return _error(f"{what} is not supported in this cluster.  {tail}")
    old = ctx.slurm.reservations.get(request.name)
    if old is None:
        return _refused("Requested reservation is invalid")
    if request.users and any(ctx.find_user(user) is None for user in request.users):
        return _refused("Invalid user id")
    change: dict[str, object] = {}
    start = request.start_s if request.start_s is not None else old.start_s
    if request.start_s is not None:
        change["start_s"] = start
        if request.end_s is None and request.duration_s is None:
            change["end_s"] = start + (old.end_s - old.start_s)
    if request.end_s is not None:
        change["end_s"] = request.end_s
    elif request.duration_s is not None:
        change["end_s"] = start + request.duration_s
    if request.nodes is not None:
        change["nodes"] = tuple(request.nodes)
    if request.users is not None:
        change["users"] = tuple(request.users)
    # Flags= adds to the reservation's flags and Flags-= takes away (update_resv()).
    change["flags"] = (old.flags | (request.flags or ReservationFlag.NONE)) & ~request.flags_minus
    try:
        ctx.slurm.update_reservation(request.name, change)
    except SlurmError as error:
        return _refused(str(error))
    return ToolReply("Reservation updated.\n")


def _refused(error: str) -> ToolReply:
    # scontrol_update_res() reports the failure, then _update_it() reports its errno again.
    return ToolReply("", f"Error updating the reservation: {error}\nslurm_update error: {error}\n", 1)


def delete(ctx: Context, label: str, name: str) -> ToolReply:
    """`scontrol delete ReservationName=X` (or `delete reservation X`); `label` is the first word."""
    try:
        ctx.slurm.delete_reservation(name)
    except SlurmError as error:
        return ToolReply("", f"delete_reservation {label[:45]}: {error}\n", 1)
    return ToolReply()


def show(cluster: SlurmState, target: str | None, *, oneliner: bool) -> ToolReply:
    """`scontrol show reservation [NAME]`."""
    resvs = sorted(cluster.reservations.values(), key=lambda r: (r.start_s, r.name))
    if target is not None:
        resvs = [r for r in resvs if r.name == target]
        if not resvs:
            return ToolReply(f"Reservation {target} not found\n", "", 1)
    if not resvs:
        return ToolReply("No reservations in the system\n")
    records = [_record(cluster, r) for r in resvs]
    if oneliner:
        return ToolReply("".join(" ".join(part.strip() for part in rec) + "\n" for rec in records))
    return ToolReply("".join("\n".join(rec) + "\n\n" for rec in records))


def _record(cluster: SlurmState, resv: Reservation) -> list[str]:
    return [
        f"ReservationName={resv.name} StartTime={format_iso(resv.start_s)} EndTime={format_iso(resv.end_s)}"
        f" Duration={format_duration(resv.end_s - resv.start_s, always_hours=True)}",
        f"   Nodes={compress_hostlist(list(resv.nodes))} NodeCnt={len(resv.nodes)} CoreCnt={resv.cores}"
        f" Features=(null) PartitionName={resv.partition or '(null)'} Flags={resv.flags.spelled()}",
        f"   TRES=cpu={resv.cores}",
        f"   Users={','.join(resv.users) or '(null)'} Groups=(null) Accounts=(null) Licenses=(null)"
        f" State={resv.state_at(cluster.now_s).value} BurstBuffer=(null) Watts=n/a",
        "   MaxStartDelay=(null)",
    ]


def show_licenses(cluster: SlurmState, target: str | None, *, oneliner: bool) -> ToolReply:
    """`scontrol show licenses [NAME]`: the configured ones by name, with what running jobs use."""
    if not cluster.conf.licenses:
        return ToolReply("No licenses configured in Slurm.\n")
    used = cluster.licenses_used()
    lines = []
    for name, total in sorted(cluster.conf.licenses):
        if target is not None and name != target:
            continue
        counts = f"Total={total} Used={used[name]} Free={total - used[name]} Reserved=0 Remote=no"
        lines.append(f"LicenseName={name} {counts}\n" if oneliner else f"LicenseName={name}\n    {counts}\n")
    return ToolReply("".join(lines))
