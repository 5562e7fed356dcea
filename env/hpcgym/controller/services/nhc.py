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
import string

from hpcgym.controller.numbers import to_int
from hpcgym.controller.services.access import NodeFileError, is_symlink
from hpcgym.controller.services.manager import ServiceManager
from hpcgym.controller.slurmctld import SlurmState
from hpcgym.controller.state import NodeBase, NodeFlag

NHC_CONF = "/etc/nhc/nhc.conf"
LEADER = "NHC:"
# The tests check_file_test accepts (its getopts string) and what each needs of stat().
FILE_TESTS = "GLNOSbcdefghkprstuwx"


# nhc.conf is node-written and runs on the host, under the controller's lock: one run reads at most
# MAX_CONF_CHARS of it, MAX_CONF_LINES lines and MAX_CHECKS checks for the node, and performs at
# most MAX_FILE_TESTS file tests. Past a bound the run is what NHC's watchdog makes of a hung run
# (nhc's SIGALRM trap: "Script timed out"), a failure.
MAX_CONF_CHARS = 64 * 1024
MAX_CONF_LINES = 4096
MAX_CHECKS = 256
MAX_FILE_TESTS = 4096
TIMED_OUT = "Script timed out."
# A /regex/ host pattern runs on the host only in a form that cannot backtrack far: at most this
# long, no groups, backslashes or braces, and at most MAX_REGEX_REPEATS repeat operators, against
# a host name of at most MAX_REGEX_CHARS (HOST_NAME_MAX).
MAX_REGEX_CHARS = 64
MAX_REGEX_REPEATS = 4
REGEX_CHARS = frozenset(string.ascii_letters + string.digits + "-_.^$|[]*+?")
# A glob or name longer than any host name matches none.
MAX_GLOB_CHARS = 256


def _hosts_match(target: str, node: str) -> bool:
    # NHC's mcheck: /regex/, a glob, or an exact name ('*' matches every host). A regex of another
    # form than REGEX_CHARS allows matches no host.
    if len(target) > 1 and target.startswith("/") and target.endswith("/"):
        pattern = target[1:-1]
        if (
            len(pattern) > MAX_REGEX_CHARS
            or len(node) > MAX_REGEX_CHARS
            or not REGEX_CHARS.issuperset(pattern)
            or sum(pattern.count(op) for op in "*+?") > MAX_REGEX_REPEATS
        ):
            return False
        try:
            return re.search(pattern, node) is not None
        except re.error:
            return False
    if len(target) > MAX_GLOB_CHARS:
        return False
    return fnmatch.fnmatchcase(node, target)


def parse_nhc_conf(text: str, node: str) -> list[list[str]] | None:
    """The checks of nhc.conf that apply to `node`, each as its words (`check_file_test`, `-k`, `/tmp`).

    None: the file is past one of the bounds (MAX_CONF_CHARS, MAX_CONF_LINES, MAX_CHECKS), a run
    on it times out.
    """
    if len(text) > MAX_CONF_CHARS:
        return None
    checks = []
    for count, raw in enumerate(text.splitlines(), 1):
        if count > MAX_CONF_LINES:
            return None
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
            if len(checks) > MAX_CHECKS:
                return None
    return checks


class NhcTimeout(Exception):
    """A run went past MAX_FILE_TESTS."""


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


def check_file_test(
    services: ServiceManager, node: str, args: list[str], budget: list[int] | None = None
) -> str | None:
    """NHC's check_file_test: every test on every file must hold (with -!, none may).

    `budget` holds the file tests the run may still perform; past it raises NhcTimeout.
    """
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
            if budget is not None:
                budget[0] -= 1
                if budget[0] < 0:
                    raise NhcTimeout
            result = 0 if _file_test(services, node, op, path) else 1
            if (negate and result == 0) or (not negate and result != 0):
                return f"check_file_test:  {op} {path} returned {result}."
    return None


CHECKS = {"check_file_test": check_file_test}


def first_failure(services: ServiceManager, node: str) -> str | None:
    """The message of the first check that fails on `node` (without the "NHC: " leader), or None."""
    hw = services.hardware.nodes.get(node)
    if hw is not None and hw.failed_checks:
        return hw.failed_checks[0]
    raw = services.access.read(node, NHC_CONF)
    if raw is None:
        return None
    checks = parse_nhc_conf(raw.decode(errors="replace"), node)
    if checks is None:
        return TIMED_OUT
    budget = [MAX_FILE_TESTS]
    for words in checks:
        check = CHECKS.get(words[0])
        try:
            message = check(services, node, words[1:], budget) if check is not None else None
        except NhcTimeout:
            return TIMED_OUT
        if message is not None:
            return message
    return None


def run_on_node(cluster: SlurmState, services: ServiceManager, name: str) -> str | None:
    """One NHC run on `name`: drain it on a failure, resume it when it passes; returns the failure."""
    services.health_runs[name] = services.clocks.now_s
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


def health_check(cluster: SlurmState) -> tuple[str, int] | None:
    """slurm.conf's HealthCheckProgram and HealthCheckInterval, or None when no check runs."""
    program = cluster.conf.options.get("healthcheckprogram", "")
    interval = to_int(cluster.conf.options.get("healthcheckinterval", "0"))
    return (program, interval) if program and interval is not None and interval > 0 else None


def run_due(cluster: SlurmState, services: ServiceManager) -> None:
    """Run NHC on every node whose slurmd is up and whose interval has passed since its last run."""
    configured = health_check(cluster)
    if configured is None:
        return
    _, interval = configured
    for name, node in cluster.nodes.items():
        if name not in services.systemd.nodes or not node.slurmd_up:
            continue
        last = services.health_runs.get(name)
        if last is None or services.clocks.now_s - last >= interval:
            run_on_node(cluster, services, name)
