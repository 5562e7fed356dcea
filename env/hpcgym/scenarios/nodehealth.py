"""Success checks for node hardware and node health: configuration that fits the hardware, NHC's view.

Each reads controller state (the node's hardware, slurmctld's configuration, the node's Slurm state)
and the very node files slurmd and NHC act on, never a marker the agent could write. checks.py
merges `CHECKS` into its table; grade.py asks `misfit_nodes` which slurm.conf lines the fault left
wrong, so that correcting them is not judged as changing a line that was right.
"""

from __future__ import annotations

import stat as statmod
from collections.abc import Callable

from hpcgym.controller.hardware import GRES_CONF, check_registration, configured_gpus, gres_conf_gpus
from hpcgym.controller.services import nhc
from hpcgym.controller.slurmconf import SLURM_CONF_PATH, SlurmConf, parse_slurm_conf
from hpcgym.controller.state import NodeFlag
from hpcgym.episode import Episode
from hpcgym.errors import ControllerError

# An admin keeps some headroom under what slurmd -C reports; far below it hides memory from jobs.
MIN_MEMORY_SHARE = 0.9
# More /dev/nvidiaN than any node could hold: counts what gres.conf lists, present or not.
MAX_GPUS = 64


def misfit_nodes(episode: Episode) -> list[str]:
    """Nodes whose hardware does not fit slurmctld's line for them now (their registration fails)."""
    services = episode.services
    return [
        name
        for name, node in episode.controller.slurm.nodes.items()
        if check_registration(services, node) is not None
    ]


def hidden_hardware(episode: Episode) -> list[str]:
    """Nodes configured with fewer GPUs or CPUs, or far less memory, than they have (anywhere).

    Anywhere: slurmctld's configuration or any node's slurm.conf.

    Jobs can never use what the configuration hides, and a hardware fault is no longer told apart
    from a configuration that matches it: lowering the configuration to what a fault left is harm.
    """
    confs: list[tuple[str, SlurmConf]] = [("slurmctld", episode.controller.slurm.conf)]
    for name in sorted(episode.cluster.nodes):
        raw = episode.nodes.read(name, SLURM_CONF_PATH)
        try:
            confs.append((f"slurm.conf on {name}", parse_slurm_conf((raw or b"").decode(errors="replace"))))
        except (ControllerError, ValueError):
            continue
    found: dict[tuple[str, str], str] = {}
    for node, hw in sorted(episode.services.hardware.nodes.items()):
        for where, conf in confs:
            line = conf.node(node)
            if line is None:
                continue
            if configured_gpus(line) < hw.gpus:
                found.setdefault((node, "gpus"), f"configured {node} with fewer GPUs than it has ({where})")
            if line.cpus < hw.cpus:
                found.setdefault((node, "cpus"), f"configured {node} with fewer CPUs than it has ({where})")
            if line.real_memory_mb < hw.real_memory_mb * MIN_MEMORY_SHARE:
                found.setdefault(
                    (node, "memory"), f"configured {node} with less memory than it has ({where})"
                )
    return list(found.values())


def has_node_specs(episode: Episode, node: str) -> bool:
    """`node`'s configured line fits its hardware, with little headroom, everywhere alike.

    Its CPUs and layout (boards, sockets, cores, threads) are the hardware's, as `slurmd -C` says
    them; slurmctld's line and every node's slurm.conf agree; slurmctld's record of the node has
    those CPUs (a changed count takes a restart: a reconfigure keeps the old record); and its
    slurmd registered with it (no INVALID_REG).
    """
    cluster = episode.controller.slurm
    live = cluster.nodes.get(node)
    hw = episode.services.hardware.nodes.get(node)
    if live is None or hw is None or live.has(NodeFlag.INVALID_REG):
        return False
    if check_registration(episode.services, live) is not None:
        return False
    if live.conf.real_memory_mb < hw.real_memory_mb * MIN_MEMORY_SHARE:
        return False
    c = live.conf
    if (c.cpus, c.boards * c.sockets_per_board, c.cores_per_socket, c.threads_per_core) != (
        hw.cpus,
        hw.sockets,
        hw.cores_per_socket,
        hw.threads_per_core,
    ) or live.record_cpus != c.cpus:
        return False
    for name in sorted(episode.cluster.nodes):
        raw = episode.nodes.read(name, SLURM_CONF_PATH)
        try:
            conf = parse_slurm_conf((raw or b"").decode(errors="replace"))
        except (ControllerError, ValueError):
            return False
        if conf.node(node) != live.conf:
            return False
    return True


def has_gres_conf(episode: Episode, node: str) -> bool:
    """slurm.conf's Gres= for `node` and its gres.conf both count every GPU it has, each by its device."""
    live = episode.controller.slurm.nodes.get(node)
    hw = episode.services.hardware.nodes.get(node)
    if live is None or hw is None or configured_gpus(live.conf) != hw.gpus:
        return False
    raw = episode.nodes.read(node, GRES_CONF)
    text = raw.decode(errors="replace") if raw is not None else None
    # Every device it has, and none it lacks (a file-less or phantom entry is slurmd's error too).
    return gres_conf_gpus(text, node, hw.gpus) == hw.gpus == gres_conf_gpus(text, node, MAX_GPUS)


def has_dir_mode(episode: Episode, node: str, path: str, mode: int) -> bool:
    """`path` on `node` is a real directory (not a symlink) with exactly these permission bits."""
    st = episode.nodes.stat(node, path)
    if st is None or not statmod.S_ISDIR(st.mode) or statmod.S_IMODE(st.mode) != mode:
        return False
    try:
        return episode.nodes.resolve(node, path) == path
    except OSError:
        return False


def has_health_check(episode: Episode, program: str) -> bool:
    """Slurmctld runs `program` as HealthCheckProgram on an interval (nobody switched NHC off)."""
    configured = nhc.health_check(episode.controller.slurm)
    return configured is not None and configured[0] == program


def is_node_health_passing(episode: Episode, node: str) -> bool:
    """Every NHC check on `node` passes now, with the checks the image's nhc.conf asks for.

    A check deleted or commented out passes nothing.
    """
    from hpcgym.scenarios.checks import ImageFiles

    image = ImageFiles(episode).read(node, nhc.NHC_CONF)
    have = episode.nodes.read(node, nhc.NHC_CONF)
    if image is None or have is None:
        return False
    wanted = nhc.parse_nhc_conf(image.decode(errors="replace"), node)
    if wanted is None or nhc.parse_nhc_conf(have.decode(errors="replace"), node) != wanted:
        return False
    return nhc.first_failure(episode.services, node) is None


CHECKS: dict[str, Callable[..., bool]] = {
    "has_node_specs": has_node_specs,
    "has_gres_conf": has_gres_conf,
    "has_dir_mode": has_dir_mode,
    "has_health_check": has_health_check,
    "is_node_health_passing": is_node_health_passing,
}
