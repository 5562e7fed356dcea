"""How systemctl 252 prints units: the `status` block, `list-units` table and `show` properties.

Layouts follow systemd 252 as Rocky 9 ships it (`preset:` rather than `vendor preset:`; active,
inactive and failed bullets; relative times from `format_timestamp_relative`). Tasks, Memory and CPU
are fixed per daemon: they are the host- and moment-specific values a faithful stub keeps the layout of.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hpcgym.controller.services.journal import Entry, format_entry
from hpcgym.controller.services.units import ActiveState, UnitRuntime

# (tasks, memory, cpu) that `status` prints for a running daemon.
RESOURCES = {
    "munged": ("4", "1.4M", "12ms"),
    "slurmd": ("1", "2.3M", "21ms"),
    "slurmctld": ("11", "4.6M", "87ms"),
    "httpd": ("213", "21.6M", "205ms"),
}
TASK_LIMIT = 23168
# systemd's unit bullets: active, failed (U+00D7, not the letter x), reloading, and anything else.
BULLET_ACTIVE, BULLET_FAILED, BULLET_RELOADING, BULLET_INACTIVE = "●", "\u00d7", "↻", "○"
_BULLET = {
    ActiveState.ACTIVE: BULLET_ACTIVE,
    ActiveState.FAILED: BULLET_FAILED,
    ActiveState.RELOADING: BULLET_RELOADING,
}


def timestamp(time_s: int) -> str:
    """Systemd's `Mon 2026-11-23 07:46:05 UTC`."""
    return datetime.fromtimestamp(time_s, UTC).strftime("%a %Y-%m-%d %H:%M:%S UTC")


def relative(delta_s: int) -> str:
    """Systemd's `format_timestamp_relative` for a past instant (whole seconds on our clock)."""
    if delta_s <= 0:
        # Same agent step: a real system would be some milliseconds past; keep the layout.
        return "10ms ago"
    minute, hour, day = 60, 3600, 86400
    if delta_s >= 2 * day:
        return f"{delta_s // day} days ago"
    if delta_s >= 25 * hour:
        return f"1 day {(delta_s - day) // hour}h ago"
    if delta_s >= 6 * hour:
        return f"{delta_s // hour}h ago"
    if delta_s >= hour:
        return f"{delta_s // hour}h {(delta_s % hour) // minute}min ago"
    if delta_s >= 5 * minute:
        return f"{delta_s // minute}min ago"
    if delta_s >= minute:
        return f"{delta_s // minute}min {delta_s % minute}s ago"
    return f"{delta_s}s ago"


def _exit_text(code: str, status: str) -> str:
    if code == "killed":
        return f"code=killed, signal={status.split('/', 1)[-1]}"
    return f"code={code}, status={status}"


def format_status(
    unit: UnitRuntime, hostname: str, now_s: int, entries: list[Entry], lines: int, *, show_all: bool = False
) -> str:
    """One unit's `systemctl status` block, journal tail included."""
    file = unit.file
    bullet = _BULLET.get(unit.active, BULLET_INACTIVE)
    out = [f"{bullet} {unit.name} - {file.description}"]
    out.append(f"     Loaded: loaded ({file.path}; {unit.enabled.value}; preset: disabled)")
    active = f"{unit.active.value} ({unit.sub.value})"
    if unit.active is ActiveState.FAILED:
        active = f"{unit.active.value} (Result: {unit.result.value})"
    if unit.state_since_s is not None:
        active += f" since {timestamp(unit.state_since_s)}; {relative(now_s - unit.state_since_s)}"
    out.append(f"     Active: {active}")
    if unit.skipped is not None and unit.active is not ActiveState.ACTIVE:
        when = unit.skipped.at_s
        out.append(f"  Condition: start condition failed at {timestamp(when)}; {relative(now_s - when)}")
        out.append(f"             └─ {unit.skipped.condition} was not met")
    for index, doc in enumerate(file.documentation):
        out.append(f"       Docs: {doc}" if index == 0 else f"             {doc}")
    if unit.control_exit is not None:
        pid, code, status = unit.control_exit
        out.append(f"    Process: {pid} ExecStart={file.exec_start} ({_exit_text(code, status)})")
    comm = unit.process.comm if unit.process is not None else ""
    if unit.main_pid is not None:
        out.append(f"   Main PID: {unit.main_pid} ({comm})")
        tasks, memory, cpu = RESOURCES.get(comm, ("1", "1.0M", "5ms"))
        out.append(f"      Tasks: {tasks} (limit: {TASK_LIMIT})")
        out.append(f"     Memory: {memory}")
        out.append(f"        CPU: {cpu}")
        out.append(f"     CGroup: /system.slice/{unit.name}")
        out.append(
            f"             └─{unit.main_pid} {unit.process.cmdline if unit.process is not None else comm}"
        )
    elif unit.state_since_s is not None:
        if unit.main_exit is not None:
            pid, code, status = unit.main_exit
            out.append(f"   Main PID: {pid} ({_exit_text(code, status)})")
        out.append("        CPU: 5ms")
    text = "\n".join(out) + "\n"
    tail = entries[-lines:] if lines > 0 else []
    if tail:
        text += "\n" + "".join(format_entry(entry, hostname, show_all=show_all) + "\n" for entry in tail)
    return text


LEGEND = (
    "LOAD   = Reflects whether the unit definition was properly loaded.\n"
    "ACTIVE = The high-level unit activation state, i.e. generalization of SUB.\n"
    "SUB    = The low-level unit activation state, values depend on unit type.\n"
)


def format_unit_list(units: list[UnitRuntime], *, filtered: bool, legend: bool) -> str:
    """`systemctl list-units`: a bullet column, then UNIT LOAD ACTIVE SUB DESCRIPTION."""
    rows = [("UNIT", "LOAD", "ACTIVE", "SUB", "DESCRIPTION")]
    rows += [(u.name, "loaded", u.active.value, u.sub.value, u.file.description) for u in units]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    out = []
    for index, row in enumerate(rows):
        bullet = "●" if index > 0 and units[index - 1].active is ActiveState.FAILED else " "
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:4])] + [row[4]]
        if index == 0 and not legend:
            continue
        out.append(f"{bullet} " + " ".join(cells).rstrip() + "\n")
    if not legend:
        return "".join(out)
    count = len(units)
    if count:
        out.append("\n" + LEGEND)
    if filtered or not count:
        out.append(f"{count} loaded units listed.\n")
    else:
        out.append(f"{count} loaded units listed. Pass --all to see loaded but inactive units, too.\n")
        out.append("To show all installed unit files use 'systemctl list-unit-files'.\n")
    return "".join(out)


def unit_properties(unit: UnitRuntime | None, name: str) -> list[tuple[str, str]]:
    """The `systemctl show` properties we model, in systemd's order; a unit without a file is not-found."""
    if unit is None:
        return [
            ("Id", name),
            ("Names", name),
            ("LoadState", "not-found"),
            ("ActiveState", "inactive"),
            ("SubState", "dead"),
            ("UnitFileState", ""),
            ("MainPID", "0"),
            ("NRestarts", "0"),
        ]
    file = unit.file
    code = unit.main_exit[1] if unit.main_exit else "0"
    return [
        ("Type", file.service_type.value),
        ("Restart", file.restart.value),
        ("PIDFile", file.pid_file),
        ("NRestarts", str(unit.n_restarts)),
        ("MainPID", str(unit.main_pid or 0)),
        ("ExecMainPID", str(unit.main_pid or (unit.main_exit[0] if unit.main_exit else 0))),
        ("ExecMainCode", "1" if code == "exited" else "2" if code == "killed" else "0"),
        ("ExecMainStatus", unit.main_exit[2].split("/")[0] if unit.main_exit else "0"),
        ("Result", unit.result.value),
        ("Id", unit.name),
        ("Names", unit.name),
        ("Description", file.description),
        ("LoadState", "loaded"),
        ("ActiveState", unit.active.value),
        ("SubState", unit.sub.value),
        ("FragmentPath", file.path),
        ("UnitFileState", unit.enabled.value),
        ("UnitFilePreset", "disabled"),
        ("ActiveEnterTimestamp", timestamp(unit.active_enter_s) if unit.active_enter_s else ""),
        ("StateChangeTimestamp", timestamp(unit.state_since_s) if unit.state_since_s else ""),
    ]
