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

from hpcgym.controller.numbers import to_int
from hpcgym.controller.slurmconf import NodeConf

if TYPE_CHECKING:
    from hpcgym.controller.services.manager import ServiceManager
    from hpcgym.controller.state import SlurmNode

# slurmctld's default registration tolerance for memory (NodeRegMemPercent is not set: 100 %).
NODE_REG_MEM_PERCENT = 100.0
# gres.conf is node-written: at most this many configuration lines, this many names expanded from
# all of its NodeName= and File= hostlists together, and this many GPUs for one node. Past any bound
# the file is a bad gres.conf, which slurmd registers no GPU from.
MAX_GRES_LINES = 1024
MAX_GRES_NAMES = 4096
MAX_NODE_GPUS = 64


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


def memory_kb(node: str, hw: NodeHardware, cpus_alloc: int) -> dict[str, int]:
    """What /proc/meminfo would say of an idle (or busy) node: total, used, free, shared, cache."""
    total = hw.mem_total_kb(node)
    jitter = zlib.crc32(f"mem:{node}".encode()) % 4096
    used = total * 6 // 100 + jitter + cpus_alloc * 131072
    shared = 9000 + jitter
    buffers = total // 120
    cache = total * 9 // 100
    free = max(0, total - used - buffers - cache)
    available = min(total, free + (buffers + cache) * 9 // 10)
    return {"total": total, "used": used, "free": free, "shared": shared, "buffers": buffers,
            "cache": cache, "available": available}  # fmt: skip


def meminfo_line(name: str, value: int, *, kb: bool = True) -> str:
    """One /proc/meminfo line: the label padded to 16 columns, the value right-aligned in 8."""
    return f"{name + ':':<16}{value:>8}" + (" kB" if kb else "")


def meminfo_text(node: str, hw: NodeHardware, cpus_alloc: int = 0) -> str:
    """/proc/meminfo of the node: the kernel's labels padded to 16 columns, values 8 wide in kB."""
    mem = memory_kb(node, hw, cpus_alloc)
    total = mem["total"]
    rows = [
        ("MemTotal", total), ("MemFree", mem["free"]), ("MemAvailable", mem["available"]),
        ("Buffers", mem["buffers"]), ("Cached", mem["cache"]), ("SwapCached", 0),
        ("Active", mem["used"] // 2 + mem["cache"] // 3), ("Inactive", mem["cache"] * 2 // 3),
        ("Active(anon)", mem["used"] // 20), ("Inactive(anon)", mem["used"] // 3),
        ("Active(file)", mem["cache"] // 3), ("Inactive(file)", mem["cache"] * 2 // 3),
        ("Unevictable", 0), ("Mlocked", 0), ("SwapTotal", 0), ("SwapFree", 0), ("Zswap", 0),
        ("Zswapped", 0), ("Dirty", 132), ("Writeback", 0), ("AnonPages", mem["used"] // 3),
        ("Mapped", mem["used"] // 8), ("Shmem", mem["shared"]), ("KReclaimable", total // 90),
        ("Slab", total // 60), ("SReclaimable", total // 90), ("SUnreclaim", total // 180),
        ("KernelStack", 4096 + 16 * hw.cpus), ("PageTables", 6000 + 64 * hw.cpus),
        ("SecPageTables", 0), ("NFS_Unstable", 0), ("Bounce", 0), ("WritebackTmp", 0),
        ("CommitLimit", total // 2), ("Committed_AS", mem["used"] * 2), ("VmallocTotal", 34359738367),
        ("VmallocUsed", 20000 + 512 * hw.cpus), ("VmallocChunk", 0), ("Percpu", 1200 * hw.cpus),
        ("HardwareCorrupted", 0), ("AnonHugePages", 0), ("ShmemHugePages", 0), ("ShmemPmdMapped", 0),
        ("FileHugePages", 0), ("FilePmdMapped", 0),
    ]  # fmt: skip
    lines = [meminfo_line(name, value) for name, value in rows]
    lines += [
        meminfo_line(name, 0, kb=False)
        for name in ("HugePages_Total", "HugePages_Free", "HugePages_Rsvd", "HugePages_Surp")
    ]
    lines += [meminfo_line("Hugepagesize", 2048), meminfo_line("Hugetlb", 0)]
    lines += [meminfo_line("DirectMap4k", 167936), meminfo_line("DirectMap2M", total - 167936)]
    return "\n".join(lines) + "\n"


CPU_MODEL = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
CPU_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 "
    "ss syscall nx pdpe1gb rdtscp lm constant_tsc arch_perfmon rep_good nopl xtopology cpuid "
    "tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt "
    "tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch cpuid_fault "
    "invpcid_single ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms "
    "invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw "
    "avx512vl xsaveopt xsavec xgetbv1 xsaves wbnoinvd arat avx512vbmi umip pku ospke avx512_vbmi2 gfni "
    "vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq la57 rdpid fsrm md_clear "
    "arch_capabilities"
)


def cpuinfo_text(hw: NodeHardware) -> str:
    """/proc/cpuinfo of the node: one block per logical CPU, the kernel's tab-aligned labels."""
    blocks = []
    per_socket = hw.cores_per_socket * hw.threads_per_core
    for cpu in range(hw.cpus):
        socket, rest = divmod(cpu, per_socket) if per_socket else (0, cpu)
        core = rest // max(1, hw.threads_per_core)
        blocks.append(
            f"processor\t: {cpu}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 106\n"
            f"model name\t: {CPU_MODEL}\nstepping\t: 6\nmicrocode\t: 0xd0003b9\ncpu MHz\t\t: 1995.312\n"
            f"cache size\t: 49152 KB\nphysical id\t: {socket}\nsiblings\t: {per_socket}\n"
            f"core id\t\t: {core}\ncpu cores\t: {hw.cores_per_socket}\napicid\t\t: {cpu}\n"
            f"initial apicid\t: {cpu}\nfpu\t\t: yes\nfpu_exception\t: yes\ncpuid level\t: 27\n"
            f"wp\t\t: yes\nflags\t\t: {CPU_FLAGS}\n"
            "bugs\t\t: spectre_v1 spectre_v2 spec_store_bypass swapgs mmio_stale_data eibrs_pbrsb\n"
            "bogomips\t: 3990.62\nclflush size\t: 64\ncache_alignment\t: 64\n"
            "address sizes\t: 46 bits physical, 57 bits virtual\npower management:\n\n"
        )
    return "".join(blocks)


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
        value = to_int(count)
        total += value if value is not None else 1
    return total


def reported_topology(conf: NodeConf, hw: NodeHardware) -> tuple[int, int, int, int]:
    """The CPUs, sockets, cores per socket and threads per core slurmd registers with.

    slurmd 22.05 (slurmd.c, `_read_config`, without SlurmdParameters=config_overrides) reports
    its hardware when that has fewer CPUs than the node's line, and the line otherwise: a line
    whose CPUs the hardware has but whose layout it lacks registers as configured (slurmd only
    logs "Node configuration differs from hardware").
    """
    if hw.cpus < conf.cpus:
        return hw.cpus, hw.sockets, hw.cores_per_socket, hw.threads_per_core
    return conf.cpus, conf.boards * conf.sockets_per_board, conf.cores_per_socket, conf.threads_per_core


def registration_reason(conf: NodeConf, hw: NodeHardware, gres_gpus: int | None = None) -> str | None:
    """Why slurmctld rejects the node's registration (its drain reason), or None when it fits.

    The checks and their texts follow `validate_node_specs` (node_mgr.c, Slurm 22.05): gres first,
    then socket*core*thread, CPUs and memory, joined with ", ". `gres_gpus` is how many GPUs slurmd
    found through gres.conf (None: it found what is configured).
    """
    reasons: list[str] = []
    want_gpus = configured_gpus(conf)
    if gres_gpus is not None and gres_gpus < want_gpus:
        reasons.append(f"gres/gpu count reported lower than configured ({gres_gpus} < {want_gpus})")
    cpus, sockets, cores, threads = reported_topology(conf, hw)
    threads_want = conf.boards * conf.sockets_per_board * conf.cores_per_socket * conf.threads_per_core
    if sockets * cores * threads < threads_want:
        reasons.append("Low socket*core*thread count")
    if cpus < conf.cpus:
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
    /dev/nvidia0 .. /dev/nvidia{present-1} exist. A file past MAX_GRES_LINES, MAX_GRES_NAMES or
    MAX_NODE_GPUS registers none.
    """
    from hpcgym.controller.hostlist import expand_names

    found: set[int] = set()
    lines = names = 0
    for raw in (text or "").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        lines += 1
        if lines > MAX_GRES_LINES:
            return 0
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        fields = {key.lower(): value for key, value in fields.items()}
        if fields.get("name") != "gpu":
            continue
        if "nodename" in fields:
            hosts = expand_names(fields["nodename"])
            names += len(hosts)
            if names > MAX_GRES_NAMES:
                return 0
            if node not in hosts:
                continue
        files = expand_names(fields.get("file", ""))
        names += len(files)
        if names > MAX_GRES_NAMES:
            return 0
        for path in files:
            index = to_int(path[len("/dev/nvidia") :]) if path.startswith("/dev/nvidia") else None
            if index is not None and index < present:
                found.add(index)
        if len(found) > MAX_NODE_GPUS:
            return 0
    return len(found)


def check_registration(services: ServiceManager, node: SlurmNode) -> str | None:
    """The drain reason for `node`'s registration from its hardware and gres.conf (None: it fits)."""
    hw = services.hardware.nodes.get(node.name)
    if hw is None:
        return None
    gres = None
    if configured_gpus(node.conf):
        gres = gres_conf_gpus(_text(services.access.read(node.name, GRES_CONF)), node.name, hw.gpus)
    return registration_reason(node.conf, hw, gres)


def _text(raw: bytes | None) -> str | None:
    return raw.decode(errors="replace") if raw is not None else None
