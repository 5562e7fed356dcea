"""What a fidelity state is made of: commands to compare, waits, and daemons taken away or back.

Both clusters get the same slurm.conf body (`conf_body`); only the lines that say where the private
cluster's files, ports and host are differ (`real.py` and `sim.py` add those).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Cmd:
    """One command line an operator types; its stdout, stderr and exit status are compared."""

    line: str


@dataclass(frozen=True)
class Wait:
    """Let `seconds` of real time pass (the simulator's clock moves by what really elapsed)."""

    seconds: float


class Daemon(enum.Enum):
    MUNGED = "munged"
    SLURMCTLD = "slurmctld"
    SLURMD = "slurmd"


@dataclass(frozen=True)
class Stop:
    """Stop a daemon (SIGTERM on the real cluster, `systemctl stop` in the simulator); not compared."""

    daemon: Daemon
    node: str = ""


@dataclass(frozen=True)
class Start:
    """Start a daemon again; `clean` starts slurmctld with -c (no saved state). Not compared."""

    daemon: Daemon
    node: str = ""
    clean: bool = False


@dataclass(frozen=True)
class Reboot:
    """The node's host reboots on its own; not compared.

    Slurmd stops, `down_s` pass, and it starts again with a boot time `up_s` before its start (the
    real slurmd runs in a time namespace whose uptime says so).
    """

    node: str
    down_s: float = 4
    up_s: int = 2


Step = Cmd | Wait | Stop | Start | Reboot


@dataclass(frozen=True)
class State:
    """One cluster state: how to get there and what to look at there.

    Attributes:
        name: a short id, used in the report.
        about: what the state is, in a line.
        steps: the script, in order.
        ci: part of the CI-sized run (`--ci`), which must finish within a few minutes.
        options: slurm.conf keys this state adds to (or sets in) the shared body on both sides.
    """

    name: str
    about: str
    steps: tuple[Step, ...]
    ci: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)
    options: tuple[tuple[str, str], ...] = ()

    @property
    def commands(self) -> list[str]:
        return [step.line for step in self.steps if isinstance(step, Cmd)]


NODES = ("compute-01", "compute-02", "compute-03", "compute-04")
CLUSTER_NAME = "hpc"
# The timers both clusters share. Short ones, so that a node that stops answering goes DOWN and a
# finished job leaves the queue within seconds of real time; the simulator steps its virtual clock
# by the real elapsed time, so both see the same timers run out.
TIMERS = {
    "SlurmdTimeout": "10",
    "MinJobAge": "10",
    "KillWait": "30",
    "InactiveLimit": "0",
    "Waittime": "0",
    "MessageTimeout": "10",
}
OPTIONS = {
    "ClusterName": CLUSTER_NAME,
    "AuthType": "auth/munge",
    "CredType": "cred/munge",
    "MpiDefault": "none",
    "ProctrackType": "proctrack/linuxproc",
    "TaskPlugin": "task/none",
    "ReturnToService": "1",
    "SlurmUser": "root",
    "SwitchType": "switch/none",
    "SchedulerType": "sched/backfill",
    "SelectType": "select/cons_tres",
    "SelectTypeParameters": "CR_Core",
    "AccountingStorageType": "accounting_storage/none",
    "JobCompType": "jobcomp/none",
    "JobAcctGatherType": "jobacct_gather/none",
    **TIMERS,
}
NODE_HARDWARE = "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=4000"
PARTITION_LINES = (
    "PartitionName=compute Nodes=compute-0[1-4] Default=YES MaxTime=INFINITE State=UP",
    "PartitionName=gpu Nodes=compute-0[3-4] MaxTime=1-00:00:00 State=UP",
)


def conf_body(extra: tuple[tuple[str, str], ...] = ()) -> list[str]:
    """The slurm.conf lines both clusters share (options, then nodes are added by each side)."""
    return [f"{key}={value}" for key, value in {**OPTIONS, **dict(extra)}.items()]
