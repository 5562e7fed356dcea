"""What systemd does when a job runs: start and stop a unit, notice its end, write the journal lines.

`Systemd` (manager.py) keeps the state and decides when; these functions are the
transitions, each logging what pid 1 and the daemon print, in their order, on the virtual clock.
Which program a unit runs is what the node's kernel reaches through its ExecStart path (`//`, `.`,
`..` and symlinks resolved in the node); if that is one in `DAEMONS`, the simulated daemon starts,
with the start-up checks its module makes. Any other program runs as itself, and is no daemon.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat as statmod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpcgym.controller.services import chrony, httpd, mariadb, munged, slurm, slurmdbd
from hpcgym.controller.services.access import NodeFileError
from hpcgym.controller.services.daemon import (
    DaemonHost,
    Launch,
    Line,
    append_log,
    exec_argv,
    fill_pid,
    find_account,
    find_group,
    iso_time,
    lookup_ids,
)
from hpcgym.controller.services.journal import Catalog, Entry, Priority, pid1_priority
from hpcgym.controller.services.units import (
    ActiveState,
    JobResult,
    MainProcess,
    Result,
    ServiceType,
    SkippedStart,
    SubState,
    UnitFile,
    UnitRuntime,
    hits_start_limit,
    unmet_condition,
    unset_variables,
)

if TYPE_CHECKING:
    from hpcgym.controller.services.manager import ServiceManager
    from hpcgym.controller.slurmconf import SlurmConf

# The program a daemon is (the path execve reaches, its name the daemon's) -> the module that
# simulates it. A unit whose program is not here runs that program itself.
# Each launcher takes the narrow host protocol its module names (munged.MungedHost, ...).
Launcher = Callable[[DaemonHost, str, UnitFile], Launch]
DAEMONS: dict[str, Launcher] = {
    "/usr/sbin/munged": munged.launch,
    "/usr/sbin/slurmd": slurm.launch_slurmd,
    "/usr/sbin/slurmctld": slurm.launch_slurmctld,
    "/usr/sbin/httpd": httpd.launch,
    "/usr/sbin/chronyd": chrony.launch,
    # Accounting (issue 17): slurmdbd and the MariaDB server it stores into, on the login node.
    "/usr/sbin/slurmdbd": slurmdbd.launch_slurmdbd,
    "/usr/libexec/mariadbd": mariadb.launch,
}
# Each daemon's program in the images is a hard link to the one client (images/common/setup-node.sh),
# so a file of other bytes at /usr/sbin/slurmd is another program, which runs as what it is.
CLIENT = "/usr/libexec/hpcgym/hpcgym-client"
# Where systemd 252 looks up an ExecStart= name without a slash: its compiled-in PATH for a merged /usr.
EXEC_SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin")
SIGNAL_NAMES = {
    1: "HUP", 2: "INT", 3: "QUIT", 4: "ILL", 5: "TRAP", 6: "ABRT", 7: "BUS", 8: "FPE", 9: "KILL",
    10: "USR1", 11: "SEGV", 12: "USR2", 13: "PIPE", 14: "ALRM", 15: "TERM", 16: "STKFLT", 24: "XCPU",
    25: "XFSZ", 26: "VTALRM", 27: "PROF", 29: "IO", 30: "PWR", 31: "SYS",
}  # fmt: skip
# The signals that end a daemon cleanly for systemd (EXIT_CLEAN_DAEMON in src/shared/exit-status.c).
CLEAN_SIGNALS = frozenset({1, 2, 13, 15})
# The steps of setting up a unit's process that can fail, with systemd's exit status for each.
SPAWN_STATUS = {"GROUP": 216, "USER": 217, "EXEC": 203}


@dataclass(frozen=True)
class Program:
    """What systemd would execute for a unit: the path reached, and which simulated daemon that is."""

    path: str
    daemon: str = ""  # "slurmd" where the path is that daemon's program, else ""
    error: int = 0  # the errno that makes the exec fail (203/EXEC), else 0


def locate_program(m: ServiceManager, node: str, binary: str) -> Program:
    """ExecStart's program as systemd's `find_executable` and the kernel's lookup find it."""
    if not binary:
        return Program("", error=errno.ENOENT)
    candidates = [binary] if "/" in binary else [f"{d}/{binary}" for d in EXEC_SEARCH_PATH]
    error = errno.ENOENT
    for candidate in candidates:
        try:
            path = m.access.resolve(node, candidate)
        except NodeFileError as e:
            error = e.errno or errno.ENOENT
            continue
        if path in DAEMONS and is_daemon_program(m, node, path):
            return Program(path, daemon=posixpath.basename(path))
        info = m.access.stat(node, path)
        # systemd's check_x_access: a regular file with an execute bit (root needs any one).
        if info is None:
            error = errno.ENOENT
        elif info.is_dir():
            return Program(path, error=errno.EISDIR)
        elif not info.is_file():
            return Program(path, error=errno.EBADFD)
        elif not info.mode & (statmod.S_IXUSR | statmod.S_IXGRP | statmod.S_IXOTH):
            return Program(path, error=errno.EACCES)
        else:
            return Program(path)
    return Program(binary, error=error)


def is_daemon_program(m: ServiceManager, node: str, path: str) -> bool:
    if m.access.stat(node, path) is None:
        # TODO: the images ship no /usr/sbin/chronyd (stubs/tools.list lacks it), so a daemon whose
        # program is missing still starts; once they ship it, missing is 203/EXEC like any program's.
        return True
    program = m.access.read(node, path)
    return program is not None and program == m.access.read(node, CLIENT)


def spawn_problem(
    m: ServiceManager, node: str, file: UnitFile, program: Program
) -> tuple[str, str, int] | None:
    """Why systemd could not set up the unit's process, as (step, what failed, errno), or None.

    In exec_child's order: User= and Group= (from the node's /etc/passwd and /etc/group), then the
    program (`locate_program`'s error).
    """
    if find_account(m.access, node, file.user) is None:
        return "USER", "Failed to determine user credentials", errno.ESRCH
    if file.group and find_group(m.access, node, file.group) is None:
        return "GROUP", "Failed to determine group credentials", errno.ESRCH
    if program.error:
        return "EXEC", f"Failed to locate executable {file.binary}", program.error
    return None


def launch_program(m: ServiceManager, node: str, file: UnitFile, program: Program) -> Launch:
    """Run the unit's program: the simulated daemon with its checks, or the program itself."""
    launcher = DAEMONS.get(program.path) if program.daemon else None
    if launcher is not None:
        return launcher(m, node, file)
    uid, gid = find_account(m.access, node, file.user) or (0, 0)
    # The kernel names a process after the file it executes, cut to 15 bytes (TASK_COMM_LEN).
    comm = posixpath.basename(program.path)[:15] or "sh"
    return Launch(ok=True, comm=comm, argv=exec_argv(file), uid=uid, gid=gid, program=program.path)


def next_job(m: ServiceManager, node: str) -> str:
    state = m.systemd.node_state(node)
    state.next_job_id += 1
    return str(state.next_job_id)


def start_unit(m: ServiceManager, node: str, runtime: UnitRuntime) -> JobResult:
    file, now = runtime.file, m.clocks.now_s
    job = next_job(m, node)
    refused = _refuse_start(m, node, runtime, job, now)
    if refused is not None:
        return refused
    program = locate_program(m, node, file.binary)
    problem = spawn_problem(m, node, file, program)
    _log_starting(m, node, runtime, job)
    if problem is not None:
        spawn_failed(m, node, runtime, *problem)
        return _start_failed(m, node, runtime, job)
    launch = launch_program(m, node, file, program)
    if not launch.ok:
        return _run_failing_checks(m, node, runtime, launch, job)
    pid = spawn(m, node, runtime, launch)
    if pid is None:
        return _start_failed(m, node, runtime, job)
    _daemon_output(m, node, runtime, launch, pid)
    _set_running(runtime, program, launch, pid, now)
    if file.service_type is not ServiceType.SIMPLE:
        log_systemd(m, node, runtime, f"Started {file.description}.", Catalog.JOB_START_DONE, job=job)
    return JobResult.DONE


def _refuse_start(m: ServiceManager, node: str, runtime: UnitRuntime, job: str, now: int) -> JobResult | None:
    """What systemd checks before it runs anything: the start limit, conditions, an ExecStart."""
    file = runtime.file
    if hits_start_limit(runtime, now):
        log_systemd(m, node, runtime, f"{runtime.name}: Start request repeated too quickly.")
        set_failed(m, node, runtime, Result.START_LIMIT_HIT)
        _log_start_failed(m, node, runtime, job)
        return JobResult.START_LIMIT
    condition = unmet_condition(file, lambda path: m.access.stat(node, path) is not None)
    if condition is not None:
        log_systemd(
            m,
            node,
            runtime,
            f"{file.description} was skipped because of an unmet condition check ({condition}).",
        )
        runtime.process, runtime.skipped = None, SkippedStart(condition, now)
        return JobResult.DONE
    if not file.exec_start:
        log_systemd(
            m,
            node,
            runtime,
            f"{runtime.name}: Service has no ExecStart=, ExecStop=, or SuccessAction=. Refusing.",
        )
        return JobResult.BAD_SETTING
    return None


def _log_starting(m: ServiceManager, node: str, runtime: UnitRuntime, job: str) -> None:
    """A simple unit counts as started once forked; the others are only starting."""
    desc = runtime.file.description
    if runtime.file.service_type is ServiceType.SIMPLE:
        log_systemd(m, node, runtime, f"Started {desc}.", Catalog.JOB_START_DONE, job=job)
    else:
        log_systemd(m, node, runtime, f"Starting {desc}...", Catalog.JOB_START_BEGUN, job=job)


def _log_start_failed(m: ServiceManager, node: str, runtime: UnitRuntime, job: str) -> None:
    log_systemd(
        m, node, runtime, f"Failed to start {runtime.file.description}.", Catalog.JOB_START_FAILED, job=job
    )


def _start_failed(m: ServiceManager, node: str, runtime: UnitRuntime, job: str) -> JobResult:
    """A simple unit's start job is done already (it logged Started); the others' job failed."""
    if runtime.file.service_type is ServiceType.SIMPLE:
        return JobResult.DONE
    _log_start_failed(m, node, runtime, job)
    return JobResult.FAILED


def _run_failing_checks(
    m: ServiceManager, node: str, runtime: UnitRuntime, launch: Launch, job: str
) -> JobResult:
    """Run a daemon whose start-up checks fail: it logs why and exits with its status."""
    # The process that failed its checks did run: give it a pid from the node's own sequence.
    failed_pid = spawn(m, node, runtime, launch)
    if failed_pid is None:
        _log_start_failed(m, node, runtime, job)
        return JobResult.FAILED
    m.access.kill(node, failed_pid, 9)
    log_unset_variables(m, node, runtime, launch.comm, failed_pid)
    for line in launch.stderr:
        log_line(m, node, runtime, launch.comm, failed_pid, line)
    append_log(
        m.access,
        node,
        launch.log_file,
        fill_pid(launch.log_lines, failed_pid),
        launch.uid,
        launch.gid,
    )
    _record_failed_exit(m, node, runtime, launch, failed_pid)
    return _start_failed(m, node, runtime, job)


def _record_failed_exit(m: ServiceManager, node: str, runtime: UnitRuntime, launch: Launch, pid: int) -> None:
    forking = runtime.file.service_type is ServiceType.FORKING
    status = f"{launch.exit_status}/FAILURE"
    kind = "Control" if forking else "Main"
    log_systemd(m,
        node, runtime, f"{runtime.name}: {kind} process exited, code=exited, status={status}",
        Catalog.PROCESS_EXITED, code="exited", status=str(launch.exit_status),
    )  # fmt: skip
    set_failed(m, node, runtime, Result.EXIT_CODE)
    if forking:
        runtime.control_exit, runtime.main_exit = (pid, "exited", status), None
    else:
        runtime.control_exit, runtime.main_exit = None, (pid, "exited", status)


def _daemon_output(m: ServiceManager, node: str, runtime: UnitRuntime, launch: Launch, pid: int) -> None:
    """What the started daemon writes: warnings, its pid file, its log file and its stderr lines."""
    # A forking daemon's parent ran just before it and exited once the child was up.
    parent = pid - 1 if runtime.file.service_type is ServiceType.FORKING else None
    log_unset_variables(m, node, runtime, launch.comm, parent if parent is not None else pid)
    if launch.pid_file:
        # Like slurmd's "Unable to create pidfile": logged by the daemon, and it runs on without one.
        with contextlib.suppress(NodeFileError):
            m.access.write(
                node, launch.pid_file, f"{pid}\n".encode(), mode=0o644, uid=launch.uid, gid=launch.gid
            )
    append_log(m.access, node, launch.log_file, fill_pid(launch.log_lines, pid), launch.uid, launch.gid)
    for line in launch.stderr:
        log_line(m, node, runtime, launch.comm, parent if parent is not None else pid, line)


def _set_running(runtime: UnitRuntime, program: Program, launch: Launch, pid: int, now: int) -> None:
    forking = runtime.file.service_type is ServiceType.FORKING
    parent = pid - 1 if forking else None
    runtime.active, runtime.sub, runtime.result = ActiveState.ACTIVE, SubState.RUNNING, Result.SUCCESS
    runtime.main_pid, runtime.main_exit = pid, None
    runtime.control_exit = (parent, "exited", "0/SUCCESS") if forking and parent is not None else None
    runtime.state_since_s = runtime.active_enter_s = now
    runtime.process = MainProcess(
        program.daemon, launch.comm, " ".join(launch.argv), launch.pid_file, launch.facts
    )
    runtime.skipped = None


def spawn(m: ServiceManager, node: str, runtime: UnitRuntime, launch: Launch) -> int | None:
    """Start the unit's process; None when the node's own programs could not (the agent broke them)."""
    try:
        return m.access.start_process(node, launch.comm, launch.argv, uid=launch.uid, program=launch.program)
    except NodeFileError as e:
        program = runtime.file.binary
        spawn_failed(m, node, runtime, "EXEC", f"Failed to execute {program}", e.errno or errno.ENOEXEC)
        return None


def spawn_failed(m: ServiceManager, node: str, runtime: UnitRuntime, step: str, what: str, err: int) -> None:
    """Log systemd's words for a unit whose process could not be set up or executed; fail the unit."""
    why, status = os.strerror(err), SPAWN_STATUS[step]
    for text in (
        f"{runtime.name}: {what}: {why}",
        f"{runtime.name}: Failed at step {step} spawning {runtime.file.binary}: {why}",
    ):
        log_systemd(m, node, runtime, text)
    log_systemd(m,
        node, runtime, f"{runtime.name}: Main process exited, code=exited, status={status}/{step}",
        Catalog.PROCESS_EXITED, code="exited", status=str(status),
    )  # fmt: skip
    set_failed(m, node, runtime, Result.EXIT_CODE)


def log_unset_variables(m: ServiceManager, node: str, runtime: UnitRuntime, comm: str, pid: int) -> None:
    missing = unset_variables(runtime.file, lambda path: m.access.read(node, path))
    if missing:
        text = f"{runtime.name}: Referenced but unset environment variable evaluates to an empty string: "
        log_line(m, node, runtime, f"({comm})", pid, Line(text + ", ".join(missing), Priority.WARNING))


def stop_unit(m: ServiceManager, node: str, runtime: UnitRuntime) -> None:
    if runtime.active is not ActiveState.ACTIVE or runtime.main_pid is None:
        return
    desc, job, pid = runtime.file.description, next_job(m, node), runtime.main_pid
    log_systemd(m, node, runtime, f"Stopping {desc}...", Catalog.JOB_STOP_BEGUN, job=job)
    m.access.kill(node, pid, 15)
    remove_pid_file(m, node, runtime)
    log_systemd(m, node, runtime, f"{runtime.name}: Deactivated successfully.", Catalog.UNIT_SUCCEEDED)
    log_systemd(m, node, runtime, f"Stopped {desc}.", Catalog.JOB_STOP_DONE, job=job)
    runtime.active, runtime.sub, runtime.result = ActiveState.INACTIVE, SubState.DEAD, Result.SUCCESS
    runtime.main_pid, runtime.main_exit = None, (pid, "exited", "0/SUCCESS")
    runtime.state_since_s = m.clocks.now_s
    runtime.process, runtime.skipped = None, None


def remove_pid_file(m: ServiceManager, node: str, runtime: UnitRuntime) -> None:
    """The daemons we simulate remove their pid file (PIDFile=, else their own) when they end cleanly."""
    pid_file = runtime.file.pid_file or (runtime.process.pid_file if runtime.process is not None else "")
    if pid_file:
        with contextlib.suppress(NodeFileError):
            m.access.remove(node, pid_file)


def main_exited(
    m: ServiceManager, node: str, runtime: UnitRuntime, pid: int, code: str, status: int, result: Result
) -> None:
    text = f"{status}/{SIGNAL_NAMES.get(status, str(status))}" if code == "killed" else f"{status}/FAILURE"
    log_systemd(m,
        node, runtime, f"{runtime.name}: Main process exited, code={code}, status={text}",
        Catalog.PROCESS_EXITED, code=code, status=str(status),
    )  # fmt: skip
    runtime.main_pid, runtime.main_exit = None, (pid, code, text)
    set_failed(m, node, runtime, result)


def decode_wait_status(status: int | None) -> tuple[str, int]:
    """(code, status) as systemd words a raw wait(2) status: ("exited", 1), ("killed", 15), ...

    None (a process gone without its init's word on how, say killed from outside the node) reads
    as SIGKILL, the one signal that needs no handler to end anything.
    """
    if status is None:
        return "killed", 9
    if status & 0x7F == 0:
        return "exited", (status >> 8) & 0xFF
    return ("dumped" if status & 0x80 else "killed"), status & 0x7F


def main_ended(
    m: ServiceManager, node: str, runtime: UnitRuntime, pid: int, code: str, status: int
) -> Result:
    """The running unit's main process ended on its own (service_sigchld_event); return the result.

    A clean ending (exit 0, or a clean signal) is logged at debug level only, and the unit goes
    inactive; any other is logged and fails the unit.
    """
    clean = (code == "exited" and status == 0) or (code == "killed" and status in CLEAN_SIGNALS)
    if not clean:
        result = Result.EXIT_CODE if code == "exited" else Result.SIGNAL
        main_exited(m, node, runtime, pid, code, status, result)
        return result
    text = f"{status}/{SIGNAL_NAMES.get(status, str(status))}" if code == "killed" else "0/SUCCESS"
    remove_pid_file(m, node, runtime)
    log_systemd(m, node, runtime, f"{runtime.name}: Deactivated successfully.", Catalog.UNIT_SUCCEEDED)
    runtime.active, runtime.sub, runtime.result = ActiveState.INACTIVE, SubState.DEAD, Result.SUCCESS
    runtime.main_pid, runtime.main_exit = None, (pid, code, text)
    runtime.state_since_s = m.clocks.now_s
    runtime.process, runtime.skipped = None, None
    return Result.SUCCESS


def set_failed(m: ServiceManager, node: str, runtime: UnitRuntime, result: Result) -> None:
    log_systemd(m,
        node, runtime, f"{runtime.name}: Failed with result '{result.value}'.", Catalog.UNIT_FAILED,
        result=result.value,
    )  # fmt: skip
    runtime.active, runtime.sub, runtime.result = ActiveState.FAILED, SubState.FAILED, result
    runtime.main_pid = None
    runtime.state_since_s = m.clocks.now_s
    runtime.process, runtime.skipped = None, None


# ---- journal -----------------------------------------------------------------------------------


def log_systemd(
    m: ServiceManager,
    node: str,
    runtime: UnitRuntime,
    text: str,
    catalog: Catalog | None = None,
    **fields: str,
) -> None:
    now = m.clocks.node_now_s(node)
    m.systemd.node_state(node).journal.add(
        Entry(now, "systemd", 1, runtime.name, text, pid1_priority(text), catalog, dict(fields))
    )


def log_line(
    m: ServiceManager,
    node: str,
    runtime: UnitRuntime,
    comm: str,
    pid: int,
    line: Line,
    at_s: int | None = None,
) -> None:
    # A daemon's stderr reaches the journal at SyslogLevel= (info), whatever the text says: only
    # systemd's own lines carry their real priority, as `journalctl -p err` shows. `at_s`: when,
    # on the episode's clock, if not now (the node's own clock stamps it).
    priority = line.priority if comm.startswith("(") else Priority.INFO
    when = m.clocks.node_now_s(node) if at_s is None else at_s + m.clocks.offset(node)
    m.systemd.node_state(node).journal.add(Entry(when, comm, pid, runtime.name, line.text, priority))


# The slurm.conf option naming each Slurm daemon's own log file.
SLURM_LOG_FILES = {"slurmd": "slurmdlogfile", "slurmctld": "slurmctldlogfile"}


def log_slurm_daemon(
    m: ServiceManager,
    conf: SlurmConf,
    slurm_user: str,
    node: str,
    daemon: str,
    text: str,
    *,
    at_s: int | None = None,
) -> None:
    """One line of slurmd or slurmctld as the daemon writes it, while it runs.

    "slurmd: error: ..." in its unit's journal, and the same text, stamped, in its log file
    (SlurmdLogFile / SlurmctldLogFile), owned by SlurmUser for slurmctld and root for slurmd.
    `at_s` is when the daemon logged it on the episode's clock (default: now).
    """
    runtime = m.systemd.node_state(node).units.get(f"{daemon}.service")
    if runtime is None or not runtime.main_pid:
        return
    when = m.clocks.now_s if at_s is None else at_s
    for line in slurm.daemon_lines(daemon, [text]):
        log_line(m, node, runtime, daemon, runtime.main_pid, line, at_s=when)
    path = slurm.slurmd_path(conf, SLURM_LOG_FILES[daemon], "", node)
    uid, gid = lookup_ids(m.access, node, slurm_user if daemon == "slurmctld" else "root")
    append_log(m.access, node, path, [f"[{iso_time(when)}.000] {text}"], uid, gid)
