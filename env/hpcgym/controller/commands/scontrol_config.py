"""`scontrol show config`: the 22.05 layout with this cluster's slurm.conf values.

Keys slurm.conf sets are substituted (keeping the unit Slurm appends, such as ` sec`); a few lines
are computed from live state (BOOT_TIME, NEXT_JOB_ID, MaxNodeCount); the rest are 22.05 defaults.
"""

from __future__ import annotations

import re

from hpcgym.controller.commands.config_template import CONFIG_TEMPLATE
from hpcgym.controller.slurmctld import SlurmState
from hpcgym.controller.timefmt import format_iso

_LINE = re.compile(
    r"^(?P<key>\S+?)(?P<gap>\s*)= (?P<value>.*?)(?P<unit> sec| min| usec| percent| nodes/min)?$"
)
# Values Slurm prints in upper case whatever slurm.conf says.
_UPPER = {"selecttypeparameters"}


def render(cluster: SlurmState, users: dict[str, int]) -> str:
    conf = cluster.conf
    options = conf.options
    live = {
        "BOOT_TIME": format_iso(cluster.slurmctld_start_s),
        "NEXT_JOB_ID": str(cluster.next_job_id),
        "MaxNodeCount": str(len(cluster.nodes)),
        "ClusterName": conf.cluster_name,
        "SlurmctldHost[0]": options.get("slurmctldhost", conf.controller_host),
    }
    lines = [f"Configuration data as of {format_iso(cluster.now_s)}\n"]
    for line in CONFIG_TEMPLATE.splitlines(keepends=True):
        match = _LINE.match(line.rstrip("\n"))
        if match is None:
            lines.append(line)
            continue
        key, unit = match.group("key"), match.group("unit") or ""
        value = live.get(key)
        if value is None and key.lower() in options:
            value = options[key.lower()]
            value = value.upper() if key.lower() in _UPPER else value
            if key in ("SlurmUser", "SlurmdUser"):
                value = f"{value}({users.get(value, 0)})"
        if value is None:
            lines.append(line)
        else:
            lines.append(f"{key}{match.group('gap')}= {value}{unit}\n")
    state = "UP" if cluster.slurmctld_up else "DOWN"
    lines.append(f"Slurmctld(primary) at {conf.controller_host} is {state}\n")
    return "".join(lines)
