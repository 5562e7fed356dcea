"""Env-server fleets on Slurm: past one machine, OpenEnv servers run as a Slurm job array.

`config` reads the named, versioned fleet configs (`configs/*.yaml`); `launcher` renders the sbatch
scripts from `templates/`, submits the server array and the training job that depends on it, reports
status and tears everything down; `serve` is what each array task runs: it starts one server and
announces it in the launch's coordination directory only once `/health` passes. On the client side,
`pool` spreads sessions over the fleet's URLs and survives a server going away.

The verbs `invoke fleet-*` call are exported here: `load_config` and `with_overrides` make the config,
`plan_up`/`up`, `plan_train`/`train`, `status`/`status_table` and `down` act on a launch found by
`find_coord`.
"""

from hpcgym.fleet.config import FleetConfig, FleetError, load_config
from hpcgym.fleet.launcher import (
    Paths,
    down,
    find_coord,
    new_launch_id,
    plan_train,
    plan_up,
    status,
    status_table,
    train,
    up,
    with_overrides,
)

__all__ = [
    "FleetConfig",
    "FleetError",
    "Paths",
    "down",
    "find_coord",
    "load_config",
    "new_launch_id",
    "plan_train",
    "plan_up",
    "status",
    "status_table",
    "train",
    "up",
    "with_overrides",
]
