"""The wire types of EnterpriseHPC over OpenEnv: one action (a command line), its observation, the state.

Pydantic models with `extra="forbid"` (inherited from OpenEnv's bases), shared by server and client.
"""

from __future__ import annotations

from openenv.core.env_server.types import Action, Observation, State
from pydantic import ConfigDict, Field

ENV_NAME = "EnterpriseHPC"
MAX_COMMAND_CHARS = 16 * 1024


class HpcAction(Action):
    """One command line typed at the agent's prompt."""

    command: str = Field(..., max_length=MAX_COMMAND_CHARS, description="a bash command line")
    stop: bool = Field(
        default=False,
        description="end the episode here instead of typing `command` (charged as any unsolved end)",
    )


class HpcObservation(Observation):
    """What the terminal showed, plus where the episode stands.

    `done` is terminated or truncated; `reward` is the step's reward (None at reset). The alert and
    first prompt arrive as `output` at reset.
    """

    output: str = Field(default="", description="the command's output (stdout and stderr interleaved)")
    exit_code: int = Field(default=0, description="the command's exit status ($?)")
    node: str = Field(default="", description="the node the shell is on now")
    user: str = Field(default="root", description="whose shell it is now (su - alice makes it alice)")
    scenario: str | None = Field(default=None, description="the scenario id of this episode")
    step: int = Field(default=0, ge=0, description="steps taken in this episode")
    max_steps: int = Field(default=0, ge=0, description="the step budget")
    terminated: bool = Field(default=False, description="solved, failed, or the login shell exited")
    truncated: bool = Field(default=False, description="the step budget ran out first")
    solved: bool = Field(default=False, description="the incident is resolved")
    failed: bool = Field(default=False, description="an unsafe or unrecoverable action ended the episode")
    timed_out: bool = Field(default=False, description="the command hit its time limit and was stopped")
    output_truncated: bool = Field(default=False, description="the output was cut to its head and tail")
    reward_components: dict[str, float] = Field(default_factory=dict, description="named parts of the reward")
    seed: int | None = Field(default=None, description="the episode's seed")
    outcome: str = Field(default="running", description="running, solved, stopped, truncated, harmful, ...")
    unsafe: list[str] = Field(default_factory=list, description="every unsafe action or harm so far, why")
    state_score: float = Field(
        default=0.0, description="the share of the success condition that holds now (0 start, 1 solved)"
    )


class HpcState(State):
    """The session's episode: its id and step count (OpenEnv's), scenario, seed, node and clock."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # OpenEnv's State allows extras

    scenario: str | None = Field(default=None, description="the scenario id")
    seed: int | None = Field(default=None, description="the scenario's seed")
    difficulty: str | None = Field(
        default=None, description="the difficulty knobs (red_herrings=..,chained=..,clue=..)"
    )
    node: str | None = Field(default=None, description="the node the shell is on")
    user: str | None = Field(default=None, description="whose shell it is (root, or the user su made it)")
    max_steps: int = Field(default=0, ge=0, description="the step budget")
    now_s: int | None = Field(default=None, description="the episode's virtual time (epoch seconds)")
    done: bool = Field(default=False, description="the episode is over")
    solved: bool = Field(default=False, description="the incident was resolved")
    infra_failure: str | None = Field(
        default=None,
        description="why the last episode was discarded as an infrastructure failure (None if it was not)",
    )
