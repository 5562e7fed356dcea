"""The node-hardware tools against the real ones, captured on the build machine (captures/hwinfo/).

The build machine has 2 CPUs and MemTotal 24683772 kB; given that hardware (and, for free, the
numbers each capture showed), slurmd -C, free and /proc/meminfo print byte for byte what the real
slurmd 22.05.8, procps-ng and kernel printed there; /proc/cpuinfo and lscpu keep their labels.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcgym.controller.commands.hwinfo import free_table, lscpu_fields
from hpcgym.controller.hardware import NodeHardware, cpuinfo_text, meminfo_line, slurmd_config_line

CAPTURES = Path(__file__).parent / "captures" / "hwinfo"
HOST = NodeHardware(cpus=2, cores_per_socket=2, real_memory_mb=24105)


def capture(name: str) -> str:
    return (CAPTURES / name).read_text()


def as_procps_3(text: str) -> str:
    # procps-ng 4.0 (the capture) pads free's labels to 8 columns, 3.3.17 (Rocky 9) to 7: one space less.
    return "".join(line[:7] + line[8:] for line in text.splitlines(keepends=True))


def test_slurmd_c_prints_the_real_line():
    assert capture("slurmd-C.txt").splitlines()[0] == slurmd_config_line("vm", HOST)


def _mem_of(text: str, wide: bool) -> dict[str, int]:
    values = [int(v) for v in text.splitlines()[1].split()[1:]]
    if wide:
        total, used, free, shared, buffers, cache, available = values
    else:
        total, used, free, shared, cache, available = values
        buffers = 0
    return {"total": total, "used": used, "free": free, "shared": shared, "buffers": buffers,
            "cache": cache, "available": available}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "flags"),
    [
        ("free.txt", {}),
        ("free-w.txt", {"wide": True}),
        ("free-t.txt", {"total": True}),
        ("free-l.txt", {"lohi": True}),
    ],
)
def test_free_prints_procps_table(name, flags):
    text = capture(name)
    assert free_table(_mem_of(text, flags.get("wide", False)), **flags) == as_procps_3(text)


def test_free_scales_like_procps():
    # -m and -h of the same machine a moment apart: the layout and the scaled totals agree.
    mem = {"total": 24683772, "used": 1785576, "free": 13883248, "shared": 12580, "buffers": 0,
           "cache": 9387732, "available": 22898196}  # fmt: skip
    assert free_table(mem, "m").splitlines()[1].split()[1] == capture("free-m.txt").splitlines()[1].split()[1]
    human = free_table(mem, human=True).splitlines()
    assert human[1] == "Mem:           23Gi       1.7Gi        13Gi        12Mi       9.0Gi        21Gi"
    assert human[2] == as_procps_3(capture("free-h.txt")).splitlines()[2]


def test_meminfo_lines_are_the_kernels():
    for line in capture("meminfo.txt").splitlines():
        name, value = line.split(":")[0], int(line.split()[1])
        assert meminfo_line(name, value, kb=line.endswith(" kB")) == line


def test_cpuinfo_and_lscpu_keep_the_real_labels():
    real = [line.split(":")[0] for line in capture("cpuinfo.txt").splitlines() if line]
    ours = [line.split(":")[0] for line in cpuinfo_text(HOST).split("\n\n")[0].splitlines()]
    assert ours == real
    assert cpuinfo_text(HOST).count("processor\t: ") == 2
    real_labels = [line.split(":")[0] + ":" for line in capture("lscpu.txt").splitlines()]
    ours_labels = [label for label, _ in lscpu_fields(HOST)]
    assert [label for label in ours_labels if label in real_labels][:18] == [
        label for label in real_labels if label in ours_labels
    ][:18]
    assert dict(lscpu_fields(HOST))["CPU(s):"] == "2"
