"""Play a state on a real Slurm 22.05 cluster on this machine (Debian's slurm-wlm and munge).

Each state gets a fresh private cluster (`hpcgym.fleet.localslurm`) with the shared slurm.conf body,
so job ids, priorities and node states start where a fresh episode starts. The time of every
command, measured from the moment the cluster is ready, goes into the run: the simulator replays the
same timeline on its virtual clock.
"""

from __future__ import annotations

import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hpcgym.fidelity.mask import Facts
from hpcgym.fidelity.script import (
    NODE_HARDWARE,
    NODES,
    OPTIONS,
    PARTITION_LINES,
    Cmd,
    Daemon,
    Reboot,
    Start,
    State,
    Stop,
    Wait,
)
from hpcgym.fidelity.shell import Output, RealShell
from hpcgym.fleet.localslurm import LocalSlurm, local_slurm

# localslurm's own defaults that the shared body does not name, set back to Slurm's defaults.
DEFAULTS_BACK = {"SchedulerParameters": "sched_interval=60", "SlurmdParameters": "config_overrides"}


@dataclass
class Run:
    """One side's outputs, one per `Cmd` of the state, and when (seconds after the start) each step began."""

    outputs: list[Output]
    offsets_s: list[float]
    facts: Facts = field(default_factory=lambda: Facts(0.0))


def play(state: State, scratch: Path | None = None) -> Run:
    """Start a private cluster, play the state's steps on it, stop the cluster."""
    with tempfile.TemporaryDirectory(prefix="fidelity-", dir=scratch) as tmp:
        root = Path(tmp)
        with local_slurm(
            root / "slurm",
            names=NODES,
            options={**OPTIONS, **DEFAULTS_BACK, **dict(state.options)},
            partition_lines=PARTITION_LINES,
            node_extra=NODE_HARDWARE,
            graceful=False,
        ) as cluster:
            _open_to_users(root)
            work = root / "work"
            work.mkdir()
            shell = RealShell({**cluster.env, "TZ": "UTC"}, work, root / "out")
            try:
                run = _play_steps(state, cluster, shell)
            finally:
                shell.close()
            run.facts = Facts(run.facts.start_s, str(root / "slurm"), str(work), socket.gethostname())
            return run


def _open_to_users(root: Path) -> None:
    # A state may play a command as a user who is not root (`runuser -u nobody -- scancel 1`): the
    # client must reach the private cluster's config and munge socket, as on a real node, where
    # /etc/slurm and /run/munge are open to every user. The munge key stays root's.
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(path.stat().st_mode | 0o055)
        elif path.suffix == ".conf":
            path.chmod(0o644)


def _play_steps(state: State, cluster: LocalSlurm, shell: RealShell) -> Run:
    run = Run([], [], Facts(time.time()))
    start = time.monotonic()
    for step in state.steps:
        run.offsets_s.append(time.monotonic() - start)
        if isinstance(step, Cmd):
            run.outputs.append(shell.run(step.line))
        elif isinstance(step, Wait):
            time.sleep(step.seconds)
        elif isinstance(step, Stop):
            cluster.stop_daemon(_daemon_name(step.daemon, step.node))
        elif isinstance(step, Reboot):
            _reboot(cluster, step)
        elif isinstance(step, Start):
            extra = ("-c",) if step.clean else ()
            cluster.start_daemon(_daemon_name(step.daemon, step.node), *extra)
            if step.daemon is Daemon.MUNGED:
                _wait_for(lambda: (Path(cluster.root) / "munge" / "munge.socket").exists())
            elif step.daemon is Daemon.SLURMCTLD:
                _wait_for(lambda: "UP" in cluster.run("scontrol", "ping", check=False))
    return run


def _reboot(cluster: LocalSlurm, step: Reboot) -> None:
    # A slurmd in a new time namespace whose CLOCK_BOOTTIME (and so /proc/uptime) reads `up_s`:
    # slurmctld computes the node's boot time from it, as from a host that has just come up.
    name = _daemon_name(Daemon.SLURMD, step.node)
    cluster.stop_daemon(name)
    time.sleep(step.down_s)
    uptime_s = int(float(Path("/proc/uptime").read_text().split()[0]))
    argv = [arg for arg in cluster.argvs[name] if not arg.startswith(("unshare", "--time", "--boottime"))]
    cluster.argvs[name] = ["unshare", "--time", f"--boottime=-{uptime_s - step.up_s}", *argv]
    cluster.start_daemon(name)


def _daemon_name(daemon: Daemon, node: str) -> str:
    return f"slurmd-{node}" if daemon is Daemon.SLURMD else daemon.value


def _wait_for(predicate, timeout_s: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)
