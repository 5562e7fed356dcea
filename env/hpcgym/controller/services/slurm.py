"""slurmd and slurmctld: their start-up checks, and whether a node's slurmd can register.

Real slurmd 22.05 starts even when it cannot register (it logs the error and keeps retrying), and
ignores a stale pid file (it overwrites it); so a unit can be `active (running)` while the node is
down in `sinfo`, and the journal says why. Registration needs, on the node: munged up (slurmd signs
its messages through it) and a route to SlurmctldHost; on the controller host: slurmctld up and a
munged holding the same key.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from hpcgym.controller.services import munged
from hpcgym.controller.services.daemon import (
    DaemonHost,
    Launch,
    Line,
    append_log,
    exec_argv,
    iso_time,
    lookup_ids,
)
from hpcgym.controller.services.journal import Priority
from hpcgym.controller.services.units import UnitFile
from hpcgym.controller.slurmconf import SlurmConf, parse_slurm_conf
from hpcgym.errors import ControllerError

SLURM_VERSION = "22.05.8"
SLURM_CONF = "/etc/slurm/slurm.conf"
MUNGE = "munge.service"
SLURMD = "slurmd.service"
SLURMCTLD = "slurmctld.service"


class RegistrationProblem(enum.Enum):
    """Why a slurmd cannot talk to slurmctld."""

    MUNGE_DOWN = "munge-down"
    # slurmctld cannot decode what this node's munged signed: another key, or no munged on its side.
    KEY_MISMATCH = "key-mismatch"
    CONTROLLER_UNREACHABLE = "controller-unreachable"
    # The node's clock is more than a credential's TTL off the controller's: slurmctld's munged
    # rejects what the node signs as from the future (rewound) or from the past (expired).
    CLOCK_REWOUND = "clock-rewound"
    CLOCK_EXPIRED = "clock-expired"

    @property
    def text(self) -> str:
        """Slurm's error text (`slurm_strerror`) for the failed registration."""
        return _PROBLEM_TEXT[self]


# What Slurm's auth/munge plugin logs when libmunge cannot reach munged (auth_munge.c, `_encode`).
MUNGE_DOWN_ERRORS = [
    "error: If munged is up, restart with --num-threads=10",
    f'error: Munge encode failed: Failed to access "{munged.SOCKET}": No such file or directory',
]

_PROBLEM_TEXT = {
    RegistrationProblem.MUNGE_DOWN: "Protocol authentication error",
    RegistrationProblem.KEY_MISMATCH: "Zero Bytes were transmitted or received",
    RegistrationProblem.CONTROLLER_UNREACHABLE: "Unable to contact slurm controller (connect failure)",
    # slurmctld drops a message it cannot authenticate without a reply, as for a foreign key.
    RegistrationProblem.CLOCK_REWOUND: "Zero Bytes were transmitted or received",
    RegistrationProblem.CLOCK_EXPIRED: "Zero Bytes were transmitted or received",
}
# munged's default credential lifetime (munge.h MUNGE_DEFAULT_TTL); Slurm's auth/munge asks for it.
MUNGE_TTL_S = 300


def read_conf(host: DaemonHost, node: str) -> SlurmConf | None:
    raw = host.access.read(node, SLURM_CONF)
    if raw is None:
        return None
    try:
        return parse_slurm_conf(raw.decode(errors="replace"))
    except ControllerError:
        return None


def registration_problem(host: DaemonHost, node: str) -> RegistrationProblem | None:
    """Why `node`'s slurmd cannot reach slurmctld right now, or None if it can."""
    if not host.is_active(node, MUNGE):
        return RegistrationProblem.MUNGE_DOWN
    ctl = host.controller_host
    addr = host.controller_addr(node)
    if addr is None or not host.network.can_reach(node, addr) or not host.is_active(ctl, SLURMCTLD):
        return RegistrationProblem.CONTROLLER_UNREACHABLE
    if not host.is_active(ctl, MUNGE):
        return RegistrationProblem.KEY_MISMATCH
    mine, theirs = host.memo(node, MUNGE).get("key_sha256"), host.memo(ctl, MUNGE).get("key_sha256")
    if mine != theirs:
        return RegistrationProblem.KEY_MISMATCH
    return clock_problem(host.clock_offset(node) - host.clock_offset(ctl))


def clock_problem(ahead_s: int) -> RegistrationProblem | None:
    """How slurmctld's munged judges a credential from a node `ahead_s` seconds ahead of it.

    munged (dec.c) accepts a decode time in [encode - ttl, encode + ttl]: with the default clock-skew
    allowance, a credential may come from up to one TTL in the future.
    """
    if ahead_s > MUNGE_TTL_S:
        return RegistrationProblem.CLOCK_REWOUND
    if ahead_s < -MUNGE_TTL_S:
        return RegistrationProblem.CLOCK_EXPIRED
    return None


def _ctime(time_s: int) -> str:
    return datetime.fromtimestamp(time_s, UTC).strftime("%a %b %d %H:%M:%S %Y")


def slurmctld_decode_errors(problem: RegistrationProblem, encoded_s: int, decoded_s: int) -> list[str]:
    """What slurmctld logs when it cannot authenticate a node's registration (auth_munge.c `_decode_cred`)."""
    rewound = problem is RegistrationProblem.CLOCK_REWOUND
    status = "Rewound credential" if rewound else "Expired credential"
    lines = [
        f"error: Munge decode failed: {status}",
        f"ENCODED: {_ctime(encoded_s)}",
        f"DECODED: {_ctime(decoded_s)}",
    ]
    if rewound:
        lines.append("error: Check for out of sync clocks")
    return [
        *lines,
        "error: slurm_unpack_received_msg: REQUEST_NODE_REGISTRATION_STATUS has authentication error: "
        "Invalid authentication credential",
        "error: slurm_unpack_received_msg: Protocol authentication error",
    ]


def registration_errors(problem: RegistrationProblem) -> list[str]:
    """What slurmd logs when a registration attempt fails (SlurmdDebug=info)."""
    if problem is RegistrationProblem.MUNGE_DOWN:
        return [
            *MUNGE_DOWN_ERRORS,
            "error: slurm_send_node_msg: auth_g_create: REQUEST_NODE_REGISTRATION_STATUS "
            "has authentication error",
            f"error: Unable to register: {problem.text}",
        ]
    return [f"error: Unable to register: {problem.text}"]


def daemon_lines(prog: str, texts: list[str]) -> list[Line]:
    return [
        Line(f"{prog}: {text}", Priority.ERR if text.startswith(("error", "fatal")) else Priority.INFO)
        for text in texts
    ]


def log_registration_failure(host: DaemonHost, node: str, problem: RegistrationProblem) -> list[Line]:
    """Journal lines for a failed registration; also appended to SlurmdLogFile."""
    texts = registration_errors(problem)
    conf = read_conf(host, node)
    log_file = slurmd_path(conf, "slurmdlogfile", "", node) if conf is not None else ""
    uid, gid = lookup_ids(host.access, node, "root")
    append_log(host.access, node, log_file, [f"[{iso_time(host.now_s)}.000] {t}" for t in texts], uid, gid)
    return daemon_lines("slurmd", texts)


def _started_on(time_s: int) -> str:
    return datetime.fromtimestamp(time_s, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def slurmd_path(conf: SlurmConf, key: str, default: str, name: str) -> str:
    """A slurmd path option with Slurm's `%n` (node name) and `%h` (host name) expanded."""
    return conf.options.get(key, default).replace("%n", name).replace("%h", name)


def slurmd_init_errors(host: DaemonHost, node: str, conf: SlurmConf, name: str) -> list[str]:
    """What slurmd 22.05 logs before `slurmd initialization failed` (capture 60-errors, slurmd -N)."""
    errors = []
    spool = slurmd_path(conf, "slurmdspooldir", "/var/spool/slurmd", name)
    info = host.access.stat(node, spool)
    if info is None or not info.is_dir():
        errors += [
            f"error: Domain socket directory {spool}: No such file or directory",
            "error: xcpuinfo_hwloc_topo_load: failed (load will be required after read failures).",
        ]
    if conf.node(name) is None:
        # The "hardware" of a simulated node is what slurm.conf says of it (or of the first node).
        hw = conf.node(node) or (conf.nodes[0] if conf.nodes else None)
        if hw is not None:
            errors.append(
                f"error: Node configuration differs from hardware: CPUs=0:{hw.cpus}(hw) "
                f"Boards=0:{hw.boards}(hw) SocketsPerBoard=0:{hw.sockets_per_board}(hw) "
                f"CoresPerSocket=0:{hw.cores_per_socket}(hw) ThreadsPerCore=0:{hw.threads_per_core}(hw)"
            )
        errors += [
            f'error: _find_node_record: lookup failure for node "{name}"',
            "error: slurmd initialization failed",
        ]
    return errors


def launch_slurmd(host: DaemonHost, node: str, unit: UnitFile, name: str | None = None) -> Launch:
    """`slurmd -D -s [-N name]`: fails without a readable slurm.conf naming this node; otherwise it runs."""
    name = name or node
    result = Launch(ok=False, comm="slurmd", argv=exec_argv(unit))
    conf = read_conf(host, node)
    if conf is None:
        texts = [f"fatal: Unable to process configuration file {SLURM_CONF}"]
    else:
        texts = slurmd_init_errors(host, node, conf, name)
        result.log_file = slurmd_path(conf, "slurmdlogfile", "", name)
    nc = conf.node(name) if conf is not None else None
    if conf is not None and nc is not None and not texts:
        texts = [
            f"slurmd version {SLURM_VERSION} started",
            f"slurmd started on {_started_on(host.now_s)}",
            f"CPUs={nc.cpus} Boards={nc.boards} Sockets={nc.sockets_per_board} Cores={nc.cores_per_socket} "
            f"Threads={nc.threads_per_core} Memory={nc.real_memory_mb} TmpDisk={nc.tmp_disk_mb} Uptime=0 "
            "CPUSpecList=(null) FeaturesAvail=(null) FeaturesActive=(null)",
        ]
        result.ok = True
        result.pid_file = slurmd_path(conf, "slurmdpidfile", "/run/slurmd.pid", name)
        problem = registration_problem(host, node)
        if problem is not None:
            texts += registration_errors(problem)
            result.memo["registration"] = problem.name
    if not result.ok:
        result.exit_status = 1
    result.stderr = daemon_lines("slurmd", texts)
    now = host.now_s
    result.log_lines = [f"[{iso_time(now)}.000] {text}" for text in texts]
    return result


def launch_slurmctld(host: DaemonHost, node: str, unit: UnitFile) -> Launch:
    """`slurmctld -D -s`: fatal without slurm.conf, on the wrong host, or with an unusable state dir."""
    uid, gid = lookup_ids(host.access, node, unit.user)
    result = Launch(ok=False, comm="slurmctld", argv=exec_argv(unit), uid=uid, gid=gid)
    conf = read_conf(host, node)
    if conf is None:
        texts = [f"fatal: Unable to process configuration file {SLURM_CONF}"]
    elif conf.controller_host.split(".")[0] != node:
        texts = [
            f"fatal: This host ({node}) not a valid controller",
        ]
    else:
        save = conf.options.get("statesavelocation", "/var/spool/slurmctld")
        info = host.access.stat(node, save)
        if info is None or not info.is_dir():
            texts = [f"fatal: mkdir({save}): No such file or directory"]
        elif info.uid != uid and not info.perms & 0o002:
            texts = [f"fatal: Incorrect permissions on state save loc: {save}"]
        else:
            texts = [f"slurmctld version {SLURM_VERSION} started on cluster {conf.cluster_name}"]
            if not host.is_active(node, MUNGE):
                texts += MUNGE_DOWN_ERRORS
            result.ok = True
            result.pid_file = conf.options.get("slurmctldpidfile", "/run/slurmctld.pid")
    if conf is not None:
        result.log_file = conf.options.get("slurmctldlogfile", "")
    if not result.ok:
        result.exit_status = 1
    result.stderr = daemon_lines("slurmctld", texts)
    now = host.now_s
    result.log_lines = [f"[{iso_time(now)}.000] {text}" for text in texts]
    return result
