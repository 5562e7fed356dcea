"""Play a state on the simulator: a fresh episode, typed into through its real bash.

The episode's clock does not move by itself (`step_seconds=0`); before each command it is moved to
the instant at which the real run typed that command, so every timer (SlurmdTimeout, MinJobAge, job
run times) has seen the same elapsed time on both sides. Daemons are stopped and started the way an
operator would on the simulated cluster (`systemctl`, or `slurmctld -c` for a clean start).
"""

from __future__ import annotations

import time

from hpcgym.fidelity.mask import Facts
from hpcgym.fidelity.real import Run
from hpcgym.fidelity.script import (
    NODE_HARDWARE,
    NODES,
    PARTITION_LINES,
    Cmd,
    Daemon,
    Reboot,
    Start,
    State,
    Stop,
    conf_body,
)
from hpcgym.fidelity.shell import OUT_DIR, decode, wrap
from hpcgym.runtime import Runtime

CONTROLLER_HOST = "login01"
BACKGROUND_SETTLE_S = 1.0


def sim_conf(extra: tuple[tuple[str, str], ...] = ()) -> str:
    """The simulated cluster's slurm.conf: the shared body with the image's paths and ports."""
    lines = [
        *conf_body(extra),
        f"SlurmctldHost={CONTROLLER_HOST}",
        "SlurmctldPort=6817",
        "SlurmdPort=6818",
        "SlurmctldPidFile=/run/slurmctld.pid",
        "SlurmdPidFile=/run/slurmd.pid",
        "SlurmdSpoolDir=/var/spool/slurmd",
        "StateSaveLocation=/var/spool/slurmctld",
        "SlurmctldLogFile=/var/log/slurm/slurmctld.log",
        "SlurmdLogFile=/var/log/slurm/slurmd.log",
        f"NodeName=compute-0[1-4] {NODE_HARDWARE} State=UNKNOWN",
        *PARTITION_LINES,
    ]
    return "\n".join(lines) + "\n"


def _action(step: Stop | Start) -> str:
    verb = "stop" if isinstance(step, Stop) else "start"
    if step.daemon is Daemon.MUNGED:
        # The real cluster has one munged for every daemon and client: take them all away.
        remote = "; ".join(f"ssh {node} systemctl {verb} munge" for node in NODES)
        return f"systemctl {verb} munge; {remote}"
    if step.daemon is Daemon.SLURMCTLD:
        if isinstance(step, Start) and step.clean:
            return "slurmctld -c"
        return f"systemctl {verb} slurmctld"
    return f"ssh {step.node} systemctl {verb} slurmd"


def play(state: State, runtime: Runtime, real: Run) -> Run:
    """Play the state on a fresh episode along the real run's timeline."""
    from hpcgym.episode import Episode

    run = Run([], list(real.offsets_s))
    with Episode(runtime, step_seconds=0, slurm_conf_text=sim_conf(state.options), timeout_s=60) as episode:
        start_s = episode.controller.clock.now_s
        run.facts = Facts(float(start_s))
        episode.step(f"mkdir -p {OUT_DIR}")
        number = 0
        for index, step in enumerate(state.steps):
            at_s = start_s + round(real.offsets_s[index])
            now_s = episode.controller.clock.now_s
            if at_s > now_s:
                episode.controller.advance(at_s - now_s)
            if isinstance(step, Cmd):
                number += 1
                episode.step(wrap(step.line, number))
                if step.line.rstrip().endswith("&"):
                    # A background client reaches the controller a moment after the prompt returns;
                    # let it arrive before the clock moves on, as it did on the real cluster.
                    time.sleep(BACKGROUND_SETTLE_S)
                node = episode.current_node
                base = f"{OUT_DIR}/{number}"
                read = episode.nodes.read
                run.outputs.append(
                    decode(read(node, base + ".o"), read(node, base + ".e"), read(node, base + ".rc"))
                )
            elif isinstance(step, Stop | Start):
                episode.step(_action(step))
            elif isinstance(step, Reboot):
                episode.step(f"ssh {step.node} systemctl stop slurmd")
                episode.controller.advance(round(step.down_s))
                now_s = episode.controller.clock.now_s
                episode.controller.slurm.reboot_host(step.node, now_s - step.up_s)
                episode.step(f"ssh {step.node} systemctl start slurmd")
    return run
