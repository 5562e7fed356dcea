"""GPU Xid events: what the NVIDIA driver (NVRM) writes to the kernel ring buffer, and what it leaves.

An Xid is the driver's report of a GPU error, one kernel line per event:
`NVRM: Xid (PCI:0000:07:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.`
NVIDIA's Xid catalogue sorts them by cause. Application-class Xids (13 Graphics Engine Exception,
31 GPU memory page fault, 43 GPU stopped processing) come from a program's bug: the driver kills the
faulting context and the GPU stays usable, so the node is fine. A hardware-class Xid 79 (the GPU
has fallen off the bus) leaves a GPU that NVML can no longer reach: nvidia-smi cannot find its
handle, a GPU reset cannot reach it either, and only a reboot (or the vendor) brings it back.

Events go into the node's journal under the `kernel` identifier, which `journalctl -k` and `dmesg`
read; the GPU itself is marked lost where the Xid takes it off the bus (nvidia-smi reads that).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hpcgym.controller.services.gpu import Gpu
from hpcgym.controller.services.journal import Entry, Journal, Priority

KERNEL = "kernel"


class XidClass(enum.Enum):
    """NVIDIA's resolution buckets, reduced to what an operator decides from them."""

    APPLICATION = "application"  # RESTART_APP: the program's fault; the GPU and node are fine
    HARDWARE = "hardware"  # RESET_GPU / RESTART_BM / CONTACT_SUPPORT: keep the node out


@dataclass(frozen=True)
class XidKind:
    code: int
    cls: XidClass
    # The driver's text after `pid=..., name=..., `; {a}..{c} take per-event hex values.
    text: str
    # Whether the event names the process whose context faulted (application Xids do).
    names_process: bool
    lost: bool = False


XIDS: dict[int, XidKind] = {
    13: XidKind(
        13,
        XidClass.APPLICATION,
        "Graphics SM Warp Exception on (GPC {a}, TPC {b}, SM 0): Out Of Range Address",
        names_process=True,
    ),
    31: XidKind(
        31,
        XidClass.APPLICATION,
        "Ch 000000{c:02x}, intr 00000000. MMU Fault: ENGINE GRAPHICS GPCCLIENT_T1_{a} faulted @ "
        "0x7f{b:02x}_3c000000. Fault is of type FAULT_PDE ACCESS_TYPE_VIRT_READ",
        names_process=True,
    ),
    43: XidKind(43, XidClass.APPLICATION, "Ch 000000{c:02x}", names_process=True),
    79: XidKind(79, XidClass.HARDWARE, "GPU has fallen off the bus.", names_process=False, lost=True),
}


def pci_tag(gpu: Gpu) -> str:
    """The `PCI:0000:07:00` form NVRM prints (domain, bus, device; no function)."""
    domain, bus, rest = gpu.bus_id.split(":")
    return f"PCI:{domain[-4:]}:{bus.lower()}:{rest.split('.')[0]}"


def xid_lines(kind: XidKind, gpu: Gpu, *, pid: int, name: str, values: tuple[int, int, int]) -> list[str]:
    """The kernel lines one event writes, in order."""
    a, b, c = values
    who = f"pid={pid}, name={name}" if kind.names_process else "pid='<unknown>', name=<unknown>"
    lines = [f"NVRM: Xid ({pci_tag(gpu)}): {kind.code}, {who}, {kind.text.format(a=a, b=b, c=c)}"]
    if kind.lost:
        # After a 79 the driver reports the lost device on its own line and saves a crash dump.
        lines.append(f"NVRM: GPU {gpu.bus_id[4:]}: GPU has fallen off the bus.")
        lines.append("NVRM: A GPU crash dump has been created. If possible, please run")
        lines.append("NVRM: nvidia-bug-report.sh as root to collect this data before")
        lines.append("NVRM: the NVIDIA kernel module is unloaded.")
    return lines


def record_xid(
    journal: Journal, gpu: Gpu, code: int, *, time_s: int, pid: int, name: str, values: tuple[int, int, int]
) -> None:
    """Scenario hook: the driver reports Xid `code` on `gpu` at `time_s`.

    Raises:
        KeyError: an Xid this catalogue does not model.
    """
    kind = XIDS[code]
    for line in xid_lines(kind, gpu, pid=pid, name=name, values=values):
        journal.add(Entry(time_s, KERNEL, 0, "", line, Priority.WARNING))
    if kind.lost:
        gpu.lost = True


def kernel_entries(journal: Journal) -> list[Entry]:
    """What the kernel ring buffer holds: the journal's kernel lines, oldest first."""
    return [entry for entry in journal.entries if entry.identifier == KERNEL]
