"""The cluster's services: systemd units per node, their journals, the daemons' real start-up checks.

Public surface: `ServiceManager` (one per episode, built with the controller: the peers, each node's
`systemd`, `network`, `clocks`, `hardware`, `munge`, that the service tools act on; the Slurm side asks
it `is_slurmd_registered(node)`), `NodeAccess` (what the runtime implements so that daemons read the
node's real files and run as real processes), `MemoryNodeAccess` (the in-memory stand-in), and
`sync_cluster` (pushes slurmctld, munged and slurmd state into the Slurm side).
"""

from __future__ import annotations

from hpcgym.controller.services.access import FileStat, MemoryNodeAccess, NodeAccess
from hpcgym.controller.services.manager import ServiceManager
from hpcgym.controller.services.slurm import RegistrationProblem
from hpcgym.controller.services.slurmlink import sync_cluster
from hpcgym.controller.services.units import JobResult

__all__ = [
    "FileStat",
    "JobResult",
    "MemoryNodeAccess",
    "NodeAccess",
    "RegistrationProblem",
    "ServiceManager",
    "sync_cluster",
]
