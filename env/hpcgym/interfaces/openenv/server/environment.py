"""The OpenEnv `Environment`: one `TaskSession` (a view of one `Incident`) per WebSocket session.

OpenEnv makes an instance per session (and a short-lived one for each stateless HTTP call), so the
constructor only stores the `Backend`: the runtime, the episode pool and the scenario registry that
every session of the server shares. Episodes come from the pool at `reset`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from openenv.core.env_server.interfaces import Environment
from openenv.core.env_server.types import EnvironmentMetadata

import hpcgym
from hpcgym.episode.pool import EpisodePool
from hpcgym.interfaces.openenv.models import ENV_NAME, HpcAction, HpcObservation, HpcState
from hpcgym.interfaces.session import TaskSession, Transition
from hpcgym.interfaces.task import TaskRegistry


@dataclass(frozen=True)
class ServerBackend:
    """What every session of one server shares."""

    pool: EpisodePool
    registry: TaskRegistry
    scenarios: tuple[str, ...] | None = None
    max_steps: int | None = None
    max_chars: int = 16 * 1024 + 256


def finalize_observation(transition: Transition, *, at_reset: bool = False) -> HpcObservation:
    info = transition.info
    return HpcObservation(
        output=transition.observation,
        exit_code=info.get("exit_code", 0),
        node=info.get("node") or "",
        user=info.get("user") or "root",
        scenario=info.get("scenario"),
        step=info.get("step", 0),
        max_steps=info.get("max_steps", 0),
        terminated=transition.terminated,
        truncated=transition.truncated,
        solved=info.get("solved", False),
        failed=info.get("failed", False),
        timed_out=info.get("timed_out", False),
        output_truncated=info.get("output_truncated", False),
        reward_components=info.get("reward_components", {}),
        seed=info.get("seed"),
        outcome=info.get("outcome", "running"),
        unsafe=list(info.get("unsafe", [])),
        state_score=float(info.get("state_score", 0.0)),
        done=transition.done,
        reward=None if at_reset else transition.reward,
    )


class HpcEnvironment(Environment[HpcAction, HpcObservation, HpcState]):
    """EnterpriseHPC for one OpenEnv session.

    Args:
        backend: the server's shared runtime pool and scenario registry.
    """

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, backend: ServerBackend) -> None:
        super().__init__()
        self.session = TaskSession(
            backend.pool, backend.registry, backend.scenarios, backend.max_steps, backend.max_chars
        )
        self.episode_id: str | None = None

    def reset(
        self,
        seed: int | None = None,
        episode_id: str | None = None,
        scenario: str | None = None,
        max_steps: int | None = None,
        difficulty: dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> HpcObservation:
        """Start a new episode on a fresh cluster.

        Args:
            seed: the episode's seed (one seed, one start state: the members of a GRPO group pass
                the same scenario and seed), as gym's `reset(seed=...)` and `invoke eval` take it;
                it picks the scenario unless one is given. None: one drawn from the train range.
            episode_id: a name for the episode (default: a new UUID).
            scenario: the scenario id (default: drawn with `seed`).
            max_steps: this episode's step budget (default: the server's, else the scenario's), so a
                remote trainer's episode is charged as its local one would be.
            difficulty: the knobs (`{"red_herrings": 1, "chained": 0, "clue": "deep"}` or the text
                `"red_herrings=1,clue=deep"`; see hpcgym.scenarios.difficulty); default as written.
            **kwargs: refused (OpenEnv passes every reset field through).

        Raises:
            ScenarioError: unknown scenario id.
        """
        if kwargs:
            raise ValueError(
                f"unknown reset arguments {sorted(kwargs)}; "
                "use seed, episode_id, scenario, max_steps, difficulty"
            )
        if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
            raise ValueError(f"max_steps must be a positive integer, not {max_steps!r}")
        start = self.session.reset(seed, scenario, max_steps=max_steps, difficulty=difficulty)
        self.episode_id = episode_id or str(uuid.uuid4())
        return finalize_observation(start, at_reset=True)

    def step(self, action: HpcAction, timeout_s: float | None = None, **kwargs: Any) -> HpcObservation:
        """Type the action's command at the prompt (or, with `stop`, end the episode there).

        The per-command time limit is the server's.
        """
        if action.stop:
            return finalize_observation(self.session.finish())
        return finalize_observation(self.session.step(action.command))

    @property
    def state(self) -> HpcState:
        info = self.session.info()
        return HpcState(
            episode_id=self.episode_id,
            step_count=self.session.steps,
            scenario=info["scenario"],
            seed=info["seed"],
            difficulty=info.get("difficulty"),
            node=info["node"],
            user=info.get("user"),
            max_steps=info["max_steps"],
            now_s=info["now_s"],
            done=self.session.done,
            solved=self.session.solved,
            infra_failure=info["infra_failure"],
        )

    def get_metadata(self) -> EnvironmentMetadata:
        return EnvironmentMetadata(
            name=ENV_NAME,
            description=(
                "A small Rocky Linux HPC cluster (Slurm, munge, systemd, Open OnDemand) with one incident; "
                "the agent types bash commands to diagnose and repair it. One isolated cluster per session."
            ),
            version=hpcgym.__version__,
            author="hpcgym",
        )

    def close(self) -> None:
        """Hand this session's episode back to be closed in the background."""
        self.session.discard_episode()
