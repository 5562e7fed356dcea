r"""Slurm's JSON output (openapi/v0.0.38 as the 22.05 clients print it with --json).

Slurm serialises with its own writer, not a standard library: two-space indent, `/` escaped as `\/`,
an empty list as `[` and `]` on separate lines, floats always with a decimal point, and no newline
after the closing brace (captures */sinfo_--json.out).
"""

from __future__ import annotations

import json

from hpcgym.controller.commands.base import SLURM_VERSION
from hpcgym.controller.commands.scontrol_show import NODE_OS
from hpcgym.controller.state import NodeBase, NodeFlag, SlurmNode

JsonValue = None | bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"]


def dumps(value: JsonValue, indent: int = 0) -> str:
    """Serialise like Slurm's data_t JSON writer."""
    pad = "  " * indent
    inner = "  " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{\n" + pad + "}"
        items = [f"{inner}{_string(key)}: {dumps(item, indent + 1)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        if not value:
            return "[\n" + pad + "]"
        return "[\n" + ",\n".join(inner + dumps(item, indent + 1) for item in value) + "\n" + pad + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return _string(value)


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("/", "\\/")


def envelope(key: str, records: list[JsonValue]) -> str:
    """The meta/errors wrapper every --json answer has, around one list of records."""
    major, minor, micro = (int(part) for part in SLURM_VERSION.split("."))
    document: JsonValue = {
        "meta": {
            "plugin": {"type": "openapi/v0.0.38", "name": "Slurm OpenAPI v0.0.38"},
            "Slurm": {"version": {"major": major, "micro": micro, "minor": minor}, "release": SLURM_VERSION},
        },
        "errors": [],
        key: records,
    }
    return dumps(document)


_FLAG_NAMES = (
    (NodeFlag.COMPLETING, "COMPLETING"),
    (NodeFlag.DRAIN, "DRAIN"),
    (NodeFlag.FAIL, "FAIL"),
    (NodeFlag.MAINT, "MAINT"),
    (NodeFlag.NOT_RESPONDING, "NOT_RESPONDING"),
)


def node_record(node: SlurmNode) -> JsonValue:
    c = node.conf
    base = node.effective_base()
    tres = f"cpu={c.cpus},mem={c.real_memory_mb}M,billing={c.cpus}"
    return {
        "architecture": "x86_64",
        "burstbuffer_network_address": "",
        "boards": c.boards,
        "boot_time": node.boot_s or 0,
        "comment": "",
        "cores": c.cores_per_socket,
        "cpu_binding": 0,
        "cpu_load": node.cpu_load_centi(),
        "extra": "",
        "free_memory": node.free_mem_mb(),
        "cpus": c.cpus,
        "last_busy": node.last_busy_s or 0,
        "features": c.features,
        "active_features": c.features,
        "gres": c.gres,
        "gres_drained": "N/A",
        "gres_used": "",
        "mcs_label": "",
        "name": node.name,
        "next_state_after_reboot": "invalid",
        "address": c.addr,
        "hostname": c.hostname,
        "state": "allocated" if base is NodeBase.ALLOCATED else base.value.lower(),
        "state_flags": [name for flag, name in _FLAG_NAMES if node.has(flag)],
        "next_state_after_reboot_flags": [],
        "operating_system": NODE_OS,
        "owner": None,
        "partitions": list(node.partitions),
        "port": c.port,
        "real_memory": c.real_memory_mb,
        "reason": node.reason or "",
        "reason_changed_at": node.reason_s or 0,
        "reason_set_by_user": node.reason_user,
        "slurmd_start_time": node.slurmd_start_s or 0,
        "sockets": c.boards * c.sockets_per_board,
        "threads": c.threads_per_core,
        "temporary_disk": c.tmp_disk_mb,
        "weight": c.weight,
        "tres": tres,
        "slurmd_version": SLURM_VERSION,
        "alloc_memory": 0,
        "alloc_cpus": node.cpus_alloc,
        "idle_cpus": c.cpus - node.cpus_alloc,
        "tres_used": f"cpu={node.cpus_alloc}" if node.cpus_alloc else None,
        "tres_weighted": float(node.cpus_alloc),
    }
