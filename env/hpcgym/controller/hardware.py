"""What each compute node physically has, as the kernel and slurmd see it, and how slurmctld judges it.

A node's hardware starts as its slurm.conf line says (a site provisions nodes that agree with their
configuration); a fault changes it afterwards (a DIMM pulled, a kdump reservation, a GPU gone). What
the hardware is decides what `slurmd -C`, `nproc`, `lscpu`, `free` and the registration slurmd sends
report; slurmctld compares that registration with the node's configured line (node_mgr.c,
`_validate_node_specs`) and drains a node that reports less, with the real reason texts.

This module holds no episode state: the service manager keeps one `NodeHardware` per node.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hpcgym.controller.slurmconf import NodeConf

if TYPE_CHECKING:
    from hpcgym.controller.services.manager import ServiceManager
    from hpcgym.controller.state import Node

# slurmctld's default registration tolerance for memory (NodeRegMemPercent is not set: 100 %).
NODE_REG_MEM_PERCENT = 100.0


@dataclass
class NodeHardware:
    """One node's CPUs, memory and GPUs.

    Attributes:
        cpus: logical processors (sockets x cores x threads).
        boards, sockets_per_board, cores_per_socket, threads_per_core: the topology slurmd reports.
        real_memory_mb: what slurmd -C reports as RealMemory (MemTotal in MiB, rounded down).
        gpus: GPU devices present (/dev/nvidia0 ...), whatever gres.conf says.
        failed_checks: health-check messages (without "NHC: ") that broken parts of this node keep
            failing with: a node whose hardware failed stays drained by its health check.
    """

    cpus: int
    boards: int = 1
    sockets_per_board: int = 1
    cores_per_socket: int = 1
    threads_per_core: int = 1
    real_memory_mb: int = 1
    gpus: int = 0
    failed_checks: list[str] = field(default_factory=list)

    @classmethod
    def from_node_conf(cls, conf: NodeConf, gpus: int = 0) -> NodeHardware:
        """Hardware exactly as its slurm.conf line describes it."""
        return cls(
            cpus=conf.cpus,
            boards=conf.boards,
            sockets_per_board=conf.sockets_per_board,
            cores_per_socket=conf.cores_per_socket,
            threads_per_core=conf.threads_per_core,
            real_memory_mb=conf.real_memory_mb,
            gpus=gpus,
        )

    @property
    def sockets(self) -> int:
        return self.boards * self.sockets_per_board

    def mem_total_kb(self, node: str) -> int:
        """/proc/meminfo's MemTotal: the kernel keeps a part of a MiB that RealMemory drops."""
        return self.real_memory_mb * 1024 + zlib.crc32(f"memtotal:{node}".encode()) % 1024


def slurmd_config_line(name: str, hw: NodeHardware) -> str:
    """The first line `slurmd -C` prints (slurmd.c, `_print_config`)."""
    return (
        f"NodeName={name} CPUs={hw.cpus} Boards={hw.boards} SocketsPerBoard={hw.sockets_per_board} "
        f"CoresPerSocket={hw.cores_per_socket} ThreadsPerCore={hw.threads_per_core} "
        f"RealMemory={hw.real_memory_mb}"
    )


def configured_gpus(conf: NodeConf) -> int:
    """How many gpus the node's Gres= says (`gpu:2`, `gpu:a100:2`; several entries add up)."""
    total = 0
    for entry in filter(None, conf.gres.split(",")):
        parts = entry.split(":")
        if parts[0] != "gpu":
            continue
        count = parts[-1] if len(parts) > 1 else "1"
        total += int(count) if count.isdigit() else 1
    return total


def registration_reason(conf: NodeConf, hw: NodeHardware, gres_gpus: int | None = None) -> str | None:
    """Why slurmctld rejects the node's registration (its drain reason), or None when it fits.

    The checks and their texts follow `_validate_node_specs` (node_mgr.c, Slurm 23.x): gres first,
    then socket*core*thread, CPUs and memory, joined with ", ". `gres_gpus` is how many GPUs slurmd
    found through gres.conf (None: it found what is configured).
    """
    reasons: list[str] = []
    want_gpus = configured_gpus(conf)
    if gres_gpus is not None and gres_gpus < want_gpus:
        reasons.append(f"gres/gpu count reported lower than configured ({gres_gpus} < {want_gpus})")
    threads_have = hw.sockets * hw.cores_per_socket * hw.threads_per_core
    threads_want = conf.boards * conf.sockets_per_board * conf.cores_per_socket * conf.threads_per_core
    if threads_have < threads_want:
        reasons.append("Low socket*core*thread count")
    if hw.cpus < conf.cpus:
        reasons.append("Low CPUs")
    if conf.real_memory_mb and hw.real_memory_mb / conf.real_memory_mb * 100 < NODE_REG_MEM_PERCENT:
        reasons.append(
            f"Low RealMemory (reported:{hw.real_memory_mb} < {NODE_REG_MEM_PERCENT:.2f}% "
            f"of configured:{conf.real_memory_mb})"
        )
    return ", ".join(reasons) or None


GRES_CONF = "/etc/slurm/gres.conf"


def gres_conf_gpus(text: str | None, node: str, present: int) -> int:
    """How many GPUs slurmd registers from gres.conf: the `File=` devices named for `node` that exist.

    Lines may start with `NodeName=` (a hostlist); lines without one apply to every node. A GPU needs
    its device file: a count-only line registers none (slurmd logs "Ignoring file-less GPU"). Devices
    /dev/nvidia0 .. /dev/nvidia{present-1} exist.
    """
    from hpcgym.controller.hostlist import expand_names

    found: set[int] = set()
    for raw in (text or "").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        fields = {key.lower(): value for key, value in fields.items()}
        if fields.get("name") != "gpu":
            continue
        if "nodename" in fields:
            try:
                if node not in expand_names(fields["nodename"]):
                    continue
            except ValueError:
                continue
        try:
            files = expand_names(fields.get("file", ""))
        except ValueError:
            continue
        for path in files:
            if path.startswith("/dev/nvidia") and path[len("/dev/nvidia") :].isdigit():
                index = int(path[len("/dev/nvidia") :])
                if index < present:
                    found.add(index)
    return len(found)


def check_registration(services: ServiceManager, node: Node) -> str | None:
    """The drain reason for `node`'s registration from its hardware and gres.conf (None: it fits)."""
    hw = services.hardware.get(node.name)
    if hw is None:
        return None
    gres = None
    if configured_gpus(node.conf):
        gres = gres_conf_gpus(_text(services.access.read(node.name, GRES_CONF)), node.name, hw.gpus)
    return registration_reason(node.conf, hw, gres)


def _text(raw: bytes | None) -> str | None:
    return raw.decode(errors="replace") if raw is not None else None
