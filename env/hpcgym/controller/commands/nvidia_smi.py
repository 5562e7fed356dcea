"""nvidia-smi (driver 535.154.05, CUDA 12.2) on the gpu partition's nodes; its driver error elsewhere.

Modes: the default table, `-L`, `-q [-d ECC|MEMORY|TEMPERATURE]`, `-i N`, `-r` (reset: clears the
volatile ECC counters), and `--query-gpu=... --format=csv[,noheader][,nounits]`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hpcgym.controller.commands.base import Context, ToolReply
from hpcgym.controller.services.gpu import (
    CUDA_VERSION,
    DRIVER_VERSION,
    MEMORY_MIB,
    POWER_CAP_W,
    EccCounts,
    Gpu,
)

NO_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running.\n\n"
)
BAD_ARGS = "\nInvalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n\n"
EXIT_NO_DRIVER, EXIT_BAD_ARGS, EXIT_NOT_FOUND = 9, 2, 6
# nvidia-smi(1) RETURN VALUE 15: the GPU has fallen off the bus or is otherwise inaccessible.
EXIT_GPU_LOST = 15
WIDTH = 89
BORDER = "+" + "-" * 41 + "+" + "-" * 22 + "+" + "-" * 22 + "+"
QUERY_FIELDS = {
    "index": lambda g: (str(g.index), str(g.index)),
    "name": lambda g: (g.name, g.name),
    "uuid": lambda g: (g.uuid, g.uuid),
    "serial": lambda g: (g.serial, g.serial),
    "pci.bus_id": lambda g: (g.bus_id, g.bus_id),
    "temperature.gpu": lambda g: (str(g.temperature_c), str(g.temperature_c)),
    "utilization.gpu": lambda g: ("0 %", "0"),
    "memory.total": lambda g: (f"{MEMORY_MIB} MiB", str(MEMORY_MIB)),
    "memory.used": lambda g: (f"{g.memory_used_mib} MiB", str(g.memory_used_mib)),
    "ecc.errors.corrected.volatile.total": lambda g: (str(g.volatile.corrected),) * 2,
    "ecc.errors.uncorrected.volatile.total": lambda g: (str(g.volatile.uncorrected),) * 2,
    "ecc.errors.corrected.aggregate.total": lambda g: (str(g.aggregate.corrected),) * 2,
    "ecc.errors.uncorrected.aggregate.total": lambda g: (str(g.aggregate.uncorrected),) * 2,
}


def _stamp(now_s: int) -> str:
    return datetime.fromtimestamp(now_s, UTC).strftime("%a %b %d %H:%M:%S %Y")


RULE = "+" + "-" * (WIDTH - 2) + "+\n"


def _boxed(text: str) -> str:
    return f"|{text:<{WIDTH - 2}}|\n"


def _row(a: str, b: str, c: str) -> str:
    return f"|{a}|{b}|{c}|\n"


def format_table(gpus: list[Gpu], now_s: int) -> str:
    title = f" NVIDIA-SMI {DRIVER_VERSION}             Driver Version: {DRIVER_VERSION}"
    title += f"   CUDA Version: {CUDA_VERSION}"
    out = [f"{_stamp(now_s)}       \n", RULE, _boxed(title), "|" + BORDER[1:] + "\n"]
    out.append(
        _row(" GPU  Name                 Persistence-M ", " Bus-Id        Disp.A ", " Volatile Uncorr. ECC ")
    )
    out.append(
        _row(" Fan  Temp   Perf          Pwr:Usage/Cap ", "         Memory-Usage ", " GPU-Util  Compute M. ")
    )
    out.append(_row(" " * 41, " " * 22, "               MIG M. "))
    out.append("|" + "=" * 41 + "+" + "=" * 22 + "+" + "=" * 22 + "|\n")
    for gpu in gpus:
        persistence = "On" if gpu.persistence else "Off"
        left = f"{gpu.index:>4}  {gpu.name}"
        out.append(
            _row(
                left.ljust(39 - len(persistence)) + persistence + "  ",
                f" {gpu.bus_id} Off ",
                f"{gpu.volatile.uncorrected:>21} ",
            )
        )
        head = f" N/A   {gpu.temperature_c}C    P0"
        power = f"{gpu.power_w}W / {POWER_CAP_W}W"
        memory = f"{gpu.memory_used_mib}MiB / {MEMORY_MIB}MiB"
        out.append(
            _row(head + power.rjust(40 - len(head)) + " ", memory.rjust(21) + " ", "      0%      Default ")
        )
        out.append(_row(" " * 41, " " * 22, "            Disabled ".rjust(22)))
        out.append(BORDER + "\n")
    out.append(" " * WIDTH + "\n")
    out.append(RULE)
    out.append(_boxed(" Processes:"))
    out.append(
        _boxed("  GPU   GI   CI        PID   Type   Process name                            GPU Memory")
    )
    out.append(_boxed("        ID   ID                                                             Usage"))
    out.append("|" + "=" * (WIDTH - 2) + "|\n")
    out.append(_boxed("  No running processes found"))
    out.append(RULE)
    return "".join(out)


def _kv(depth: int, key: str, value: str | None = None) -> str:
    label = " " * (4 * depth) + key
    return f"{label}\n" if value is None else f"{label:<42}: {value}\n"


def _ecc_block(name: str, counts: EccCounts) -> str:
    return (
        _kv(2, name)
        + _kv(3, "SRAM Correctable", str(counts.sram_correctable))
        + _kv(3, "SRAM Uncorrectable", str(counts.sram_uncorrectable))
        + _kv(3, "DRAM Correctable", str(counts.dram_correctable))
        + _kv(3, "DRAM Uncorrectable", str(counts.dram_uncorrectable))
    )


def format_query(gpus: list[Gpu], now_s: int, sections: set[str]) -> str:
    out = "\n==============NVSMI LOG==============\n\n"
    out += _kv(0, "Timestamp", _stamp(now_s)) + _kv(0, "Driver Version", DRIVER_VERSION)
    out += _kv(0, "CUDA Version", CUDA_VERSION) + "\n" + _kv(0, "Attached GPUs", str(len(gpus)))
    for gpu in gpus:
        out += f"GPU {gpu.bus_id}\n"
        if not sections:
            out += _kv(1, "Product Name", gpu.name) + _kv(
                1, "Persistence Mode", "Enabled" if gpu.persistence else "Disabled"
            )
            out += (
                _kv(1, "Serial Number", gpu.serial)
                + _kv(1, "GPU UUID", gpu.uuid)
                + _kv(1, "Minor Number", str(gpu.index))
            )
        if not sections or "ECC" in sections:
            out += _kv(1, "ECC Mode") + _kv(2, "Current", "Enabled") + _kv(2, "Pending", "Enabled")
            out += (
                _kv(1, "ECC Errors")
                + _ecc_block("Volatile", gpu.volatile)
                + _ecc_block("Aggregate", gpu.aggregate)
            )
        if not sections or "MEMORY" in sections:
            out += _kv(1, "FB Memory Usage") + _kv(2, "Total", f"{MEMORY_MIB} MiB")
            out += _kv(2, "Used", f"{gpu.memory_used_mib} MiB") + _kv(
                2, "Free", f"{MEMORY_MIB - gpu.memory_used_mib} MiB"
            )
        if not sections or "TEMPERATURE" in sections:
            out += _kv(1, "Temperature") + _kv(2, "GPU Current Temp", f"{gpu.temperature_c} C")
        out += "\n"
    return out


def _query_csv(gpus: list[Gpu], fields: list[str], fmt: set[str]) -> ToolReply:
    unknown = [f for f in fields if f not in QUERY_FIELDS]
    if unknown:
        return ToolReply(f'Field "{unknown[0]}" is not a valid field to query.\n\n', "", EXIT_BAD_ARGS)
    units = "nounits" not in fmt
    lines = [] if "noheader" in fmt else [", ".join(fields)]
    for gpu in gpus:
        lines.append(", ".join(QUERY_FIELDS[f](gpu)[0 if units else 1] for f in fields))
    return ToolReply("".join(f"{line}\n" for line in lines))


def run(ctx: Context, args: list[str]) -> ToolReply:
    services = ctx.services
    gpus = services.hardware.gpus.get(ctx.node, [])
    if not gpus:
        return ToolReply(NO_DRIVER, "", EXIT_NO_DRIVER)
    flags: set[str] = set()
    index: str | None = None
    sections: set[str] = set()
    query: list[str] | None = None
    fmt: set[str] | None = None
    words = list(args)
    while words:
        word = words.pop(0)
        key, eq, value = word.partition("=")
        if word in ("-i", "--id") and words:
            index = words.pop(0)
        elif key == "--id" and eq:
            index = value
        elif word in ("-d", "--display") and words:
            sections |= {s.strip().upper() for s in words.pop(0).split(",")}
        elif key in ("--query-gpu", "-q-gpu") and eq:
            query = [f.strip() for f in value.split(",") if f.strip()]
        elif key == "--format" and eq:
            fmt = {f.strip() for f in value.split(",")}
        elif word in ("-q", "--query", "-r", "--gpu-reset", "-L", "--list-gpus"):
            flags.add({"--query": "-q", "--gpu-reset": "-r", "--list-gpus": "-L"}.get(word, word))
        else:
            return ToolReply(BAD_ARGS, "", EXIT_BAD_ARGS)
    if index is not None:
        chosen = [g for g in gpus if str(g.index) == index or g.uuid == index or g.bus_id == index]
        if not chosen:
            return ToolReply("No devices were found\n", "", EXIT_NOT_FOUND)
        gpus = chosen
    now = services.clocks.now_s
    lost = [gpu for gpu in gpus if gpu.lost]
    if lost:
        # NVML_ERROR_GPU_IS_LOST on the first device it cannot open; nothing else is printed.
        text = f"Unable to determine the device handle for GPU{lost[0].bus_id}: GPU is lost.  "
        return ToolReply(text + "Reboot the system to recover this GPU\n", "", EXIT_GPU_LOST)
    if query is not None:
        if fmt is None or "csv" not in fmt:
            return ToolReply(BAD_ARGS, "", EXIT_BAD_ARGS)
        return _query_csv(gpus, query, fmt)
    if "-r" in flags:
        out = ""
        for gpu in gpus:
            gpu.reset()
            out += f"GPU {gpu.bus_id} was successfully reset.\n"
        return ToolReply(out + "All done.\n")
    if "-L" in flags:
        return ToolReply("".join(f"GPU {g.index}: {g.name} (UUID: {g.uuid})\n" for g in gpus))
    if "-q" in flags:
        return ToolReply(format_query(gpus, now, sections))
    return ToolReply(format_table(gpus, now))
