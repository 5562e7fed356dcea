"""The per-episode cluster controller: simulated Slurm state and the tools that show and change it.

Public surface: `Controller` (build it from a slurm.conf, call `handle` per stub invocation and `tick`
per agent command), `ToolReply`, `TaskRequest`/`TaskResult` for srun's task runner, and `parse_slurm_conf`.
"""

from hpcgym.controller.commands.base import TaskRequest, TaskResult, ToolReply
from hpcgym.controller.dispatch import Controller
from hpcgym.controller.rpc import User
from hpcgym.controller.slurmconf import SlurmConf, load_slurm_conf, parse_slurm_conf
from hpcgym.controller.tools import TOOLS

__all__ = [
    "TOOLS",
    "Controller",
    "SlurmConf",
    "TaskRequest",
    "TaskResult",
    "ToolReply",
    "User",
    "load_slurm_conf",
    "parse_slurm_conf",
]
