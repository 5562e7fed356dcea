"""The one link from services to Slurm state: what slurmctld can see of the daemons.

`Cluster` (cluster.py) keeps three facts the service layer decides: whether slurmctld runs
(`set_slurmctld`), which nodes have no munged (`munge_down`, so clients there fail to sign), and
whether each node's slurmd answers (`start_slurmd`/`stop_slurmd`; a silent node turns `*`, then DOWN
after SlurmdTimeout, and comes back with ReturnToService). `controller_unreachable` lists nodes with no
route to SlurmctldHost. `sync_cluster` pushes the service layer's
answers into it on every change, so neither side reaches into the other's state.
"""

from __future__ import annotations

from hpcgym.controller.cluster import Cluster
from hpcgym.controller.services import nhc
from hpcgym.controller.services.manager import ServiceManager
from hpcgym.controller.services.slurm import MUNGE, SLURMCTLD
from hpcgym.controller.services.slurmdbd import is_serving


def sync_cluster(cluster: Cluster, services: ServiceManager) -> None:
    """Bring `cluster`'s view of slurmctld, munged and every slurmd in line with `services`.

    Call it after every tool request and before `Cluster.advance()` on every tick.
    """
    services.sync()
    ctl_up = services.is_active(services.controller_host, SLURMCTLD)
    if ctl_up != cluster.slurmctld_up:
        cluster.set_slurmctld(ctl_up)
    cluster.munge_down = {name for name in services.nodes if not services.is_active(name, MUNGE)}
    cluster.controller_unreachable = {n for n in services.nodes if not services.can_reach_controller(n)}
    for name, node in cluster.nodes.items():
        registered = name in services.nodes and services.is_registered_as_synced(name)
        if registered and not node.slurmd_up:
            cluster.start_slurmd(name)
        elif not registered and node.slurmd_up:
            cluster.stop_slurmd(name)
    # Accounting: slurmctld's agent delivers its queue only while slurmdbd (on DbdHost) serves.
    cluster.accounting.sync(cluster, is_serving(services, services.controller_host))
    # slurmd runs HealthCheckProgram (NHC) on its interval; it drains and resumes through scontrol.
    nhc.run_due(cluster, services)
