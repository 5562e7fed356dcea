"""HpcToolEnv over OpenEnv servers: an episode survives its server going away, or is not scored."""

from __future__ import annotations

import pytest

from tests.training.conftest import env_server
from training.backends import EnvironmentUnavailable
from training.dataset import build_rows
from training.env import EnvSettings, HpcToolEnv

pytestmark = pytest.mark.slow


def test_a_server_going_away_moves_the_episode_and_the_last_one_unscores_it(tmp_path, episode_images) -> None:
    row = build_rows(["hpc_munge"], "train", seeds_per_scenario=1)[0]
    with (
        env_server(episode_images, tmp_path / "a.log", sessions=2) as a,
        env_server(episode_images, tmp_path / "b.log", sessions=2) as b,
    ):
        servers = {a.url: a, b.url: b}
        env = HpcToolEnv(EnvSettings(env_urls=(a.url, b.url), max_steps=10))
        local = HpcToolEnv(EnvSettings(images_dir=str(episode_images), max_steps=10))
        assert env.reset(**row) == local.reset(**row)
        commands = ["sinfo -N -h -o '%N %t'", "touch /root/marker", "ls /root; date"]
        for command in commands[:2]:
            assert env.run(command) == local.run(command)
        first = env._backend.url  # type: ignore[union-attr]
        servers[first].process.kill()
        servers[first].process.wait()
        # The next command runs on the other server, after a replay of the first two.
        assert env.run(commands[2]) == local.run(commands[2])
        assert "marker" in env._stats().steps[-1].output  # type: ignore[union-attr]
        assert env._backend.url != first  # type: ignore[union-attr]
        assert env.get_reward() == pytest.approx(local.get_reward())

        # With no server left, the rollout is unscorable (None), not a failure (0).
        env.reset(**row)
        env.run("hostname")
        for server in servers.values():
            server.process.kill()
            server.process.wait()
        with pytest.raises(EnvironmentUnavailable):
            env.run("hostname")
        assert env.get_reward() is None
        assert env._stats().infra_failed  # type: ignore[union-attr]
