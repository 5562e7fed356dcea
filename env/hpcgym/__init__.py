"""hpcgym: reproducible HPC cluster images and an RL environment built on them."""

__version__ = "0.1.0"


def _register_envs() -> None:
    # Lazy: gymnasium imports hpcgym.interfaces.gym (and the runtime) only on gymnasium.make.
    from gymnasium.envs.registration import register, registry

    if "EnterpriseHPC-v0" not in registry:
        register(id="EnterpriseHPC-v0", entry_point="hpcgym.interfaces.gym:EnterpriseHPCEnv")


_register_envs()
