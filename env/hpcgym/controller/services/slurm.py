"""slurmd and slurmctld: their start-up checks, and whether a node's slurmd can register.

Real slurmd 22.05 starts even when it cannot register (it logs the error and keeps retrying), and
ignores a stale pid file (it overwrites it); so a unit can be `active (running)` while the node is
down in `sinfo`, and the journal says why. Registration needs, on the node: munged up (slurmd signs
its messages through it) and a route to SlurmctldHost; on the controller host: slurmctld up and a
munged holding the same key.

slurmctld keeps its state in StateSaveLocation, one file per kind of record and the previous copy
of each as `NAME.old` (state_save.c: write NAME.new, link NAME to NAME.old, rename NAME.new to NAME).
The controller holds the live records itself, so each file here carries what identifies a save:
its lineage (fixed when slurmctld starts with nothing to recover) and its generation (one more at
every save), in a text format of our own with deterministic bytes. It is saved when slurmctld starts.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime

from hpcgym.controller.hardware import NodeHardware, reported_topology
from hpcgym.controller.hostlist import compress_hostlist
from hpcgym.controller.numbers import to_int
from hpcgym.controller.services import munged
from hpcgym.controller.services.access import NodeFileError
from hpcgym.controller.services.daemon import (
    DaemonHost,
    Launch,
    Line,
    append_log,
    exec_argv,
    iso_time,
    lookup_ids,
)
from hpcgym.controller.services.facts import DaemonFacts
from hpcgym.controller.services.journal import Priority
from hpcgym.controller.services.units import UnitFile
from hpcgym.controller.slurmconf import DUPLICATED_NODE, SlurmConf, parse_slurm_conf
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


@dataclass(frozen=True)
class SlurmdFacts(DaemonFacts):
    """A running slurmd's registration: the problem it last logged, and whether slurmctld had it."""

    # Set by its start and each sync (services/manager.py), which logs a change.
    registration: RegistrationProblem | None = None
    # Set once slurmctld has had its registration (slurmlink.py): a start clears it.
    registered: bool = False


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
    except (ControllerError, ValueError):
        # ValueError: a number or time the agent garbled (SlurmdTimeout=abc), which Slurm rejects too.
        return None


def conf_fatal(host: DaemonHost, node: str) -> str:
    """The fatal line a daemon logs when it cannot use the node's slurm.conf (read_conf gave None)."""
    raw = host.access.read(node, SLURM_CONF)
    try:
        parse_slurm_conf((raw or b"").decode(errors="replace"))
    except ControllerError as error:
        if error.message.startswith(DUPLICATED_NODE):
            return f"fatal: {error.message}"
    except ValueError:
        pass
    return f"fatal: Unable to process configuration file {SLURM_CONF}"


def registration_problem(host: DaemonHost, node: str) -> RegistrationProblem | None:
    """Why `node`'s slurmd cannot reach slurmctld right now, or None if it can."""
    if not host.systemd.is_active(node, MUNGE):
        return RegistrationProblem.MUNGE_DOWN
    ctl = host.controller_host
    addr = host.controller_addr(node)
    if addr is None or not host.network.can_reach(node, addr) or not host.systemd.is_active(ctl, SLURMCTLD):
        return RegistrationProblem.CONTROLLER_UNREACHABLE
    if not host.systemd.is_active(ctl, MUNGE):
        return RegistrationProblem.KEY_MISMATCH
    # The same key on both sides: the facts of the two munged compare equal.
    if host.systemd.facts(node, MUNGE, munged.MungedFacts) != host.systemd.facts(
        ctl, MUNGE, munged.MungedFacts
    ):
        return RegistrationProblem.KEY_MISMATCH
    return clock_problem(host.clocks.offset(node) - host.clocks.offset(ctl))


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
    stamp = iso_time(host.clocks.now_s)
    append_log(host.access, node, log_file, [f"[{stamp}.000] {t}" for t in texts], uid, gid)
    return daemon_lines("slurmd", texts)


def _started_on(time_s: int) -> str:
    return datetime.fromtimestamp(time_s, UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


MKDIR = "/usr/bin/mkdir"


def spool_to_make(host: DaemonHost, node: str, conf: SlurmConf, name: str) -> str | None:
    """The missing SlurmdSpoolDir slurmd's init makes itself (its parent is there), or None."""
    spool = slurmd_path(conf, "slurmdspooldir", "/var/spool/slurmd", name)
    if host.access.stat(node, spool) is not None:
        return None
    parent = host.access.stat(node, posixpath.dirname(spool.rstrip("/")) or "/")
    return spool if parent is not None and parent.is_dir() else None


def slurmd_path(conf: SlurmConf, key: str, default: str, name: str) -> str:
    """A slurmd path option with Slurm's `%n` (node name) and `%h` (host name) expanded."""
    return conf.options.get(key, default).replace("%n", name).replace("%h", name)


def slurmd_init_errors(host: DaemonHost, node: str, conf: SlurmConf, name: str) -> list[str]:
    """What slurmd 22.05 logs before it gives up at init (capture 60-errors, slurmd -N); [] if it starts."""
    errors = []
    spool = slurmd_path(conf, "slurmdspooldir", "/var/spool/slurmd", name)
    info = host.access.stat(node, spool)
    if info is None and spool_to_make(host, node, conf, name) is None:
        # Its parent is gone too (Debian's 22.05.8 with the spool dir's parent removed).
        errors += [
            f"error: Domain socket directory {spool}: No such file or directory",
            "error: xcpuinfo_hwloc_topo_load: failed (load will be required after read failures).",
            f"fatal: mkdir({spool}): No such file or directory",
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


def _hardware_differs(
    hw: NodeHardware | None, cpus: int, boards: int, sockets: int, cores: int, threads: int
) -> list[str]:
    # slurmd.c `_read_config`: what it registers with against what hwloc found, logged as an error
    # (without config_overrides) when they differ; CPUs may equal the cores or sockets instead.
    if hw is None:
        return []
    odd_cpus = cpus not in (hw.cpus, hw.cores_per_socket, hw.sockets)
    if not odd_cpus and (sockets, cores, threads) == (hw.sockets, hw.cores_per_socket, hw.threads_per_core):
        return []
    return [
        f"error: Node configuration differs from hardware: CPUs={cpus}:{hw.cpus}(hw) "
        f"Boards={boards}:{hw.boards}(hw) SocketsPerBoard={sockets}:{hw.sockets}(hw) "
        f"CoresPerSocket={cores}:{hw.cores_per_socket}(hw) ThreadsPerCore={threads}:{hw.threads_per_core}(hw)"
    ]


def launch_slurmd(host: DaemonHost, node: str, unit: UnitFile, name: str | None = None) -> Launch:
    """`slurmd -D -s [-N name]`: fails without a readable slurm.conf naming this node; otherwise it runs."""
    name = name or node
    result = Launch(ok=False, comm="slurmd", argv=exec_argv(unit))
    conf = read_conf(host, node)
    if conf is None:
        texts = [conf_fatal(host, node)]
    else:
        texts = slurmd_init_errors(host, node, conf, name)
        result.log_file = slurmd_path(conf, "slurmdlogfile", "", name)
        if not texts and (spool := spool_to_make(host, node, conf, name)) is not None:
            # _slurmd_init makes it (mode 0755): in the node, by the node's own mkdir, as its root.
            with contextlib.suppress(NodeFileError):
                host.access.start_process(node, "mkdir", ["mkdir", "-m", "0755", spool], program=MKDIR)
    nc = conf.node(name) if conf is not None else None
    if conf is not None and nc is not None and not texts:
        hw = host.hardware.nodes.get(node)
        cpus, sockets, cores, threads = (
            reported_topology(nc, hw)
            if hw is not None
            else (nc.cpus, nc.boards * nc.sockets_per_board, nc.cores_per_socket, nc.threads_per_core)
        )
        boards = hw.boards if hw is not None and hw.cpus < nc.cpus else nc.boards
        memory = hw.real_memory_mb if hw is not None else nc.real_memory_mb
        texts = [
            *_hardware_differs(hw, cpus, boards, sockets, cores, threads),
            f"slurmd version {SLURM_VERSION} started",
            f"slurmd started on {_started_on(host.clocks.now_s)}",
            f"CPUs={cpus} Boards={boards} Sockets={sockets} Cores={cores} "
            f"Threads={threads} Memory={memory} TmpDisk={nc.tmp_disk_mb} Uptime=0 "
            "CPUSpecList=(null) FeaturesAvail=(null) FeaturesActive=(null)",
        ]
        result.ok = True
        result.pid_file = slurmd_path(conf, "slurmdpidfile", "/run/slurmd.pid", name)
        problem = registration_problem(host, node)
        if problem is not None:
            texts += registration_errors(problem)
        result.facts = SlurmdFacts(registration=problem)
    if not result.ok:
        result.exit_status = 1
    result.stderr = daemon_lines("slurmd", texts)
    now = host.clocks.now_s
    result.log_lines = [f"[{iso_time(now)}.000] {text}" for text in texts]
    return result


# ---- slurmctld's saved state ---------------------------------------------------------------------------

DEFAULT_STATE_SAVE = "/var/spool/slurmctld"
# What a 22.05 slurmctld without slurmdbd keeps in StateSaveLocation (each also as NAME.old).
STATE_FILES = (
    "assoc_mgr_state",
    "assoc_usage",
    "fed_mgr_state",
    "job_state",
    "last_config_lite",
    "last_tres",
    "node_state",
    "part_state",
    "qos_usage",
    "resv_state",
    "trigger_state",
)
CLUSTER_NAME_FILE = "clustername"
STATE_MAGIC = "hpcgym-slurmctld-state"
# The files slurmctld recovers at start, in its order, with what 22.05 says (fatal unless started
# with -i, which drops what cannot be read) when one is there but is not a state file it wrote.
_LOSS = " Warning: using -i will lose the data that can't be recovered."
RECOVERED_FILES = (
    ("node_state", "Can not recover node state, data version incompatible, start with '-i' to ignore this."),
    (
        "part_state",
        "Can not recover partition state, data version incompatible, start with '-i' to ignore this.",
    ),
    ("job_state", "Can not recover job state, incompatible version, start with '-i' to ignore this."),
    (
        "resv_state",
        "Can not recover reservation state, data version incompatible, start with '-i' to ignore this.",
    ),
)


@dataclass(frozen=True)
class SavedState:
    """What identifies one saved state file: the history it belongs to and how far along it is."""

    lineage: str
    generation: int


def state_save_location(conf: SlurmConf) -> str:
    return conf.options.get("statesavelocation", DEFAULT_STATE_SAVE)


def parse_state_file(raw: bytes | None) -> SavedState | None:
    """The lineage and generation of a state file slurmctld wrote; None for anything else."""
    if raw is None or not raw.startswith(STATE_MAGIC.encode()):
        return None
    fields = {}
    for line in raw[:4096].decode(errors="replace").splitlines()[1:4]:
        key, _, value = line.partition("=")
        fields[key] = value
    lineage, generation = fields.get("Lineage", ""), to_int(fields.get("Generation", ""))
    if not lineage or generation is None:
        return None
    return SavedState(lineage, generation)


def _state_payload(name: str, conf: SlurmConf) -> list[str]:
    if name == "node_state":
        return [f"NodeName={node.name} State={node.state}" for node in conf.nodes]
    if name == "part_state":
        return [f"PartitionName={p.name} Nodes={compress_hostlist(list(p.nodes))}" for p in conf.partitions]
    return []


def state_file_bytes(name: str, conf: SlurmConf, saved: SavedState, now_s: int) -> bytes:
    lines = [
        f"{STATE_MAGIC} {name}",
        f"Lineage={saved.lineage}",
        f"Generation={saved.generation}",
        f"ClusterName={conf.cluster_name}",
        f"SavedAt={iso_time(now_s)}",
        *_state_payload(name, conf),
    ]
    return "".join(f"{line}\n" for line in lines).encode()


def save_state(host: DaemonHost, node: str, conf: SlurmConf, uid: int, gid: int) -> None:
    """Save every state file in StateSaveLocation, keeping the previous one as NAME.old.

    A file slurmctld cannot recover from (missing, or not its own) starts a new lineage, as real
    slurmctld starts empty ("No job state file ... to recover"). A file it cannot write is skipped,
    as real slurmctld logs "Can't save state" and runs on.
    """
    directory = state_save_location(conf)
    for name in STATE_FILES:
        path = posixpath.join(directory, name)
        current = host.access.read(node, path)
        recovered = parse_state_file(current) or parse_state_file(host.access.read(node, f"{path}.old"))
        if recovered is None:
            seed = f"{conf.cluster_name}:{name}:{host.clocks.now_s}".encode()
            saved = SavedState(hashlib.sha256(seed).hexdigest()[:16], 1)
        else:
            saved = SavedState(recovered.lineage, recovered.generation + 1)
        if current is not None:
            with contextlib.suppress(NodeFileError):
                host.access.write(node, f"{path}.old", current, mode=0o600, uid=uid, gid=gid)
        with contextlib.suppress(NodeFileError):
            data = state_file_bytes(name, conf, saved, host.clocks.now_s)
            host.access.write(node, path, data, mode=0o600, uid=uid, gid=gid)
    cluster_file = posixpath.join(directory, CLUSTER_NAME_FILE)
    if host.access.read(node, cluster_file) is None:
        with contextlib.suppress(NodeFileError):
            host.access.write(
                node, cluster_file, f"{conf.cluster_name}\n".encode(), mode=0o600, uid=uid, gid=gid
            )


def unrecoverable_state(host: DaemonHost, node: str, save: str, argv: list[str]) -> str | None:
    """The fatal slurmctld logs for the first state file there but not its own (None: all recover).

    A missing file is no error (slurmctld falls back to NAME.old, else starts that record empty);
    `-i` makes it skip what it cannot read (save_state then begins those files anew).
    """
    if "-i" in argv[1:]:
        return None
    for name, text in RECOVERED_FILES:
        raw = host.access.read(node, posixpath.join(save, name))
        if raw is not None and parse_state_file(raw) is None:
            return text
    return None


def launch_slurmctld(host: DaemonHost, node: str, unit: UnitFile) -> Launch:
    """`slurmctld -D -s`: fatal without slurm.conf, on the wrong host, or with an unusable state dir."""
    uid, gid = lookup_ids(host.access, node, unit.user)
    result = Launch(ok=False, comm="slurmctld", argv=exec_argv(unit), uid=uid, gid=gid)
    conf = read_conf(host, node)
    if conf is None:
        texts = [conf_fatal(host, node)]
    elif conf.controller_host.split(".")[0] != node:
        texts = [
            f"fatal: This host ({node}) not a valid controller",
        ]
    else:
        save = state_save_location(conf)
        info = host.access.stat(node, save)
        if info is None or not info.is_dir():
            texts = [f"fatal: mkdir({save}): No such file or directory"]
        elif info.uid != uid and not info.perms & 0o002:
            texts = [f"fatal: Incorrect permissions on state save loc: {save}"]
        elif (unreadable := unrecoverable_state(host, node, save, exec_argv(unit))) is not None:
            texts = [f"fatal: {unreadable}{_LOSS}"]
        else:
            texts = [f"slurmctld version {SLURM_VERSION} started on cluster {conf.cluster_name}"]
            if not host.systemd.is_active(node, MUNGE):
                texts += MUNGE_DOWN_ERRORS
            result.ok = True
            result.pid_file = conf.options.get("slurmctldpidfile", "/run/slurmctld.pid")
            save_state(host, node, conf, uid, gid)
    if conf is not None:
        result.log_file = conf.options.get("slurmctldlogfile", "")
    if not result.ok:
        result.exit_status = 1
    result.stderr = daemon_lines("slurmctld", texts)
    now = host.clocks.now_s
    result.log_lines = [f"[{iso_time(now)}.000] {text}" for text in texts]
    return result
