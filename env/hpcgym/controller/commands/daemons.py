"""The daemons' binaries run by hand: munged, slurmd, slurmctld, slurmdbd, mariadbd, httpd, apachectl.

Version and help flags print what the real programs print (captures 00-no-config, 90-help-usage).
Running a daemon by hand runs the same start-up checks as its unit (services/), so `munged -F` shows
why the key is refused and `httpd -t` where the config breaks. Two deviations, on purpose: the stub
cannot tell who called it, so munged is checked as its unit's user (what `runuser -u munge -- munged`
does; a bare `munged` run as root would first trip over the seed dir's owner); and a daemon that
passes its checks with no copy running starts as its systemd unit would and the command returns,
where the real foreground daemon would hold the terminal.

slurmdbd reads slurmdbd.conf before its options, as Debian's slurmdbd 22.05.8 does (even -V fails
without one), and one run while another is up SIGTERMs it and takes its place (slurmdbd.c,
_kill_old_slurmdbd). mariadbd run as root without an account to run as refuses, as mysqld.cc does;
its version line is Rocky 9's MariaDB 10.5.
"""

from __future__ import annotations

import errno
import os

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.commands.daemon_usage import (
    MARIADBD_HELP,
    MUNGED_HELP,
    SLURMCTLD_HELP,
    SLURMD_HELP,
    SLURMDBD_HELP,
)
from hpcgym.controller.hardware import NodeHardware, slurmd_config_line
from hpcgym.controller.services import ServiceManager, munged
from hpcgym.controller.services import httpd as portal
from hpcgym.controller.services.access import NodeFileError
from hpcgym.controller.services.daemon import PID_MARK, append_log, fill_pid
from hpcgym.controller.services.manager import HTTPD
from hpcgym.controller.services.mariadb import MARIADB, MARIADB_VERSION, MARIADBD, log_time
from hpcgym.controller.services.slurm import (
    MUNGE,
    SLURM_VERSION,
    SLURMCTLD,
    SLURMD,
    read_conf,
    slurmd_init_errors,
)
from hpcgym.controller.services.slurmdbd import SLURMDBD, SLURMDBD_CONF, read_dbd_conf

HTTPD_VERSION = "Server version: Apache/2.4.62 (Rocky Linux)\nServer built:   Jan 29 2025 00:00:00\n"


def _stderr_of_log(lines: list[str], pid: int) -> str:
    # munged -F echoes its log lines on stderr as `munged: Level: text`.
    out = []
    for line in lines:
        level, _, text = line.split(" ", 3)[3].partition(":")
        out.append(f"munged: {level}: {text.strip()}\n".replace(PID_MARK, str(pid)))
    return "".join(out)


def _asked(args: list[str], *answers: tuple[tuple[str, ...], str]) -> ToolReply | None:
    """The text of the first (flags, text) whose flag is given: a daemon prints it and exits 0."""
    for flags, text in answers:
        if any(a in flags for a in args):
            return ToolReply(text)
    return None


def run_munged(ctx: Context, args: list[str]) -> ToolReply:
    version = f"munge-{munged.VERSION} (2022-06-22)\n"
    if (asked := _asked(args, (("-V", "--version"), version), (("-h", "--help"), MUNGED_HELP))) is not None:
        return asked
    services = ctx.services
    unit = services.systemd.unit(ctx.node, MUNGE)
    if unit is None:
        return ToolReply("", "", 1)
    services.systemd.sync()
    launch = munged.launch(services, ctx.node, unit.file)
    foreground = any(a in ("-F", "--foreground") for a in args)
    try:
        pid = services.access.start_process(ctx.node, "munged", launch.argv, uid=launch.uid)
    except NodeFileError as e:
        return ToolReply("", f"munged: Error: Failed to start: {os.strerror(e.errno or errno.ENOEXEC)}\n", 1)
    services.access.kill(ctx.node, pid, 9)
    # Like the real one, a munged started by hand logs to its file whether it stays up or not.
    append_log(
        services.access, ctx.node, launch.log_file, fill_pid(launch.log_lines, pid), launch.uid, launch.gid
    )
    if not launch.ok:
        text = (
            _stderr_of_log(launch.log_lines, pid)
            if foreground
            else "".join(f"{line.text}\n" for line in launch.stderr)
        )
        return ToolReply("", text, 1)
    if services.systemd.is_active(ctx.node, MUNGE):
        running = services.systemd.unit(ctx.node, MUNGE)
        holder = running.main_pid if running is not None else 0
        error = (
            f'munged: Error: Failed to lock "{munged.SOCKET}.lock": '
            f'pid {holder} bound to socket "{munged.SOCKET}"\n'
        )
        return ToolReply("", (_stderr_of_log(launch.log_lines, pid) if foreground else "") + error, 1)
    services.systemd.start(ctx.node, MUNGE)
    return ToolReply("", _stderr_of_log(launch.log_lines, pid) if foreground else "", 0)


def run_slurmd(ctx: Context, args: list[str]) -> ToolReply:
    if any(a in ("-V", "--version") for a in args):
        return ToolReply(f"slurm-wlm {SLURM_VERSION}\n")
    if any(a in ("-h", "--help") for a in args):
        return ToolReply("", SLURMD_HELP)
    services = ctx.services
    if "-C" in args:
        conf = read_conf(services, ctx.node)
        node = conf.node(ctx.node) if conf is not None else None
        if node is None:
            return ToolReply("", "slurmd: fatal: Unable to determine this slurmd's NodeName\n", 1)
        uptime = services.clocks.now_s - services.clocks.episode.start_s
        days, rest = divmod(uptime, 86400)
        clock = f"{days}-{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
        # What the node has, not what slurm.conf says: the line an admin pastes into slurm.conf.
        hw = services.hardware.nodes.get(node.name) or NodeHardware.from_node_conf(node)
        return ToolReply(f"{slurmd_config_line(node.name, hw)}\nUpTime={clock}\n")
    name = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "-N"), None)
    unit = services.systemd.unit(ctx.node, SLURMD)
    conf = read_conf(services, ctx.node)
    if conf is not None and unit is not None:
        errors = slurmd_init_errors(services, ctx.node, conf, name or ctx.node)
        if errors:
            return ToolReply("", "".join(f"slurmd: {line}\n" for line in errors), 1)
    return _start_by_hand(services, ctx.node, SLURMD, "slurmd", 6818)


def run_slurmctld(ctx: Context, args: list[str]) -> ToolReply:
    if any(a in ("-V", "--version") for a in args):
        return ToolReply(f"slurm-wlm {SLURM_VERSION}\n")
    if any(a in ("-h", "--help") for a in args):
        return ToolReply("", SLURMCTLD_HELP)
    services = ctx.services
    if "-c" in args and not services.systemd.is_active(ctx.node, SLURMCTLD):
        # A clean start: the controller recovers none of its saved state (SlurmState._restart).
        ctx.slurm.clean_start_pending = True
    reply = _start_by_hand(services, ctx.node, SLURMCTLD, "slurmctld", 6817)
    if not services.systemd.is_active(ctx.node, SLURMCTLD):
        ctx.slurm.clean_start_pending = False
    return reply


def _start_by_hand(services: ServiceManager, node: str, unit: str, prog: str, port: int) -> ToolReply:
    if services.systemd.unit(node, unit) is None:
        return ToolReply("", f"{prog}: fatal: Unable to process configuration file\n", 1)
    if services.systemd.is_active(node, unit):
        return ToolReply(
            "",
            f"{prog}: error: Error binding slurm stream socket: Address already in use\n"
            f"{prog}: fatal: Unable to bind listen port ({port}): Address already in use\n",
            1,
        )
    services.systemd.start(node, unit)
    lines = [e.message for e in services.systemd.journal(node).for_unit(unit) if e.identifier == prog]
    return ToolReply(
        "", "".join(f"{line}\n" for line in lines[-3:]), 0 if services.systemd.is_active(node, unit) else 1
    )


def run_httpd(ctx: Context, args: list[str]) -> ToolReply:
    if "-v" in args:
        return ToolReply(HTTPD_VERSION)
    services = ctx.services
    text, code = portal.configtest(services.access, ctx.node)
    if "-t" in args or code != 0:
        return ToolReply("", text, code)
    if services.systemd.is_active(ctx.node, HTTPD):
        return ToolReply(
            "",
            "(98)Address already in use: AH00072: make_sock: could not bind to address [::]:80\n"
            "(98)Address already in use: AH00072: make_sock: could not bind to address 0.0.0.0:80\n"
            "no listening sockets available, shutting down\nAH00015: Unable to open logs\n",
            1,
        )
    services.systemd.start(ctx.node, HTTPD)
    return ToolReply()


def run_apachectl(ctx: Context, args: list[str]) -> ToolReply:
    services = ctx.services
    verb = args[0] if args else ""
    if verb in ("configtest", "-t"):
        text, code = portal.configtest(services.access, ctx.node)
        return ToolReply("", text, code)
    if verb in ("-v", "-V"):
        return ToolReply(HTTPD_VERSION)
    # Rocky's apachectl hands the lifecycle verbs to systemctl.
    jobs = {
        "start": services.systemd.start,
        "stop": services.systemd.stop,
        "restart": services.systemd.restart,
        "graceful": services.systemd.reload,
    }
    if verb in jobs:
        text, code = portal.configtest(services.access, ctx.node)
        if code != 0 and verb != "stop":
            return ToolReply("", text, 1)
        jobs[verb](ctx.node, HTTPD)
        return ToolReply()
    return ToolReply("Usage: /usr/sbin/httpd [-D name] [-d directory] [-f file]\n", "", 1)


def _slurmdbd_conf_errors(services: ServiceManager, node: str) -> list[str]:
    # slurmdbd reads slurmdbd.conf before it looks at its options, so even -V and -h stop here
    # (Debian's slurmdbd 22.05.8, run without and with a slurmdbd.conf).
    info = services.access.stat(node, SLURMDBD_CONF)
    conf = read_dbd_conf(services, node)
    if info is None or conf is None:
        return [
            f"No slurmdbd.conf file ({SLURMDBD_CONF})",
            "error: slurmdbd.conf lacks DbdHost parameter, using 'localhost'",
            "fatal: StorageType must be specified",
        ]
    if info.perms & 0o077:
        return [
            f"fatal: slurmdbd.conf file {SLURMDBD_CONF} should be 600 is {info.perms:o} "
            "accessible for group or others"
        ]
    lines = [] if "dbdhost" in conf else ["error: slurmdbd.conf lacks DbdHost parameter, using 'localhost'"]
    if "storagetype" not in conf:
        lines.append("fatal: StorageType must be specified")
    return lines


def run_slurmdbd(ctx: Context, args: list[str]) -> ToolReply:
    services = ctx.services
    errors = _slurmdbd_conf_errors(services, ctx.node)
    if any(line.startswith("fatal:") for line in errors):
        return ToolReply("", "".join(f"slurmdbd: {line}\n" for line in errors), 1)
    warnings = "".join(f"slurmdbd: {line}\n" for line in errors)
    if "-V" in args:
        return ToolReply(f"slurm-wlm {SLURM_VERSION}\n", warnings)
    if "-h" in args:
        return ToolReply("", warnings + SLURMDBD_HELP)
    if services.systemd.unit(ctx.node, SLURMDBD) is None:
        return ToolReply("", warnings + "slurmdbd: fatal: Unable to process configuration file\n", 1)
    # A second slurmdbd does not refuse: it reads the PidFile, SIGTERMs the old one and takes over
    # (slurmdbd.c, _kill_old_slurmdbd); the unit's start-up checks then decide, as for the unit.
    running = services.systemd.unit(ctx.node, SLURMDBD)
    killed = ""
    if services.systemd.is_active(ctx.node, SLURMDBD) and running is not None and running.main_pid:
        killed = f"slurmdbd: Killing old slurmdbd[{running.main_pid}]\n"
        services.systemd.stop(ctx.node, SLURMDBD)
    services.systemd.start(ctx.node, SLURMDBD)
    lines = [
        e.message for e in services.systemd.journal(ctx.node).for_unit(SLURMDBD) if e.identifier == "slurmdbd"
    ]
    code = 0 if services.systemd.is_active(ctx.node, SLURMDBD) else 1
    return ToolReply("", warnings + killed + "".join(f"{line}\n" for line in lines[-2:]), code)


def run_mariadbd(ctx: Context, args: list[str]) -> ToolReply:
    version = f"{MARIADBD}  Ver {MARIADB_VERSION} for Linux on x86_64 (MariaDB Server)\n"
    if (asked := _asked(args, (("-V", "--version"), version), (("-?", "--help"), MARIADBD_HELP))) is not None:
        return asked
    services = ctx.services
    stamp = log_time(services.clocks.now_s)
    as_user = any(a.startswith(("--user", "-u")) for a in args)
    if ctx.user.uid == 0 and not as_user:
        # mysqld.cc: root must name the account to run as (--user=mysql, or user= in my.cnf, which
        # the site's server.cnf leaves out: the unit's User=mysql does it).
        return ToolReply(
            "",
            f"{MARIADBD}: Please consult the Knowledge Base to find out how to run mysqld as root!\n"
            f"{stamp} 0 [ERROR] Aborting\n",
            1,
        )
    if services.systemd.unit(ctx.node, MARIADB) is None:
        return ToolReply("", f"{stamp} 0 [ERROR] Aborting\n", 1)
    if services.systemd.is_active(ctx.node, MARIADB):
        return ToolReply(
            "",
            f"{stamp} 0 [ERROR] Can't start server: Bind on TCP/IP port. "
            "Got error: 98: Address already in use\n"
            f"{stamp} 0 [ERROR] Do you already have another mysqld server running on port: 3306 ?\n"
            f"{stamp} 0 [ERROR] Aborting\n",
            1,
        )
    # With an account to run as and no server up, it starts as its unit would (the module's header).
    services.systemd.start(ctx.node, MARIADB)
    return ToolReply("", "", 0 if services.systemd.is_active(ctx.node, MARIADB) else 1)
