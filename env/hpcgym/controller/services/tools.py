"""The service tools' entries for the controller's TOOLS table (program name -> `run`).

Listed here so the lead can merge them into `controller.TOOLS` in one line and so tests of this
room can dispatch like the controller does.
"""

from __future__ import annotations

from collections.abc import Callable

from hpcgym.controller.commands import (
    chronyc,
    curl,
    daemons,
    dmesg,
    dnf,
    hwinfo,
    ifupdown,
    ip,
    journalctl,
    mountcmds,
    munge,
    nhc,
    nvidia_smi,
    rpm,
    sudo,
    systemctl,
)
from hpcgym.controller.commands.base import Context, ToolReply

TOOLS: dict[str, Callable[[Context, list[str]], ToolReply]] = {
    "systemctl": systemctl.run,
    "journalctl": journalctl.run,
    "munge": munge.run_munge,
    "unmunge": munge.run_unmunge,
    "remunge": munge.run_remunge,
    "curl": curl.run,
    "ifup": ifupdown.run_ifup,
    "ifdown": ifupdown.run_ifdown,
    "ip": ip.run,
    "mount": mountcmds.run_mount,
    "umount": mountcmds.run_umount,
    "nvidia-smi": nvidia_smi.run,
    "munged": daemons.run_munged,
    "slurmd": daemons.run_slurmd,
    "slurmctld": daemons.run_slurmctld,
    # Node hardware (hardware.py): what the node has, not the host.
    "nproc": hwinfo.run_nproc,
    "free": hwinfo.run_free,
    "lscpu": hwinfo.run_lscpu,
    "nhc": nhc.run,
    "httpd": daemons.run_httpd,
    "apachectl": daemons.run_apachectl,
    "chronyc": chronyc.run,
    "timedatectl": chronyc.run_timedatectl,
    "dmesg": dmesg.run,
    # Family d: packages (services/packages.py).
    "rpm": rpm.run,
    "dnf": dnf.run,
    # Family d: users (root runs commands as a user).
    "sudo": sudo.run,
}
