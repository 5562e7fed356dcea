"""nproc (coreutils 8.32), free (procps-ng 3.3.17) and lscpu (util-linux 2.37) on the node's own hardware.

In the sandbox the real tools would read the host's CPUs and memory (2 CPUs and 24 GiB on the
build machine); a node reports what it has (`hardware.NodeHardware`): what slurm.conf says unless a
fault changed it. Layouts follow the real tools as captured on Debian bookworm (procps-ng 4.0.2,
coreutils 9.1, util-linux 2.38, whose non-tty output keeps 2.37's fields): free's 12-wide columns
after a 7-wide label (procps-ng 4.0 widened that label column by one; 3.3.17 keeps the RHEL 8
layout, whose header starts with 14 spaces), lscpu's labels padded to the longest one plus a space.
"""

from __future__ import annotations

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.commands.getopt import Arg, Option
from hpcgym.controller.commands.prologue import Prologue
from hpcgym.controller.commands.usage import read_help
from hpcgym.controller.hardware import CPU_FLAGS, CPU_MODEL, NodeHardware, memory_kb
from hpcgym.controller.numbers import to_int
from hpcgym.controller.services import ServiceManager

NPROC_USAGE = read_help("nproc-help.txt")
NPROC_VERSION = "nproc (GNU coreutils) 8.32\n"
NPROC_TRY = "Try 'nproc --help' for more information.\n"
NPROC_OPTIONS = (
    Option("all", None, "all"),
    Option("ignore", None, "ignore", Arg.REQUIRED),
    Option("help", None, "help"),
    Option("version", None, "version"),
)
NPROC = Prologue(
    "nproc",
    NPROC_OPTIONS,
    answers=(("help", ToolReply(NPROC_USAGE)), ("version", ToolReply(NPROC_VERSION))),
    hint=NPROC_TRY,
)


def _hardware(ctx: Context) -> tuple[ServiceManager, NodeHardware]:
    services = ctx.services
    hw = services.hardware.nodes.get(ctx.node)
    if hw is None:
        # The login node is not in slurm.conf: a small service VM.
        hw = NodeHardware(cpus=4, cores_per_socket=4, real_memory_mb=7680)
    return services, hw


def run_nproc(ctx: Context, args: list[str]) -> ToolReply:
    parsed = NPROC.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    keys, operands = dict(parsed.found), parsed.operands
    if operands:
        return ToolReply("", f"nproc: extra operand \u2018{operands[0]}\u2019\n{NPROC_TRY}", 1)
    _, hw = _hardware(ctx)
    ignore = 0
    if keys.get("ignore") is not None:
        value = keys["ignore"] or ""
        number = to_int(value)
        if number is None:
            return ToolReply("", f"nproc: invalid number: \u2018{value}\u2019\n", 1)
        ignore = number
    return ToolReply(f"{max(1, hw.cpus - ignore)}\n")


# free -c N prints N tables a second apart; no command runs longer than this many seconds.
MAX_FREE_REPEATS = 600

FREE_USAGE = read_help("free-help.txt")
FREE_OPTIONS = (
    Option("b", "b", "bytes"),
    Option("kilo", None, "kilo"),
    Option("mega", None, "mega"),
    Option("giga", None, "giga"),
    Option("tera", None, "tera"),
    Option("peta", None, "peta"),
    Option("tebi", None, "tebi"),
    Option("pebi", None, "pebi"),
    Option("l", "l", "lohi"),
    Option("s", "s", "seconds", Arg.REQUIRED),
    Option("c", "c", "count", Arg.REQUIRED),
    Option("k", "k", "kibi"),
    Option("m", "m", "mebi"),
    Option("g", "g", "gibi"),
    Option("h", "h", "human"),
    Option("si", None, "si"),
    Option("t", "t", "total"),
    Option("w", "w", "wide"),
    Option("help", None, "help"),
    Option("V", "V", "version"),
)
FREE = Prologue(
    "free",
    FREE_OPTIONS,
    answers=(("help", ToolReply(FREE_USAGE)), ("V", ToolReply("free from procps-ng 3.3.17\n"))),
    hint=FREE_USAGE,
)
# Divisors of a KiB count for each unit flag (procps scales bytes; these are exact for KiB input).
_FREE_UNITS = {
    "b": -1, "k": 1, "kilo": 0, "m": 1024, "mega": 0, "g": 1024**2, "giga": 0,
    "tebi": 1024**3, "pebi": 1024**4, "tera": 0, "peta": 0,
}  # fmt: skip
_SI_POWERS = {"kilo": 1, "mega": 2, "giga": 3, "tera": 4, "peta": 5}


def _scale(kb: int, unit: str, human: bool, si: bool) -> str:
    if human:
        base = 1000 if si else 1024
        value = kb * 1024
        if value < base:
            return f"{value}B"
        suffix = "" if si else "i"
        for letter in "KMGTPE":
            value_f = value / base ** ("KMGTPE".index(letter) + 1)
            if value_f < base:
                return f"{value_f:.1f}{letter}{suffix}" if value_f < 10 else f"{int(value_f)}{letter}{suffix}"
        return f"{value}B"
    if unit == "b":
        return str(kb * 1024)
    if unit in _SI_POWERS:
        return str(kb * 1024 // 1000 ** _SI_POWERS[unit])
    return str(kb // max(1, _FREE_UNITS[unit]))


def run_free(ctx: Context, args: list[str]) -> ToolReply:
    parsed = FREE.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    found, operands = parsed.found, parsed.operands
    keys = [key for key, _ in found]
    values = dict(found)
    if operands:
        return ToolReply("", FREE_USAGE, 1)
    seconds, count = values.get("s"), values.get("c")
    if seconds is not None and not _is_number(seconds):
        return ToolReply("", f"free: seconds argument `{seconds}' failed\n", 1)
    repeats = to_int(count) if count is not None else 1
    if repeats is None or repeats <= 0:
        return ToolReply("", f"free: failed to parse count argument: '{count}'\n", 1)
    # With -s and no -c the real free repeats until interrupted; the episode's clock does not pass
    # while one command runs, so each repeat would be the same: it prints once. The real one waits
    # a second between repeats; a count past what a command's time allows prints MAX_FREE_REPEATS.
    repeats = min(repeats, MAX_FREE_REPEATS)
    unit = next((key for key in reversed(keys) if key in _FREE_UNITS), "k")
    human, si, wide = "h" in keys, "si" in keys, "w" in keys
    _, hw = _hardware(ctx)
    node = ctx.slurm.nodes.get(ctx.node)
    mem = memory_kb(ctx.node, hw, node.cpus_alloc if node is not None else 0)

    table = free_table(mem, unit, human=human, si=si, wide=wide, lohi="l" in keys, total="t" in keys)
    return ToolReply("\n".join([table] * repeats))


def free_table(
    mem: dict[str, int],
    unit: str = "k",
    *,
    human: bool = False,
    si: bool = False,
    wide: bool = False,
    lohi: bool = False,
    total: bool = False,
) -> str:
    """The table free prints for these KiB counts: a 7-wide label, then a 12-wide column per value."""

    def cells(values: list[int]) -> str:
        return "".join(f" {_scale(v, unit, human, si):>11}" for v in values)

    if wide:
        head = "              total        used        free      shared     buffers       cache   available"
        row = [mem["total"], mem["used"], mem["free"], mem["shared"], mem["buffers"], mem["cache"]]
    else:
        head = "              total        used        free      shared  buff/cache   available"
        row = [mem["total"], mem["used"], mem["free"], mem["shared"], mem["buffers"] + mem["cache"]]
    lines = [head, f"{'Mem:':<7}{cells([*row, mem['available']])}"]
    if lohi:
        low_used = mem["total"] - mem["free"]
        lines += [
            f"{'Low:':<7}{cells([mem['total'], low_used, mem['free']])}",
            f"{'High:':<7}{cells([0, 0, 0])}",
        ]
    lines.append(f"{'Swap:':<7}{cells([0, 0, 0])}")
    if total:
        lines.append(f"{'Total:':<7}{cells([mem['total'], mem['used'], mem['free']])}")
    return "\n".join(lines) + "\n"


def _is_number(text: str) -> bool:
    try:
        return float(text) >= 0
    except ValueError:
        return False


def _cpu_list(count: int) -> str:
    return "0" if count == 1 else f"0-{count - 1}"


def lscpu_fields(hw: NodeHardware) -> list[tuple[str, str]]:
    """Lscpu's (label, value) rows for a KVM guest on Ice Lake servers with the node's topology."""
    sockets = hw.sockets
    return [
        ("Architecture:", "x86_64"),
        ("CPU op-mode(s):", "32-bit, 64-bit"),
        ("Address sizes:", "46 bits physical, 57 bits virtual"),
        ("Byte Order:", "Little Endian"),
        ("CPU(s):", str(hw.cpus)),
        ("On-line CPU(s) list:", _cpu_list(hw.cpus)),
        ("Vendor ID:", "GenuineIntel"),
        ("BIOS Vendor ID:", "Red Hat"),
        ("Model name:", CPU_MODEL),
        ("BIOS Model name:", "RHEL 7.6.0 PC (i440FX + PIIX, 1996)"),
        ("CPU family:", "6"),
        ("Model:", "106"),
        ("Thread(s) per core:", str(hw.threads_per_core)),
        ("Core(s) per socket:", str(hw.cores_per_socket)),
        ("Socket(s):", str(sockets)),
        ("Stepping:", "6"),
        ("BogoMIPS:", "3990.62"),
        ("Flags:", CPU_FLAGS),
        ("Hypervisor vendor:", "KVM"),
        ("Virtualization type:", "full"),
        (
            "L1d cache:",
            f"{48 * hw.cores_per_socket * sockets} KiB ({hw.cores_per_socket * sockets} instances)",
        ),
        (
            "L1i cache:",
            f"{32 * hw.cores_per_socket * sockets} KiB ({hw.cores_per_socket * sockets} instances)",
        ),
        (
            "L2 cache:",
            f"{hw.cores_per_socket * sockets * 1.25:g} MiB ({hw.cores_per_socket * sockets} instances)",
        ),
        ("L3 cache:", f"{48 * sockets} MiB ({sockets} instance{'s' if sockets > 1 else ''})"),
        ("NUMA node(s):", "1"),
        ("NUMA node0 CPU(s):", _cpu_list(hw.cpus)),
        ("Vulnerability Itlb multihit:", "Not affected"),
        ("Vulnerability L1tf:", "Not affected"),
        ("Vulnerability Mds:", "Not affected"),
        ("Vulnerability Meltdown:", "Not affected"),
        ("Vulnerability Mmio stale data:", "Mitigation; Clear CPU buffers; SMT Host state unknown"),
        ("Vulnerability Retbleed:", "Not affected"),
        ("Vulnerability Spec store bypass:", "Mitigation; Speculative Store Bypass disabled via prctl"),
        ("Vulnerability Spectre v1:", "Mitigation; usercopy/swapgs barriers and __user pointer sanitization"),
        ("Vulnerability Spectre v2:", "Mitigation; Enhanced IBRS, IBPB conditional, RSB filling"),
        ("Vulnerability Srbds:", "Not affected"),
        ("Vulnerability Tsx async abort:", "Not affected"),
    ]


LSCPU_USAGE = read_help("lscpu-help.txt")
LSCPU_TRY = "Try 'lscpu --help' for more information.\n"
LSCPU = Prologue(
    "lscpu",
    (Option("h", "h", "help"), Option("V", "V", "version")),
    answers=(("h", ToolReply(LSCPU_USAGE)), ("V", ToolReply("lscpu from util-linux 2.37.4\n"))),
    hint=LSCPU_TRY,
)


def run_lscpu(ctx: Context, args: list[str]) -> ToolReply:
    parsed = LSCPU.parse(args)
    if isinstance(parsed, ToolReply):
        return parsed
    if parsed.operands:
        return ToolReply("", f"lscpu: bad usage\n{LSCPU_TRY}", 1)
    _, hw = _hardware(ctx)
    rows = lscpu_fields(hw)
    width = max(len(label) for label, _ in rows) + 1
    return ToolReply("".join(f"{label:<{width}}{value}\n" for label, value in rows))
