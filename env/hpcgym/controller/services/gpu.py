"""The GPUs of the gpu partition's nodes: what nvidia-smi reports, and what a reset clears.

A node has GPUs when slurm.conf gives it `Gres=gpu:...`, or failing that when it belongs to a
partition named `gpu` (the reference cluster's compute-0[3-4]). Scenarios inject ECC errors by
setting the counters; `nvidia-smi -r` clears the volatile ones, as a real reset does.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from hpcgym.controller.slurmconf import SlurmConf

DRIVER_VERSION = "535.154.05"
CUDA_VERSION = "12.2"
MODEL = "NVIDIA A100-PCIE-40GB"
MEMORY_MIB = 40960
POWER_CAP_W = 250


@dataclass
class EccCounts:
    sram_correctable: int = 0
    sram_uncorrectable: int = 0
    dram_correctable: int = 0
    dram_uncorrectable: int = 0

    @property
    def corrected(self) -> int:
        return self.sram_correctable + self.dram_correctable

    @property
    def uncorrected(self) -> int:
        return self.sram_uncorrectable + self.dram_uncorrectable


@dataclass
class Gpu:
    """One GPU's identity and the counters nvidia-smi prints."""

    index: int
    bus_id: str
    uuid: str
    serial: str
    name: str = MODEL
    temperature_c: int = 34
    power_w: int = 36
    memory_used_mib: int = 4
    persistence: bool = True
    # Off the bus (Xid 79, services/xid.py): NVML cannot reach it; only a reboot brings it back.
    lost: bool = False
    volatile: EccCounts = field(default_factory=EccCounts)
    aggregate: EccCounts = field(default_factory=EccCounts)

    def add_ecc_errors(self, *, dram_uncorrectable: int = 0, dram_correctable: int = 0) -> None:
        """Scenario hook: errors count both since the last reset (volatile) and for life (aggregate)."""
        for counts in (self.volatile, self.aggregate):
            counts.dram_uncorrectable += dram_uncorrectable
            counts.dram_correctable += dram_correctable

    def reset(self) -> None:
        self.volatile = EccCounts()


def gpu_count(conf: SlurmConf, node: str) -> int:
    """How many GPUs slurm.conf says `node` has (Gres=gpu[:type]:N), or 1 in a partition named gpu."""
    nc = conf.node(node)
    if nc is not None:
        match = re.search(r"gpu(?::[^:,]+)?:(\d+)", nc.gres)
        if match:
            return int(match.group(1))
    return 1 if any(p.name == "gpu" and node in p.nodes for p in conf.partitions) else 0


def make_gpus(node: str, count: int) -> list[Gpu]:
    """Deterministic identities: the same node gets the same UUIDs and serials in every episode."""
    gpus = []
    for index in range(count):
        digest = hashlib.sha256(f"{node}/{index}".encode()).hexdigest()
        uuid = f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
        gpus.append(
            Gpu(index, f"00000000:{7 + index:02X}:00.0", uuid, str(1320000000000 + int(digest[:6], 16)))
        )
    return gpus
