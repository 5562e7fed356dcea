"""Systemd's unit model: the states a unit can be in, and the unit files that define one.

Enum values are systemd's own spellings (`active`, `failed`, `exit-code`), so tools print them as
they are. Unit files are read from the node itself (`/etc/systemd/system` overrides
`/usr/lib/systemd/system`), so a unit exists on a node only if its file does: `slurmd.service` is
found on a compute node and `could not be found` on the login node, as on a real cluster.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from hpcgym.controller.services.facts import DaemonFacts, Facts

UNIT_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system")
# systemd's DefaultStartLimitIntervalSec= and DefaultStartLimitBurst=.
START_LIMIT_INTERVAL_S = 10
START_LIMIT_BURST = 5
# The start conditions we evaluate; each passes when the path exists (or, with `!`, does not).
CONDITIONS = ("ConditionPathExists", "ConditionFileNotEmpty", "ConditionPathIsDirectory")


class ActiveState(enum.Enum):
    ACTIVE = "active"
    RELOADING = "reloading"
    INACTIVE = "inactive"
    FAILED = "failed"
    ACTIVATING = "activating"
    DEACTIVATING = "deactivating"


class SubState(enum.Enum):
    RUNNING = "running"
    DEAD = "dead"
    FAILED = "failed"
    EXITED = "exited"


class LoadState(enum.Enum):
    LOADED = "loaded"
    NOT_FOUND = "not-found"


class UnitFileState(enum.Enum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    STATIC = "static"

    def is_enabled(self) -> bool:
        """`systemctl is-enabled` exits 0 for these."""
        return self is not UnitFileState.DISABLED


class Restart(enum.Enum):
    """`Restart=`: which endings make systemd start the service again."""

    NO = "no"
    ON_SUCCESS = "on-success"
    ON_FAILURE = "on-failure"
    ON_ABNORMAL = "on-abnormal"
    ON_ABORT = "on-abort"
    ON_WATCHDOG = "on-watchdog"
    ALWAYS = "always"

    def restarts_after(self, result: Result) -> bool:
        """Whether a main process that ended with `result` is started again (service_shall_restart).

        systemd.service(5), "Restart=": a clean ending (exit 0, or SIGHUP, SIGINT, SIGTERM or SIGPIPE
        for a daemon) is `success`; on-abnormal and on-abort leave exit codes alone, on-abort
        restarts after an unclean signal only.
        """
        if self is Restart.ALWAYS:
            return True
        if self is Restart.ON_SUCCESS:
            return result is Result.SUCCESS
        if self is Restart.ON_FAILURE:
            return result is not Result.SUCCESS
        if self is Restart.ON_ABNORMAL:
            return result not in (Result.SUCCESS, Result.EXIT_CODE)
        if self is Restart.ON_ABORT:
            return result is Result.SIGNAL
        return False


class JobResult(enum.Enum):
    """How a systemctl job ended; systemctl turns each into its message and exit code."""

    DONE = "done"
    FAILED = "failed"
    NOT_FOUND = "not-found"
    NOT_RELOADABLE = "not-reloadable"
    INACTIVE = "inactive"
    START_LIMIT = "start-limit"
    BAD_SETTING = "bad-setting"


class Result(enum.Enum):
    """Why a service last stopped (`Result=`, shown as `failed (Result: exit-code)`)."""

    SUCCESS = "success"
    EXIT_CODE = "exit-code"
    SIGNAL = "signal"
    TIMEOUT = "timeout"
    START_LIMIT_HIT = "start-limit-hit"


class ServiceType(enum.Enum):
    SIMPLE = "simple"
    FORKING = "forking"
    NOTIFY = "notify"
    ONESHOT = "oneshot"


@dataclass(frozen=True)
class UnitFile:
    """The parts of a `.service` file the simulation acts on; `raw` keeps the text for change checks."""

    name: str
    path: str
    description: str
    documentation: tuple[str, ...] = ()
    service_type: ServiceType = ServiceType.SIMPLE
    exec_start: str = ""
    exec_reload: str = ""
    pid_file: str = ""
    user: str = "root"
    group: str = ""
    restart: Restart = Restart.NO
    wanted_by: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    environment: tuple[str, ...] = ()
    environment_files: tuple[str, ...] = ()
    raw: bytes = b""

    @property
    def binary(self) -> str:
        """The program ExecStart runs (`/usr/sbin/munged`), without systemd's `-`/`@` prefixes."""
        first = self.exec_start.split()[0] if self.exec_start.split() else ""
        return first.lstrip("-@:+!")


@dataclass
class MainProcess:
    """What the manager knows of a started unit's main process, from its launch."""

    # The simulated daemon it is (`munged`), or "" for a program that runs as itself.
    daemon: str
    comm: str
    cmdline: str
    pid_file: str
    facts: DaemonFacts | None = None


@dataclass(frozen=True)
class SkippedStart:
    """The unmet Condition...= that skipped a unit's last start, and when (status shows it)."""

    condition: str
    at_s: int


@dataclass
class UnitRuntime:
    """A loaded unit's live state on one node."""

    file: UnitFile
    enabled: UnitFileState
    active: ActiveState = ActiveState.INACTIVE
    sub: SubState = SubState.DEAD
    result: Result = Result.SUCCESS
    main_pid: int | None = None
    # Ended processes as status prints them, (pid, code, status): `Process:` is the forking parent or
    # a start that failed before a main process existed; `Main PID:` shows a main process that ended.
    control_exit: tuple[int, str, str] | None = None
    main_exit: tuple[int, str, str] | None = None
    state_since_s: int | None = None
    active_enter_s: int | None = None
    exec_main_status: int = 0
    n_restarts: int = 0
    # Set by a start that launched a process, or by one a condition skipped; a stop or failure
    # forgets both.
    process: MainProcess | None = None
    skipped: SkippedStart | None = None
    # When each recent start happened, for StartLimitBurst= within StartLimitIntervalSec=.
    start_times_s: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.file.name

    def facts(self, kind: type[Facts]) -> Facts | None:
        """The facts of `kind` its main process left, or None (none runs, or another program does)."""
        facts = self.process.facts if self.process is not None else None
        return facts if isinstance(facts, kind) else None

    def set_facts(self, facts: DaemonFacts) -> None:
        """Replace what its running main process knows (a daemon's state that moves on as it runs)."""
        if self.process is not None:
            self.process.facts = facts


def normalize_unit_name(name: str) -> str:
    """`munge` -> `munge.service`, as systemctl completes a name without a type suffix."""
    known = (".service", ".socket", ".target", ".mount", ".timer", ".path", ".slice", ".scope", ".device")
    return name if name.endswith(known) else f"{name}.service"


def parse_unit_file(name: str, path: str, raw: bytes) -> UnitFile:
    """Read a unit file's [Unit], [Service] and [Install] keys (later assignments win, lists add up)."""
    section = ""
    values: dict[tuple[str, str], list[str]] = {}
    for line in raw.decode(errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if sep:
            values.setdefault((section, key.strip()), []).append(value.strip())

    def last(section: str, key: str, default: str = "") -> str:
        found = values.get((section, key))
        return found[-1] if found else default

    def words(section: str, key: str) -> tuple[str, ...]:
        return tuple(word for value in values.get((section, key), []) for word in value.split())

    try:
        service_type = ServiceType(last("Service", "Type", "simple"))
    except ValueError:
        service_type = ServiceType.SIMPLE
    return UnitFile(
        name=name,
        path=path,
        description=last("Unit", "Description", name),
        documentation=words("Unit", "Documentation"),
        service_type=service_type,
        exec_start=last("Service", "ExecStart"),
        exec_reload=last("Service", "ExecReload"),
        pid_file=last("Service", "PIDFile"),
        user=last("Service", "User", "root"),
        group=last("Service", "Group"),
        restart=_restart(last("Service", "Restart", "no")),
        wanted_by=words("Install", "WantedBy"),
        conditions=tuple(
            f"{key}={value}"
            for (sect, key), found in values.items()
            if sect == "Unit" and key in CONDITIONS
            for value in found
        ),
        environment=words("Service", "Environment"),
        environment_files=tuple(values.get(("Service", "EnvironmentFile"), [])),
        raw=raw,
    )


def _restart(text: str) -> Restart:
    try:
        return Restart(text)
    except ValueError:
        return Restart.NO


_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def unset_variables(file: UnitFile, read: Callable[[str], bytes | None]) -> list[str]:
    """The `$VARS` in ExecStart that neither Environment= nor an EnvironmentFile= sets.

    systemd 252 expands them to nothing and says so in the journal, under the process it forks
    (`(munged)[PID]: munge.service: Referenced but unset environment variable ...: OPTIONS`).
    """
    defined = {word.split("=", 1)[0] for word in file.environment if "=" in word}
    for spec in file.environment_files:
        raw = read(spec.lstrip("-"))
        for line in (raw or b"").decode(errors="replace").splitlines():
            key, sep, _ = line.strip().partition("=")
            if sep and not key.startswith("#"):
                defined.add(key.strip())
    missing: list[str] = []
    for match in _VARIABLE.finditer(file.exec_start):
        name = match.group(1) or match.group(2)
        if name not in defined and name not in missing:
            missing.append(name)
    return missing


def unmet_condition(file: UnitFile, exists: Callable[[str], bool]) -> str | None:
    """The first start condition that fails (`ConditionPathExists=/etc/slurm/slurm.conf`), or None.

    A unit whose condition fails is skipped, not failed: systemd leaves it inactive and says so.
    """
    for condition in file.conditions:
        value = condition.split("=", 1)[1].lstrip("|")
        negate = value.startswith("!")
        if exists(value.lstrip("!")) == negate:
            return condition
    return None


def hits_start_limit(runtime: UnitRuntime, now_s: int) -> bool:
    """Count one more start; True if it is one too many for the interval (systemd then refuses it)."""
    runtime.start_times_s = [t for t in runtime.start_times_s if now_s - t < START_LIMIT_INTERVAL_S]
    if len(runtime.start_times_s) >= START_LIMIT_BURST:
        return True
    runtime.start_times_s.append(now_s)
    return False
