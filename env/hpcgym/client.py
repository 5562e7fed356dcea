"""The names OpenEnv's discovery imports: `AutoEnv.from_env("hpcgym", base_url=...)`.

OpenEnv 0.10 finds environments among installed distributions named `openenv-*` (this one is
`openenv-hpcgym`), reads the module's `openenv.yaml` and takes the client, action and observation
classes from `<module>.client`. The client it infers from the name `hpcgym` is `HpcgymEnv`.
"""

from __future__ import annotations

from hpcgym.interfaces.openenv.client import HpcEnvClient
from hpcgym.interfaces.openenv.models import HpcAction, HpcObservation, HpcState

HpcgymEnv = HpcEnvClient

__all__ = ["HpcAction", "HpcEnvClient", "HpcObservation", "HpcState", "HpcgymEnv"]
