"""The node health check (LBNL NHC) that slurmd runs as HealthCheckProgram, and `nhc` by hand.

Real slurmd runs HealthCheckProgram (here /usr/sbin/nhc) every HealthCheckInterval seconds. NHC reads
/etc/nhc/nhc.conf (`TARGET || check_name args`, one check per line), runs the checks that match the
host, and on the first failure drains the node with `scontrol update State=DRAIN Reason="NHC: <msg>"`
(node-mark-offline); when every check passes it resumes a node whose reason starts with "NHC:"
(node-mark-online) and leaves any other drain alone. The checks here read the node's files from
outside (`NodeAccess.stat`), on the episode's clock; the messages are NHC's own (scripts/lbnl_file.nhc):
`check_file_test:  -k /tmp returned 1.`. Checks this simulation does not know pass. A node whose
hardware failed (`NodeHardware.failed_checks`) keeps failing with its own message.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import stat as statmod

from hpcgym.controller.cluster import Cluster
from hpcgym.controller.numbers import to_int
from hpcgym.controller.services.access import NodeFileError, is_symlink
from hpcgym.controller.services.manager import ServiceManager
from hpcgym.controller.state import NodeBase, NodeFlag

NHC_CONF = "/etc/nhc/nhc.conf"
LEADER = "NHC:"
# The tests check_file_test accepts (its getopts string) and what each needs of stat().
FILE_TESTS = "GLNOSbcdefghkprstuwx"


def _hosts_match(target: str, node: str) -> bool:
    # NHC's mcheck: /regex/, a glob, or an exact name ('*' matches every host).
    if len(target) > 1 and target.startswith("/") and target.endswith("/"):
        try:
            return re.search(target[1:-1], node) is not None
        except re.error:
            return False
    return fnmatch.fnmatchcase(node, target)


def parse_nhc_conf(text: str, node: str) -> list[list[str]]:
    """The checks of nhc.conf that apply to `node`, each as its words (`check_file_test`, `-k`, `/tmp`)."""
    checks = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "||" not in line:
            continue
        target, _, command = line.partition("||")
        if not _hosts_match(target.strip(), node):
            continue
        try:
            words = shlex.split(command, comments=True)
        except ValueError:
            continue
        if words:
            checks.append(words)
    return checks


def _file_test(services: ServiceManager, node: str, op: str, path: str) -> bool:
    # bash's `test OP FILE`, as root (NHC runs as root): read and write pass on anything that exists.
    if op == "-L" or op == "-h":
        return is_symlink(services.access, node, path)
    if _is_stale_share(services, node, path):
        return False  # every lookup there fails with ESTALE, `test` included
    try:
        st = services.access.stat(node, path)
    except NodeFileError:
        return False
    if st is None:
        return False
    mode = st.mode
    tests = {
        "-e": True,
        "-r": True,
        "-w": True,
        "-x": bool(mode & 0o111) or statmod.S_ISDIR(mode),
        "-d": statmod.S_ISDIR(mode),
        "-f": statmod.S_ISREG(mode),
        "-c": statmod.S_ISCHR(mode),
        "-b": statmod.S_ISBLK(mode),
        "-p": statmod.S_ISFIFO(mode),
        "-S": statmod.S_ISSOCK(mode),
        "-k": bool(mode & statmod.S_ISVTX),
        "-u": bool(mode & statmod.S_ISUID),
        "-g": bool(mode & statmod.S_ISGID),
        "-O": st.uid == 0,
        "-G": st.gid == 0,
    }
    return tests.get(op, True)


def _is_stale_share(services: ServiceManager, node: str, path: str) -> bool:
    # The shared NFS mounts live in the node's kernel, not in its files: the episode's node access
    # (ClusterNodes) says whether the handle there went stale; other accesses have no shares.
    shares = getattr(services.access, "share_points", None)
    if shares is None or path not in shares(node):
        return False
    access = services.access
    return bool(access.is_share_mounted(node, path) and not access.sees_share(node, path))  # type: ignore[attr-defined]


def check_file_test(services: ServiceManager, node: str, args: list[str]) -> str | None:
    """NHC's check_file_test: every test on every file must hold (with -!, none may)."""
    flags, files, negate = [], [], False
    words = list(args)
    while words and words[0].startswith("-") and len(words[0]) > 1:
        for letter in words.pop(0)[1:]:
            if letter == "!":
                negate = True
            elif letter in FILE_TESTS:
                flags.append(f"-{letter}")
            else:
                return f"check_file_test:  Invalid/unsupported option:  -{letter}"
    files = words
    if not flags:
        return "check_file_test:  Syntax error:  At least 1 valid 'test' operator is required."
    if not files:
        return (
            "check_file_test:  Syntax error:  At least 1 valid 'test' argument "
            "(usually file(s)/dir(s)) is required."
        )
    for op in flags:
        for path in files:
            result = 0 if _file_test(services, node, op, path) else 1
            if (negate and result == 0) or (not negate and result != 0):
                return f"check_file_test:  {op} {path} returned {result}."
    return None


CHECKS = {"check_file_test": check_file_test}


def first_failure(services: ServiceManager, node: str) -> str | None:
    """The message of the first check that fails on `node` (without the "NHC: " leader), or None."""
    hw = services.hardware.get(node)
    if hw is not None and hw.failed_checks:
        return hw.failed_checks[0]
    raw = services.access.read(node, NHC_CONF)
    if raw is None:
        return None
    for words in parse_nhc_conf(raw.decode(errors="replace"), node):
        check = CHECKS.get(words[0])
        message = check(services, node, words[1:]) if check is not None else None
        if message is not None:
            return message
    return None


def run_on_node(cluster: Cluster, services: ServiceManager, name: str) -> str | None:
    """One NHC run on `name`: drain it on a failure, resume it when it passes; returns the failure."""
    services.health_runs[name] = services.now_s
    message = first_failure(services, name)
    node = cluster.nodes.get(name)
    if node is None or not cluster.slurmctld_up:
        return message
    if message is not None:
        # node-mark-offline: an offline node keeps its reason (NHC's or an admin's).
        if node.base is not NodeBase.DOWN and not node.has(NodeFlag.DRAIN):
            cluster.drain(node, f"{LEADER} {message}", "root")
    elif node.has(NodeFlag.DRAIN) and (node.reason or "").startswith(LEADER):
        # node-mark-online: only a node NHC itself took offline.
        cluster.undrain(node)
        cluster.schedule()
    return message


def health_check(cluster: Cluster) -> tuple[str, int] | None:
    """slurm.conf's HealthCheckProgram and HealthCheckInterval, or None when no check runs."""
    program = cluster.conf.options.get("healthcheckprogram", "")
    interval = to_int(cluster.conf.options.get("healthcheckinterval", "0"))
    return (program, interval) if program and interval is not None and interval > 0 else None


def run_due(cluster: Cluster, services: ServiceManager) -> None:
    """Run NHC on every node whose slurmd is up and whose interval has passed since its last run."""
    configured = health_check(cluster)
    if configured is None:
        return
    _, interval = configured
    for name, node in cluster.nodes.items():
        if name not in services.nodes or not node.slurmd_up:
            continue
        last = services.health_runs.get(name)
        if last is None or services.now_s - last >= interval:
            run_on_node(cluster, services, name)
