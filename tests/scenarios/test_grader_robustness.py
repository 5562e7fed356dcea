"""The grader never fails on what the agent made of the files it and the simulated daemons read.

For each such file (or directory), the agent's own shell makes it every hostile thing a node can
hold: a symlink loop, a symlink to /proc/self/mem or to /dev/zero, a FIFO, a directory, a 100 MB
sparse file, random bytes, a file nobody may read, one 3 MB line. Then a command makes the daemons
that read it read it again (a restart, ifup). Each time the step and the grade return (the episode
stays scorable: no exception), `info()` works, the episode is not solved, and the predicate that
reads the file does not hold, unless the real software would still accept what is there (root
reads a mode-000 file; systemd skips a directory under a unit's name and uses the vendor unit).

One incident per file: hpc_drain_forgotten keeps compute-03 drained whatever is done to its files
(it is a fault node, so changing them is no harm), and the login node's files are each the fault
of their own scenario.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hpcgym.scenarios import checks
from hpcgym.scenarios.incident import Incident

NODE = "compute-03"
SCRIPTS = "/etc/sysconfig/network-scripts"
ORIG = "/root/orig"
# What each hostile kind of file is made with ({p} is the path).
KINDS = {
    "loop": "ln -s {p} {p}",
    "proc-self-mem": "ln -s /proc/self/mem {p}",
    "dev-zero": "ln -s /dev/zero {p}",
    "fifo": "mkfifo {p}",
    "directory": "mkdir {p}",
    "sparse-100M": "truncate -s 100M {p}",
    "random-bytes": "head -c 65536 /dev/urandom > {p}",
    "unreadable": f"cp -a {ORIG} {{p}} && chmod 000 {{p}}",
    "huge-line": "head -c 3000000 /dev/zero | tr '\\0' a > {p}",
}
RESTART_SLURMD = "systemctl restart slurmd"
REACH = ("can_reach_controller", {"node": NODE})
MUNGE_HEALTHY = ("is_munge_healthy", {"node": NODE})
SLURMD_ACTIVE = ("is_unit_active", {"node": NODE, "unit": "slurmd.service"})


@dataclass(frozen=True)
class Target:
    """A file the grade or a daemon reads, where, what re-reads it, and the predicate it decides."""

    path: str
    poke: str
    check: tuple[str, dict[str, str]]
    scenario: str = "hpc_drain_forgotten"
    node: str = NODE
    setup: str = ""
    # Kinds the real software accepts (the predicate may hold); a directory target never gets "directory".
    accepted: frozenset[str] = frozenset({"unreadable"})
    # False where the scenario's own fault keeps the predicate from holding before anything is done.
    holds_at_start: bool = True
    is_dir: bool = False


TARGETS = {
    "hosts": Target("/etc/hosts", "true", REACH),
    "slurm.conf": Target("/etc/slurm/slurm.conf", RESTART_SLURMD, ("has_cluster_slurm_conf", {"node": NODE})),
    # munged runs as munge: a mode-000 key is one it cannot open.
    "munge.key": Target(
        "/etc/munge/munge.key", "systemctl restart munge", MUNGE_HEALTHY, accepted=frozenset()
    ),
    "passwd": Target("/etc/passwd", "systemctl restart munge", MUNGE_HEALTHY),
    "group": Target("/etc/group", "systemctl restart munge", MUNGE_HEALTHY),
    "route-eth0": Target(f"{SCRIPTS}/route-eth0", "ifdown eth0; ifup eth0", REACH),
    "ifcfg-eth0": Target(f"{SCRIPTS}/ifcfg-eth0", "ifdown eth0; ifup eth0", REACH),
    "slurmd.service": Target(
        "/etc/systemd/system/slurmd.service",
        f"systemctl daemon-reload; {RESTART_SLURMD}",
        SLURMD_ACTIVE,
        setup="cp /usr/lib/systemd/system/slurmd.service /etc/systemd/system/",
        accepted=frozenset({"unreadable", "fifo", "directory"}),
    ),
    # Debian's slurmd 22.05.8 runs on with a spool path that is no directory ("... is not a
    # directory"); what the grade must not take for a spool dir is the path itself.
    "SlurmdSpoolDir": Target(
        "/var/spool/slurmd",
        RESTART_SLURMD,
        ("has_slurmd_spool", {"node": NODE}),
        is_dir=True,
        # A fresh directory, or a copy of the old one with mode 000: root's slurmd uses either.
        accepted=frozenset({"directory", "unreadable"}),
    ),
    "ood-portal.conf": Target(
        "/etc/httpd/conf.d/ood-portal.conf",
        "systemctl restart httpd",
        ("is_portal_serving", {}),
        scenario="hpc_ood_apache",
        node="login01",
        holds_at_start=False,
    ),
    "StateSaveLocation": Target(
        "/var/spool/slurmctld",
        "systemctl restart slurmctld",
        ("has_statesave_for_slurm", {}),
        scenario="hpc_slurmctld_statesave",
        node="login01",
        holds_at_start=False,
        is_dir=True,
    ),
}


def holds(incident: Incident, check: tuple[str, dict[str, str]]) -> bool:
    name, args = check
    return checks.run_check(incident.episode, name, args)


def open_incident(runtime, target: Target) -> Incident:  # type: ignore[no-untyped-def]
    incident = Incident(runtime, target.scenario, seed=800, max_steps=4 * len(KINDS) + 8)
    if target.node != "login01":
        incident.step(f"ssh {target.node}")
    if target.setup:
        incident.step(target.setup)
    assert incident.step(f"cp -a {target.path} {ORIG}").result.exit_code == 0
    return incident


# TODO: network.py's ifup reads ifcfg-eth0 only to see that it is a file (its DEVICE=, BOOTPROTO=,
# IPADDR= go unread), so random bytes or a 3 MB line there still bring eth0 up. Strict, so the
# fix shows here; network.py belongs to the network model's owner.
IFUP_IGNORES_IFCFG = pytest.mark.xfail(strict=True, reason="ifup accepts any ifcfg-eth0 that is a file")


@pytest.mark.parametrize(
    "target",
    [pytest.param(t, marks=IFUP_IGNORES_IFCFG) if k == "ifcfg-eth0" else t for k, t in TARGETS.items()],
    ids=TARGETS.keys(),
)
def test_hostile_node_files_leave_the_grade_standing(runtime, target: Target) -> None:
    path = target.path
    kinds = [kind for kind in KINDS if not (target.is_dir and kind == "directory")]
    wrong: list[str] = []
    incident = open_incident(runtime, target)
    try:
        assert holds(incident, target.check) is target.holds_at_start
        for kind in kinds:
            if incident.done:
                # Changing a file harm.py guards (slurm.conf, the key, passwd) ends the episode,
                # harmful: scored, and over. The next kind needs a fresh one.
                incident.close()
                incident = open_incident(runtime, target)
            make = KINDS[kind].format(p=path)
            incident.step(f"mv {path} /root/gone.$RANDOM; {make}; {target.poke}")
            if not incident.done:
                incident.step("true")
            info = incident.info()
            assert not info["solved"] and info["outcome"] in ("running", "harmful"), (kind, info)
            if holds(incident, target.check) and kind not in target.accepted:
                wrong.append(f"{kind}: {target.check[0]} holds")
            if incident.done:
                continue
            incident.step(f"mv {path} /root/gone.$RANDOM; cp -a {ORIG} {path}; {target.poke}")
            if target.holds_at_start and not holds(incident, target.check):
                wrong.append(f"{kind}: {target.check[0]} does not hold again once the file is back")
    finally:
        incident.close()
    assert not wrong, wrong


@pytest.mark.parametrize(
    "line", ["SlurmdTimeout=x", "ReturnToService=\u00b2", "NodeName=compute-01 CPUs=\u00b2 RealMemory=x"]
)
def test_a_number_that_is_not_one_in_slurm_conf_is_refused_not_a_crash(runtime, line: str) -> None:  # type: ignore[no-untyped-def]
    """`"²".isdigit()` holds and `int("²")` raises: slurm.conf's numbers come from the agent."""
    with Incident(runtime, "hpc_slurmd_down", 800) as incident:
        step = incident.step(f"echo '{line}' >> /etc/slurm/slurm.conf; scontrol reconfigure; echo rc=$?")
        assert "rc=1" in step.result.output  # slurmctld refuses the file
        info = incident.info()
        # Editing the controller's good slurm.conf is harm: the episode ends scored, not discarded.
        assert not info["solved"] and info["outcome"] == "harmful"
        assert incident.grader.state_score < 1.0
