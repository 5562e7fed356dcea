"""The one link from services to Slurm state: what slurmctld can see of the daemons.

`SlurmState` (slurmctld.py) keeps three facts the service layer decides: whether slurmctld runs
(`set_slurmctld`), which nodes have no munged (`munge_down`, so clients there fail to sign), and
whether each node's slurmd answers (`start_slurmd`/`stop_slurmd`; a silent node turns `*`, then DOWN
after SlurmdTimeout, and comes back with ReturnToService). `controller_unreachable` lists nodes with no
route to SlurmctldHost. `sync_cluster` pushes the service layer's
answers into it on every change, so neither side reaches into the other's state.
"""

from __future__ import annotations

from dataclasses import replace

from hpcgym.controller.services import nhc
from hpcgym.controller.services.lifecycle import log_slurm_daemon
from hpcgym.controller.services.manager import ServiceManager
from hpcgym.controller.services.slurm import MUNGE, SLURMCTLD, SLURMD, SlurmdFacts, read_conf
from hpcgym.controller.services.slurmdbd import is_serving
from hpcgym.controller.slurmctld import SlurmState


def sync_cluster(cluster: SlurmState, services: ServiceManager) -> None:
    """Bring `cluster`'s view of slurmctld, munged and every slurmd in line with `services`.

    Call it after every tool request and before `SlurmState.advance()` on every tick.
    """
    services.systemd.sync()
    ctl_up = services.systemd.is_active(services.controller_host, SLURMCTLD)
    if ctl_up:
        _follow_slurmctld_start(cluster, services)
    if ctl_up != cluster.slurmctld_up:
        cluster.set_slurmctld(ctl_up)
    cluster.munge_down = {
        name for name in services.systemd.nodes if not services.systemd.is_active(name, MUNGE)
    }
    cluster.controller_unreachable = {
        n for n in services.systemd.nodes if not services.can_reach_controller(n)
    }
    for name, node in cluster.nodes.items():
        registered = name in services.systemd.nodes and services.systemd.is_registered_as_synced(name)
        # A slurmd that started since slurmctld last heard it register (restarted within one
        # request, so it never looked stopped) registers again, with what it finds now.
        runtime = (
            services.systemd.node_state(name).units.get(SLURMD) if name in services.systemd.nodes else None
        )
        slurmd = (runtime.facts(SlurmdFacts) if runtime is not None else None) or SlurmdFacts()
        unseen = runtime is not None and not slurmd.registered
        if registered and (unseen or not node.slurmd_up):
            cluster.start_slurmd(name)
        elif not registered and node.slurmd_up:
            cluster.stop_slurmd(name)
        if registered and runtime is not None:
            runtime.set_facts(replace(slurmd, registered=True))
    # Accounting: slurmctld's agent delivers its queue only while slurmdbd (on DbdHost) serves.
    cluster.accounting.sync(cluster, is_serving(services, services.controller_host))
    # slurmd runs HealthCheckProgram (NHC) on its interval; it drains and resumes through scontrol.
    nhc.run_due(cluster, services)
    _write_slurmctld_log(cluster, services)


def _follow_slurmctld_start(cluster: SlurmState, services: ServiceManager) -> None:
    # A slurmctld that started since the tables were built (stopped and started, or restarted
    # within one request) recovers node and job state and reads slurm.conf afresh: node records
    # take the file's CPU counts only then (slurm.conf(5), NODE CONFIGURATION: changing a node's
    # processor count needs slurmctld restarted). The first one seen is the one the tables began with.
    runtime = services.systemd.node_state(services.controller_host).units.get(SLURMCTLD)
    instance = str(runtime.main_pid) if runtime is not None and runtime.main_pid else None
    if instance is None or instance == cluster.slurmctld_instance:
        return
    first = cluster.slurmctld_instance is None
    cluster.slurmctld_instance = instance
    if first:
        return
    if cluster.slurmctld_up:
        cluster.set_slurmctld(False)
    cluster.set_slurmctld(True)
    conf = read_conf(services, services.controller_host)
    if conf is not None:
        cluster.rebuild(conf)


def _write_slurmctld_log(cluster: SlurmState, services: ServiceManager) -> None:
    lines, cluster.log_lines = cluster.log_lines, []
    for at_s, text in lines:
        log_slurm_daemon(
            services, cluster.conf, cluster.slurm_user, services.controller_host, "slurmctld", text, at_s=at_s
        )
