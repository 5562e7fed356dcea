"""The one table of tools a node may call: program name -> implementation.

Every name here is a program the images install as a hard link to hpcgym-client (stubs/tools.list,
which setup-node.sh reads to make the links), and every program there has its entry here or, for
ssh alone, in RUNTIME_TOOLS; tests/controller/test_tools_table.py holds the two to each other.
Explicit on purpose: one place to see what the cluster simulates.
"""

from __future__ import annotations

from collections.abc import Callable

from hpcgym.controller.commands import (
    chronyc,
    curl,
    daemons,
    date,
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
    ping,
    rpm,
    sacct,
    sacctmgr,
    sbatch,
    scancel,
    scontrol,
    sdiag,
    sinfo,
    squeue,
    srun,
    sudo,
    systemctl,
    uptime,
)
from hpcgym.controller.commands.base import Context, ToolReply

Tool = Callable[[Context, list[str]], ToolReply]

# The Slurm clients share one precondition: the node's slurm.conf (dispatch.py checks it first).
SLURM_CLIENTS = frozenset(
    {"sinfo", "squeue", "scontrol", "sbatch", "srun", "scancel", "sacct", "sacctmgr", "sdiag"}
)

# Linked like the others but answered by the runtime before the controller sees them: ssh moves the
# agent's shell to another node (runtime/cluster.py, Cluster.dispatch), which only the runtime can.
RUNTIME_TOOLS = frozenset({"ssh"})

TOOLS: dict[str, Tool] = {
    # Slurm's clients; sacctmgr and sdiag are slurmdbd's client and slurmctld's statistics.
    "sinfo": sinfo.run,
    "squeue": squeue.run,
    "scontrol": scontrol.run,
    "sbatch": sbatch.run,
    "srun": srun.run,
    "scancel": scancel.run,
    "sacct": sacct.run,
    "sacctmgr": sacctmgr.run,
    "sdiag": sdiag.run,
    # The services' tools (services/): units, logs, munge, the portal, the network, mounts, GPUs.
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
    # The daemons themselves, run by hand (commands/daemons.py).
    "munged": daemons.run_munged,
    "slurmd": daemons.run_slurmd,
    "slurmctld": daemons.run_slurmctld,
    "slurmdbd": daemons.run_slurmdbd,
    "mariadbd": daemons.run_mariadbd,
    "httpd": daemons.run_httpd,
    "apachectl": daemons.run_apachectl,
    # Node hardware (hardware.py): what the node has, not the host; and the health check slurmd runs.
    "nproc": hwinfo.run_nproc,
    "free": hwinfo.run_free,
    "lscpu": hwinfo.run_lscpu,
    "nhc": nhc.run,
    "dmesg": dmesg.run,
    # Base-system programs whose real versions would show the host or the sandbox: `date` reads the
    # episode's virtual clock, `ping` the simulated network (a sandbox has loopback only), `uptime`
    # the node's own boot on the virtual clock, chronyc and timedatectl the node's time service.
    "date": date.run,
    "ping": ping.run,
    "uptime": uptime.run,
    "chronyc": chronyc.run,
    "timedatectl": chronyc.run_timedatectl,
    # Family d: packages (services/packages.py), and root running commands as a user.
    "rpm": rpm.run,
    "dnf": dnf.run,
    "sudo": sudo.run,
}
