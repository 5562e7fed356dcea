"""EnterpriseHPC-v0 through gymnasium: the env checker, determinism, terminated vs truncated, vectors."""

from __future__ import annotations

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import hpcgym  # noqa: F401 - registers EnterpriseHPC-v0
from hpcgym.errors import HpcgymError, ScenarioError
from hpcgym.interfaces.task import EXPLORE, ExploreTask, Grade, TaskRegistry


class FixTask:
    """Solved by `touch /root/fixed`, failed by `reboot`: enough to tell the end states apart."""

    id = "fix"
    max_steps = 4

    def reset(self, episode, seed):
        self.seed = seed
        return f"ALERT seed={seed}"

    def grade(self, episode, command, result):
        fixed = episode.step("test -e /root/fixed").exit_code == 0 if command.startswith("touch") else False
        return Grade(
            reward=1.0 if fixed else 0.0,
            solved=fixed,
            failed=command == "reboot",
            components={"fixed": float(fixed)},
        )


REGISTRY = TaskRegistry({EXPLORE: ExploreTask, "fix": FixTask})


@pytest.fixture(scope="module")
def env(runtime):
    env = gymnasium.make("EnterpriseHPC-v0", runtime=runtime, registry=REGISTRY, render_mode="ansi")
    yield env
    env.close()


def test_gymnasium_env_checker_passes(images_dir):
    # The user's path: the env makes (and closes) its own runtime, so `spec.make` can remake it.
    env = gymnasium.make("EnterpriseHPC-v0", images_dir=images_dir, render_mode="ansi")
    try:
        check_env(env.unwrapped)
    finally:
        env.close()


def test_spaces_take_prompts_punctuation_and_whitespace(env):
    obs, _ = env.reset(seed=0, options={"scenario": EXPLORE})
    assert obs.endswith("[root@login01 ~]# ")
    assert env.observation_space.contains(obs)
    assert env.action_space.contains("sinfo -o '%N %T' | grep -c idle; echo $?\n")
    assert env.observation_space.max_length >= env.unwrapped.runtime.config.max_output_bytes
    assert len(repr(env.action_space)) < 90 and len(repr(env.observation_space)) < 90
    command = env.action_space.sample()
    assert env.action_space.contains(command) and command.isprintable()
    _, _, _, _, info = env.step(command)  # a sampled command is one an operator could type here
    assert info["step"] == 1


def test_same_seed_and_commands_give_identical_observations(env):
    def run(seed):
        obs, info = env.reset(seed=seed, options={"scenario": EXPLORE})
        seen = [obs, info["seed"], info["now_s"]]
        for command in ("sinfo", "echo $((6 * 7))", "scontrol show node compute-01 | head -3"):
            obs, *_ = env.step(command)
            seen.append(obs)
        return seen

    assert run(11) == run(11)
    assert run(11)[1:3] != run(12)[1:3]  # the seed reaches the scenario and the clock


def test_the_seed_given_is_the_episodes_seed(env):
    _, info = env.reset(seed=800, options={"scenario": EXPLORE})
    assert info["seed"] == 800
    _, info = env.reset(options={"scenario": EXPLORE})
    assert 0 <= info["seed"] < 800  # an unseeded reset plays a train seed


def test_solved_terminates_with_reward_and_components(env):
    obs, info = env.reset(seed=1, options={"scenario": "fix"})
    assert obs.startswith("ALERT seed=") and info["scenario"] == "fix"
    obs, reward, terminated, truncated, info = env.step("ls /root/fixed")
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert info["exit_code"] == 2 and "No such file" in obs
    _, reward, terminated, truncated, info = env.step("touch /root/fixed")
    assert (reward, terminated, truncated, info["solved"]) == (1.0, True, False, True)
    assert info["reward_components"] == {"fixed": 1.0}
    with pytest.raises(HpcgymError, match="episode is over"):
        env.step("true")


def test_unsafe_action_terminates_unsolved(env):
    env.reset(seed=1, options={"scenario": "fix"})
    _, _, terminated, truncated, info = env.step("reboot")
    assert terminated and not truncated and info["failed"] and not info["solved"]


def test_step_budget_truncates(env):
    env.reset(seed=2, options={"scenario": "fix"})
    ends = [env.step("true")[2:4] for _ in range(FixTask.max_steps)]
    assert ends == [(False, False)] * 3 + [(False, True)]


def test_info_render_and_exit_from_the_login_node(env):
    env.reset(seed=3, options={"scenario": EXPLORE})
    _, _, _, _, info = env.step("ssh compute-02")
    assert (info["command_node"], info["node"]) == ("login01", "compute-02")
    _, _, _, _, info = env.step("false")
    assert info["exit_code"] == 1 and info["timed_out"] is False and info["output_truncated"] is False
    env.step("exit")
    _, _, terminated, _, info = env.step("exit")
    assert terminated and info["ended"]
    transcript = env.render()
    assert "[root@compute-02 ~]# false\n" in transcript and "[root@login01 ~]# exit\n" in transcript


def test_unknown_scenario_is_refused(env, runtime):
    with pytest.raises(ScenarioError):
        env.reset(options={"scenario": "hpc_nope"})
    with pytest.raises(ScenarioError):
        gymnasium.make("EnterpriseHPC-v0", runtime=runtime, scenarios=["hpc_nope"])


def test_every_reset_is_a_fresh_cluster(env):
    env.reset(seed=4, options={"scenario": EXPLORE})
    env.step("touch /root/leftover")
    for _ in range(3):
        env.reset()
        assert env.step("test -e /root/leftover")[4]["exit_code"] == 1


def test_vector_env_runs_isolated_envs(runtime):
    envs = gymnasium.make_vec(
        "EnterpriseHPC-v0", num_envs=2, vectorization_mode="sync", runtime=runtime, pool_size=0
    )
    try:
        obs, info = envs.reset(seed=5)
        assert len(obs) == 2 and all(o.endswith("# ") for o in obs)
        envs.step(["touch /root/only-here", "true"])
        *_, info = envs.step(["ls /root/only-here", "ls /root/only-here"])
        assert list(info["exit_code"]) == [0, 2]
    finally:
        envs.close()


def test_envs_without_a_runtime_share_one_closed_with_the_last(images_dir):
    from hpcgym.interfaces.gym import _RUNTIMES

    first = gymnasium.make("EnterpriseHPC-v0", images_dir=images_dir, pool_size=0)
    second = gymnasium.make("EnterpriseHPC-v0", images_dir=images_dir, pool_size=0)
    try:
        assert first.unwrapped.runtime is second.unwrapped.runtime
        first.close()
        second.reset(seed=0)
        assert second.step("hostname")[0] == "login01\n"
    finally:
        first.close()
        second.close()
    assert _RUNTIMES._entries == {}
