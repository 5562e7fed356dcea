"""One (scenario, seed, commands) is one episode in every entry point, byte for byte.

`invoke eval` drives `Incident` directly; gymnasium's `EnterpriseHPC-v0`, the OpenEnv environment
and `hpcgym exec --scenario` are views of it. Each case plays the same commands through all four and
compares what the agent saw (the alert, then every command's output), the rewards and the seed.
"""

from __future__ import annotations

import json

import gymnasium
import pytest

import hpcgym  # noqa: F401 - registers EnterpriseHPC-v0
from hpcgym.episode.pool import EpisodePool
from hpcgym.interfaces.cli import main
from hpcgym.interfaces.openenv.models import HpcAction
from hpcgym.interfaces.openenv.server.environment import HpcEnvironment, ServerBackend
from hpcgym.interfaces.session import prompt
from hpcgym.interfaces.task import default_registry
from hpcgym.scenarios.difficulty import Difficulty
from hpcgym.scenarios.incident import Incident

SCENARIOS = ("hpc_munge", "hpc_slurmctld_down", "hpc_drain_forgotten")
SEEDS = (800, 901, 999)
# Time stamps and the seeded fault both show in what the agent reads before the gold fix.
PROBES = ("date", "sinfo -R", "ls -l /etc/munge")


def first_observation(alert: str) -> str:
    # The interfaces show the alert, then the login node's first prompt.
    return f"{alert.rstrip()}\n\n{prompt('login01')}"


def type_until_done(incident: Incident, commands: list[str]) -> tuple[list[str], list[float], list[str]]:
    """Type `commands` until the episode ends: what it showed (the first observation, then each
    command's output), each step's reward, and the commands it took."""
    seen, rewards, typed = [first_observation(incident.alert)], [], []
    for command in commands:
        if incident.done:
            break
        step = incident.step(command)
        seen.append(step.result.output)
        rewards.append(step.reward)
        typed.append(command)
    return seen, rewards, typed


def play_incident(runtime, scenario: str, seed: int) -> tuple[list[str], list[float], list[str]]:
    with Incident(runtime, scenario, seed) as incident:
        seen, rewards, typed = type_until_done(incident, [*PROBES, *incident.gold])
        assert incident.solved, (typed, incident.info())
        assert incident.info()["seed"] == seed
        return seen, rewards, typed


def play_gym(env, scenario: str, seed: int, commands: list[str]) -> tuple[list[str], list[float]]:
    obs, info = env.reset(seed=seed, options={"scenario": scenario})
    assert (info["seed"], info["scenario"]) == (seed, scenario)
    seen, rewards = [obs], []
    for command in commands:
        obs, reward, terminated, truncated, info = env.step(command)
        seen.append(obs)
        rewards.append(float(reward))
        assert info["seed"] == seed
    assert terminated and info["solved"] and not truncated
    return seen, rewards


def play_openenv(environment, scenario: str, seed: int, commands: list[str]) -> tuple[list[str], list[float]]:
    start = environment.reset(seed=seed, scenario=scenario)
    assert environment.state.seed == seed
    seen, rewards = [start.output], []
    for command in commands:
        observation = environment.step(HpcAction(command=command))
        seen.append(observation.output)
        rewards.append(float(observation.reward))
    assert observation.done and observation.solved
    return seen, rewards


def play_exec(
    capsys, images_dir, scenario: str, seed: int, commands: list[str]
) -> tuple[list[str], list[float]]:
    argv = ["exec", "--images", str(images_dir), "--scenario", scenario, "--seed", str(seed), "--json"]
    assert main([*argv, "--", *commands]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["seed"], record["scenario"], record["grade"]["solved"]) == (seed, scenario, True)
    seen = [first_observation(record["alert"])] + [step["output"] for step in record["steps"]]
    return seen, [step["reward"] for step in record["steps"]]


@pytest.fixture(scope="module")
def gym_env(runtime):
    env = gymnasium.make("EnterpriseHPC-v0", runtime=runtime, pool_size=0)
    yield env
    env.close()


@pytest.fixture(scope="module")
def openenv_environment(runtime):
    with EpisodePool(runtime, 0) as pool:
        environment = HpcEnvironment(ServerBackend(pool, default_registry()))
        yield environment
        environment.close()


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_entry_point_plays_one_episode(
    capsys, runtime, images_dir, gym_env, openenv_environment, scenario, seed
):
    seen, rewards, commands = play_incident(runtime, scenario, seed)
    assert play_gym(gym_env, scenario, seed, commands) == (seen, rewards)
    assert play_openenv(openenv_environment, scenario, seed, commands) == (seen, rewards)
    assert play_exec(capsys, images_dir, scenario, seed, commands) == (seen, rewards)


def test_a_difficulty_is_one_episode_in_every_entry_point(
    capsys, runtime, images_dir, gym_env, openenv_environment
):
    """The knobs travel with the seed: the same (scenario, seed, difficulty) is the same bytes."""
    scenario, seed, knobs = "hpc_slurmd_down", 801, "red_herrings=2,chained=1,clue=deep"
    with Incident(runtime, scenario, seed, difficulty=Difficulty.parse(knobs)) as incident:
        assert incident.info()["difficulty"] == knobs
        planned = [*PROBES, "journalctl -u slurmctld --no-pager | tail -4", *incident.gold]
        seen, rewards, commands = type_until_done(incident, planned)
        assert incident.solved
    obs, info = gym_env.reset(seed=seed, options={"scenario": scenario, "difficulty": knobs})
    assert info["difficulty"] == knobs
    gym_seen, gym_rewards = [obs], []
    for command in commands:
        obs, reward, *_ = gym_env.step(command)
        gym_seen.append(obs)
        gym_rewards.append(float(reward))
    assert (gym_seen, gym_rewards) == (seen, rewards)
    start = openenv_environment.reset(
        seed=seed, scenario=scenario, difficulty=Difficulty.parse(knobs).model_dump()
    )
    assert openenv_environment.state.difficulty == knobs
    env_seen = [start.output] + [openenv_environment.step(HpcAction(command=c)).output for c in commands]
    assert env_seen == seen
    argv = ["exec", "--images", str(images_dir), "--scenario", scenario, "--seed", str(seed)]
    assert main([*argv, "--difficulty", knobs, "--json", "--", *commands]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["difficulty"] == knobs
    assert [first_observation(record["alert"])] + [s["output"] for s in record["steps"]] == seen
