"""chronyc (chrony 4.5) and timedatectl (systemd 252): what an operator reads of a node's clock.

Both answer from the controller's model, not the host: whether chronyd runs on the node
(services/chrony.py), its source (chrony.conf's `server`, or the login node's own `local stratum`),
and the node's clock skew (`NodeClocks.offsets`). chronyc talks to chronyd over its command
socket, so with chronyd stopped every command fails `506 Cannot talk to daemon`. The small numbers a
synced chronyd prints (offsets, frequency, delay) are fixed, plausible values for a LAN source.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.services import ServiceManager, chrony
from hpcgym.controller.services.chrony import UNIT, server, step_lines
from hpcgym.controller.services.journal import Entry

NO_DAEMON = "506 Cannot talk to daemon\n"
SOURCES_HEADER = (
    "MS Name/IP address         Stratum Poll Reach LastRx Last sample               \n" + "=" * 79 + "\n"
)
LOCAL_STRATUM = 10
# chronyc options that take no argument / one argument; both are accepted and change nothing here.
FLAGS = ("-n", "-N", "-c", "-d", "-m", "-a", "-4", "-6")
WITH_VALUE = ("-h", "-p", "-f")
COMMANDS = ("tracking", "sources", "activity", "makestep")


def _ctime(time_s: int) -> str:
    return datetime.fromtimestamp(time_s, UTC).strftime("%a %b %d %H:%M:%S %Y")


def _tracking(services: ServiceManager, node: str) -> str:
    now = services.clocks.node_now_s(node)
    source = chrony.source(services, node)
    local = server(services, node) is None
    if local:
        ref_id, stratum, ref_time = "7F7F0101 ()", LOCAL_STRATUM, now
    elif source is not None:
        name, addr = source
        ref_id, stratum, ref_time = f"{int(addr):08X} ({name})", LOCAL_STRATUM + 1, now - 35
    else:
        ref_id, stratum, ref_time = "00000000 ()", 0, 0
    skew = chrony.skew(services, node) if source is not None else 0
    system = f"{abs(skew):.9f} seconds {'fast' if skew >= 0 else 'slow'} of NTP time"
    if local or source is None:
        system = "0.000000000 seconds fast of NTP time"
    lan = source is not None and not local
    rows = [
        ("Reference ID", ref_id),
        ("Stratum", str(stratum)),
        ("Ref time (UTC)", _ctime(ref_time)),
        ("System time", system),
        ("Last offset", "-0.000004120 seconds" if lan else "+0.000000000 seconds"),
        ("RMS offset", "0.000011327 seconds" if lan else "0.000000000 seconds"),
        ("Frequency", "8.250 ppm slow" if lan else "0.000 ppm slow"),
        ("Residual freq", "-0.001 ppm" if lan else "+0.000 ppm"),
        ("Skew", "0.022 ppm" if lan else "0.000 ppm"),
        ("Root delay", "0.000321521 seconds" if lan else "0.000000000 seconds"),
        ("Root dispersion", "0.000178913 seconds" if lan else "0.000000000 seconds"),
        ("Update interval", "64.2 seconds" if lan else "0.0 seconds"),
        ("Leap status", "Normal" if local or source is not None else "Not synchronised"),
    ]
    return "".join(f"{key:<15} : {value}\n" for key, value in rows)


def _sample(seconds: int) -> str:
    return f"{seconds:+d}s" if seconds else "-21us"


def _sources(services: ServiceManager, node: str) -> str:
    name = server(services, node)
    if name is None:
        return SOURCES_HEADER
    source = chrony.source(services, node)
    if source is None:
        row = f"^? {name:<27} {0:>2} {6:>3} {'0':>5} {'-':>5}  {'+0ns':>7}[{'+0ns':>7}] +/- {'0ns':>6}\n"
        return SOURCES_HEADER + row
    # The sample is how far the source is from this clock: a node ahead sees its source behind.
    sample = _sample(-chrony.skew(services, node))
    last = "-25us" if sample == "-21us" else sample
    row = f"^* {name:<27} {LOCAL_STRATUM:>2} {6:>3} {'377':>5} {35:>5}  {sample:>7}[{last:>7}] +/- "
    row += f"{'160us':>6}\n"
    return SOURCES_HEADER + row


def _activity(services: ServiceManager, node: str) -> str:
    online = 1 if server(services, node) is not None else 0
    return (
        f"200 OK\n{online} sources online\n0 sources offline\n0 sources doing burst (return to online)\n"
        "0 sources doing burst (return to offline)\n0 sources with unknown address\n"
    )


def _makestep(services: ServiceManager, node: str) -> str:
    """Step the clock to the source now, as `chronyc makestep` asks chronyd to; logged like a start step."""
    skew = chrony.skew(services, node)
    if chrony.source(services, node) is not None and skew:
        runtime = services.systemd.unit(node, UNIT)
        services.clocks.set_offset(node, services.clocks.offset(services.controller_host))
        if runtime is not None and runtime.main_pid is not None:
            journal = services.systemd.node_state(node).journal
            for line in step_lines(-skew):
                when = services.clocks.node_now_s(node)
                journal.add(Entry(when, "chronyd", runtime.main_pid, UNIT, line.text))
    return "200 OK\n"


def run(ctx: Context, args: list[str]) -> ToolReply:
    services = ctx.services
    words = list(args)
    while words and words[0].startswith("-"):
        option = words.pop(0)
        if option in WITH_VALUE and words:
            words.pop(0)
        elif option not in FLAGS:
            return ToolReply("", f"Unrecognized option '{option}'\n", 1)
    command = words[0] if words else ""
    if command not in COMMANDS:
        # Interactive mode has no terminal here; a command chronyc does not model reads as unknown.
        return ToolReply("", "Unrecognized command\n", 1)
    if not services.systemd.is_active(ctx.node, UNIT):
        return ToolReply("", NO_DAEMON, 1)
    if command == "tracking":
        return ToolReply(_tracking(services, ctx.node))
    if command == "sources":
        return ToolReply(_sources(services, ctx.node))
    if command == "activity":
        return ToolReply(_activity(services, ctx.node))
    return ToolReply(_makestep(services, ctx.node))


# ---- timedatectl -------------------------------------------------------------------------------------

TIMEDATECTL_VERBS = ("status", "show", "set-ntp", "set-time", "set-timezone", "list-timezones")


def _stamp(time_s: int, zone: bool = True) -> str:
    text = datetime.fromtimestamp(time_s, UTC).strftime("%a %Y-%m-%d %H:%M:%S")
    return text + " UTC" if zone else text


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def run_timedatectl(ctx: Context, args: list[str]) -> ToolReply:
    services = ctx.services
    words = [arg for arg in args if not arg.startswith("-")]
    verb = words[0] if words else "status"
    if verb not in TIMEDATECTL_VERBS:
        return ToolReply("", f"Unknown command verb {verb}.\n", 1)
    now = services.clocks.node_now_s(ctx.node)
    ntp = services.systemd.is_active(ctx.node, UNIT)
    synced = chrony.is_synchronized(services, ctx.node)
    if verb == "status":
        rows = [
            ("Local time", _stamp(now)),
            ("Universal time", _stamp(now)),
            ("RTC time", _stamp(now, zone=False)),
            ("Time zone", "UTC (UTC, +0000)"),
            ("System clock synchronized", _yes(synced)),
            ("NTP service", "active" if ntp else "inactive"),
            ("RTC in local TZ", "no"),
        ]
        return ToolReply("".join(f"{key:>25}: {value}\n" for key, value in rows))
    if verb == "show":
        stamp = _stamp(now)
        return ToolReply(
            f"Timezone=UTC\nLocalRTC=no\nCanNTP=yes\nNTP={_yes(ntp)}\nNTPSynchronized={_yes(synced)}\n"
            f"TimeUSec={stamp}\nRTCTimeUSec={stamp}\n"
        )
    if verb == "list-timezones":
        return ToolReply("UTC\n")
    if verb == "set-timezone":
        if words[1:] == ["UTC"]:
            return ToolReply()
        return ToolReply("", "Failed to set time zone: Invalid time zone\n", 1)
    if verb == "set-time":
        if ntp:
            return ToolReply("", "Failed to set time: Automatic time synchronization is enabled\n", 1)
        # The nodes run without CAP_SYS_TIME, as `date -s` finds.
        return ToolReply("", "Failed to set time: Operation not permitted\n", 1)
    return _set_ntp(services, ctx.node, words[1:])


def _set_ntp(services: ServiceManager, node: str, values: list[str]) -> ToolReply:
    """`timedatectl set-ntp BOOL`: systemd-timedated enables and starts (or disables and stops) chronyd."""
    if len(values) != 1:
        return ToolReply("", "Too few arguments.\n" if not values else "Too many arguments.\n", 1)
    value = values[0].lower()
    if value in ("1", "yes", "y", "true", "t", "on"):
        services.systemd.set_enabled(node, UNIT, True)
        services.systemd.start(node, UNIT)
    elif value in ("0", "no", "n", "false", "f", "off"):
        services.systemd.stop(node, UNIT)
        services.systemd.set_enabled(node, UNIT, False)
    else:
        return ToolReply("", f'Failed to parse argument: "{values[0]}"\n', 1)
    return ToolReply()
