"""systemctl, as systemd 252 on Rocky 9 answers it, over the node's simulated units.

Verbs: status, start, stop, restart, try-restart, reload, reload-or-restart, enable, disable (with
--now), is-active, is-enabled, is-failed, daemon-reload, reset-failed, list-units (--failed, --all,
--type, --state), show (-p/--property, --value). Messages and exit codes are systemctl's: 3 for a
status of an inactive unit, 4 for one that does not exist, 5 for a job on a unit that is not found.
"""

from __future__ import annotations

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import Prologue
from hpcgym.controller.commands.systemctl_status import (
    BULLET_ACTIVE,
    BULLET_FAILED,
    format_status,
    format_unit_list,
    unit_properties,
)
from hpcgym.controller.services import JobResult, ServiceManager
from hpcgym.controller.services.units import ActiveState, UnitFileState, normalize_unit_name

OPTIONS = (
    Option("all", "a", "all"),
    Option("full", "l", "full"),
    Option("no-pager", None, "no-pager"),
    Option("no-legend", None, "no-legend"),
    Option("plain", None, "plain"),
    Option("quiet", "q", "quiet"),
    Option("now", None, "now"),
    Option("failed", None, "failed"),
    Option("system", None, "system"),
    Option("type", "t", "type", Arg.REQUIRED),
    Option("state", None, "state", Arg.REQUIRED),
    Option("property", "p", "property", Arg.REQUIRED),
    Option("value", None, "value"),
    Option("lines", "n", "lines", Arg.REQUIRED),
    Option("output", "o", "output", Arg.REQUIRED),
    Option("force", "f", "force"),
)
PROLOGUE = Prologue("systemctl", OPTIONS)
JOB_VERBS = {"start", "stop", "restart", "try-restart", "reload", "reload-or-restart", "condrestart"}
NEEDS_UNITS = JOB_VERBS | {"enable", "disable", "is-active", "is-enabled", "is-failed"}
# systemctl's exit codes (LSB for status, then its own).
EXIT_NOT_RUNNING = 3
EXIT_NO_SUCH_UNIT = 4
EXIT_JOB_NOT_FOUND = 5
WANTS_DIR = "/etc/systemd/system/multi-user.target.wants"


class Flags:
    def __init__(self, found: list[tuple[str, str | None]]) -> None:
        self.set = {key for key, _ in found}
        self.properties = [p for key, value in found if key == "property" and value for p in value.split(",")]
        self.states = [s for key, value in found if key == "state" and value for s in value.split(",")]
        self.types = [t for key, value in found if key == "type" and value for t in value.split(",")]
        self.lines = next((value for key, value in found if key == "lines"), None)
        if "failed" in self.set:
            self.states.append("failed")


def run(ctx: Context, args: list[str]) -> ToolReply:
    parsed = PROLOGUE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    flags, operands = Flags(parsed.found), parsed.operands
    verb = operands[0] if operands else "list-units"
    units = [normalize_unit_name(name) for name in operands[1:]]
    services = ctx.services
    node = ctx.node
    if verb in NEEDS_UNITS and not units:
        return ToolReply("", "Too few arguments.\n", 1)
    if verb == "status":
        return _status(services, node, units, flags)
    if verb in JOB_VERBS:
        return _jobs(services, node, verb, units)
    if verb in ("enable", "disable"):
        return _enable(services, node, verb, units, flags)
    if verb in ("is-active", "is-failed"):
        return _is_state(services, node, verb, units, flags)
    if verb == "is-enabled":
        return _is_enabled(services, node, units, flags)
    if verb == "daemon-reload":
        services.systemd.daemon_reload(node)
        return ToolReply()
    if verb == "reset-failed":
        targets: list[str | None] = list(units) or [None]
        for target in targets:
            services.systemd.reset_failed(node, target)
        return ToolReply()
    if verb == "list-units":
        return _list_units(services, node, flags)
    if verb == "show":
        return _show(services, node, units, flags)
    return ToolReply("", f"Unknown command verb {verb}.\n", 1)


def _status(services: ServiceManager, node: str, units: list[str], flags: Flags) -> ToolReply:
    try:
        lines = int(flags.lines) if flags.lines is not None else 10
    except ValueError:
        return ToolReply("", f"Failed to parse lines '{flags.lines}'\n", 1)
    if not units:
        return _system_status(services, node)
    blocks, errors, exit_code = [], "", 0
    journal = services.systemd.journal(node)
    for name in units:
        unit = services.systemd.unit(node, name)
        if unit is None:
            errors += f"Unit {name} could not be found.\n"
            exit_code = max(exit_code, EXIT_NO_SUCH_UNIT)
            continue
        # get_output_flags: -a/--all shows a journal line with control characters in full.
        entries = journal.for_unit(name)
        now = services.clocks.now_s
        blocks.append(format_status(unit, node, now, entries, lines, show_all="all" in flags.set))
        if services.systemd.changed_on_disk(node, unit):
            errors += _changed_warning(name)
        if unit.active is not ActiveState.ACTIVE:
            exit_code = max(exit_code, EXIT_NOT_RUNNING)
    return ToolReply("\n".join(blocks), errors, exit_code)


def _system_status(services: ServiceManager, node: str) -> ToolReply:
    units = services.systemd.loaded_units(node)
    failed = sum(unit.active is ActiveState.FAILED for unit in units)
    text = (
        f"{BULLET_FAILED if failed else BULLET_ACTIVE} {node}\n"
        f"    State: {'degraded' if failed else 'running'}\n"
        f"    Units: {len(units)} loaded (incl. loaded aliases)\n"
        "     Jobs: 0 queued\n"
        f"   Failed: {failed} units\n"
        "  systemd: 252-46.el9_5.2\n"
        "   CGroup: /\n"
    )
    return ToolReply(text)


def _changed_warning(name: str) -> str:
    return (
        f"Warning: The unit file, source configuration file or drop-ins of {name} changed on disk. "
        "Run 'systemctl daemon-reload' to reload units.\n"
    )


_VERB_WORD = {"condrestart": "restart", "try-restart": "restart", "reload-or-restart": "restart"}


def _jobs(services: ServiceManager, node: str, verb: str, units: list[str]) -> ToolReply:
    errors, exit_code = "", 0
    for name in units:
        word = _VERB_WORD.get(verb, verb)
        unit = services.systemd.unit(node, name)
        if unit is not None and services.systemd.changed_on_disk(node, unit):
            errors += _changed_warning(name)
        if verb in ("try-restart", "condrestart") and (unit is None or unit.active is not ActiveState.ACTIVE):
            continue
        if verb == "start":
            result = services.systemd.start(node, name)
        elif verb == "stop":
            result = services.systemd.stop(node, name)
        elif verb == "reload" or (
            verb == "reload-or-restart"
            and unit is not None
            and unit.file.exec_reload
            and unit.active is ActiveState.ACTIVE
        ):
            result = services.systemd.reload(node, name)
        else:
            result = services.systemd.restart(node, name)
        text, code = _job_error(result, verb, word, name)
        errors += text
        exit_code = code or exit_code
    return ToolReply("", errors, exit_code)


def _job_error(result: JobResult, verb: str, word: str, name: str) -> tuple[str, int]:
    """What systemctl prints for a unit's job that did not succeed, and its exit code ("", 0 if it did)."""
    if result is JobResult.NOT_FOUND:
        reason = "not loaded" if verb == "stop" else "not found"
        return f"Failed to {word} {name}: Unit {name} {reason}.\n", EXIT_JOB_NOT_FOUND
    see = f'See "systemctl status {name}" and "journalctl -xeu {name}" for details.\n'
    texts = {
        JobResult.FAILED: f"Job for {name} failed because the control process exited with error code.\n{see}",
        JobResult.START_LIMIT: (
            f"Job for {name} failed because start of the service was attempted too often.\n{see}"
            f'To force a start use "systemctl reset-failed {name}"\n'
            f'followed by "systemctl start {name}" again.\n'
        ),
        JobResult.BAD_SETTING: (
            f"Failed to {word} {name}: Unit {name} has a bad unit file setting.\n"
            f"See system logs and 'systemctl status {name}' for details.\n"
        ),
        JobResult.NOT_RELOADABLE: (
            f"Failed to reload {name}: Job type reload is not applicable for unit {name}.\n"
        ),
        # The job result is "invalid" (systemd's check_wait_response).
        JobResult.INACTIVE: f"{name} is not active, cannot reload.\n",
    }
    text = texts.get(result, "")
    return text, 1 if text else 0


def _enable(services: ServiceManager, node: str, verb: str, units: list[str], flags: Flags) -> ToolReply:
    errors = ""
    for name in units:
        unit = services.systemd.unit(node, name)
        if unit is None:
            action = "enable" if verb == "enable" else "disable"
            return ToolReply("", errors + f"Failed to {action} unit: Unit file {name} does not exist.\n", 1)
        before = unit.enabled
        services.systemd.set_enabled(node, name, verb == "enable")
        link = f"{WANTS_DIR}/{name}"
        if verb == "enable" and before is UnitFileState.DISABLED:
            errors += f"Created symlink {link} → {unit.file.path}.\n"
        elif verb == "disable" and before is UnitFileState.ENABLED:
            errors += f'Removed "{link}".\n'
    if "now" in flags.set:
        jobs = _jobs(services, node, "start" if verb == "enable" else "stop", units)
        return ToolReply("", errors + jobs.stderr, jobs.exit_code)
    return ToolReply("", errors, 0)


def _is_state(services: ServiceManager, node: str, verb: str, units: list[str], flags: Flags) -> ToolReply:
    wanted = ActiveState.ACTIVE if verb == "is-active" else ActiveState.FAILED
    out, hit = "", False
    services.systemd.sync()
    for name in units:
        unit = services.systemd.unit(node, name)
        state = unit.active if unit is not None else ActiveState.INACTIVE
        hit = hit or state is wanted
        out += f"{state.value}\n"
    if "quiet" in flags.set:
        out = ""
    if verb == "is-active":
        return ToolReply(out, "", 0 if hit else EXIT_NOT_RUNNING)
    return ToolReply(out, "", 0 if hit else 1)


def _is_enabled(services: ServiceManager, node: str, units: list[str], flags: Flags) -> ToolReply:
    out, errors, ok = "", "", False
    for name in units:
        unit = services.systemd.unit(node, name)
        if unit is None:
            errors += f"Failed to get unit file state for {name}: No such file or directory\n"
            continue
        ok = ok or unit.enabled.is_enabled()
        out += f"{unit.enabled.value}\n"
    if "quiet" in flags.set:
        out = ""
    return ToolReply(out, errors, 0 if ok else 1)


def _list_units(services: ServiceManager, node: str, flags: Flags) -> ToolReply:
    units = services.systemd.loaded_units(node)
    if flags.types and not any(t in ("service", "services") for t in flags.types):
        units = []
    if flags.states:
        units = [u for u in units if u.active.value in flags.states or u.sub.value in flags.states]
    elif "all" not in flags.set:
        units = [u for u in units if u.active in (ActiveState.ACTIVE, ActiveState.FAILED)]
    legend = "no-legend" not in flags.set
    return ToolReply(
        format_unit_list(units, filtered=bool(flags.states) or "all" in flags.set, legend=legend)
    )


def _show(services: ServiceManager, node: str, units: list[str], flags: Flags) -> ToolReply:
    if not units:
        return ToolReply(
            "Version=252-46.el9_5.2\nFeatures=+PAM +AUDIT +SELINUX -APPARMOR +IMA +SMACK +SECCOMP\n"
        )
    services.systemd.sync()
    blocks = []
    for name in units:
        props = unit_properties(services.systemd.unit(node, name), name)
        if flags.properties:
            wanted = {key: value for key, value in props}
            props = [(key, wanted[key]) for key in flags.properties if key in wanted]
        if "value" in flags.set:
            blocks.append("".join(f"{value}\n" for _, value in props))
        else:
            blocks.append("".join(f"{key}={value}\n" for key, value in props))
    return ToolReply("\n".join(blocks))
