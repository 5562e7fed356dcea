"""HpcToolEnv against real episodes, and dataset rows from the scenario splits (no torch needed)."""

from __future__ import annotations

import inspect

import pytest

from training.dataset import build_rows, task_of
from training.env import EnvSettings, EpisodeOverError, HpcToolEnv, cut_text, estimate_tokens


def test_rows_fix_scenario_and_seed_from_the_splits() -> None:
    train = build_rows(["hpc_munge", "hpc_outage"], "train", seeds_per_scenario=3)
    test = build_rows(["hpc_munge"], "test", seeds_per_scenario=2)
    assert sorted((r["scenario"], r["seed"]) for r in train) == [
        (s, seed) for s in ("hpc_munge", "hpc_outage") for seed in range(3)
    ]
    assert [r["seed"] for r in test] == [800, 801]
    for row in train + test:
        assert task_of(row["prompt"]) == (row["scenario"], row["seed"])


def test_curriculum_orders_by_tier_then_difficulty_rung() -> None:
    from hpcgym.scenarios.difficulty import LADDER, Difficulty

    rows = build_rows(["all"], "train", seeds_per_scenario=2, order="curriculum")
    stages = [row["tier"] + LADDER.index(Difficulty.parse(row["difficulty"])) for row in rows]
    assert stages == sorted(stages)
    assert rows[0]["tier"] == 1 and len({row["scenario"] for row in rows}) > 1


def test_only_reset_get_reward_and_run_are_public() -> None:
    public = {
        name for name, _ in inspect.getmembers(HpcToolEnv, inspect.isfunction) if not name.startswith("_")
    }
    assert public == {"reset", "get_reward", "run"}


def test_cut_text_keeps_head_and_tail() -> None:
    text = "".join(f"line {i}\n" for i in range(1000))
    cut = cut_text(text, 200)
    assert len(cut) <= 200 and cut.startswith("line 0\n") and cut.endswith("line 999\n")


@pytest.fixture
def row() -> dict:
    return build_rows(["hpc_munge"], "train", seeds_per_scenario=1)[0]


@pytest.mark.slow
def test_one_row_one_start_state_and_real_tool_output(episode_images, row) -> None:
    envs = [HpcToolEnv(EnvSettings(images_dir=str(episode_images), max_steps=3)) for _ in range(2)]
    alerts = [env.reset(**row) for env in envs]
    assert alerts[0] == alerts[1] and "[root@login01 ~]#" in alerts[0]
    outputs = [env.run("hostname; sinfo -h -o '%N %t' -N") for env in envs]
    assert outputs[0] == outputs[1] and outputs[0].startswith("login01")
    failed = envs[0].run("false")
    assert failed.endswith("[exit status 1]")
    last = envs[0].run("hostname")
    assert "episode is over" in last
    with pytest.raises(EpisodeOverError, match="episode is over"):
        envs[0].run("hostname")
    reward = envs[0].get_reward()
    assert reward == pytest.approx(sum(step.reward for step in envs[0]._stats().steps))
    assert reward < 0  # three commands, no progress: the step cost
    # One command, then the model stopped: an unsolved end is charged the whole budget (3 steps).
    assert envs[1].get_reward() == pytest.approx(-0.03)


@pytest.mark.slow
def test_tool_output_fits_the_completion_budget(episode_images, row) -> None:
    env = HpcToolEnv(
        EnvSettings(images_dir=str(episode_images), max_output_chars=10_000, max_completion_tokens=300)
    )
    env.reset(**row)
    first = env.run("seq 1 5000")
    assert estimate_tokens(first) <= 300 and first.startswith("1\n") and "output cut" in first
    second = env.run("seq 1 5000")
    assert estimate_tokens(first) + estimate_tokens(second) <= 300
    env.get_reward()


@pytest.mark.slow
def test_a_failed_pool_is_replaced_and_a_broken_step_is_unscored(episode_images, row, monkeypatch) -> None:
    from hpcgym.errors import SandboxError
    from training import backends

    settings = EnvSettings(images_dir=str(episode_images), max_steps=3)
    env = HpcToolEnv(settings)
    env.reset(**row)
    pool, _ = backends._LOCAL.get(str(episode_images), settings.pool_size, settings.step_timeout_s)
    pool.failure = SandboxError("a daemon would not start")  # what the pool's thread records
    env.run("hostname")
    env.get_reward()
    env.reset(**row)  # a fresh pool serves the next episode
    assert (
        backends._LOCAL.get(str(episode_images), settings.pool_size, settings.step_timeout_s)[0] is not pool
    )
    assert env.run("hostname").startswith("login01")

    def broken(command: str) -> None:
        raise SandboxError("the node's shell died")

    monkeypatch.setattr(env._backend.session, "step", broken)  # type: ignore[union-attr]
    with pytest.raises(backends.EnvironmentUnavailable):
        env.run("hostname")
    assert env.get_reward() is None
