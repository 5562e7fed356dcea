"""Faults inside the host side of an episode become clear errors, never hangs or wrong rewards.

Each test injects one fault into a live runtime and checks that the affected episode fails as an
infrastructure failure with a one-line reason (`info["infra_failure"]`), that the others go on, and
that nothing is left on the host once the runtime closes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hpcgym.controller import dispatch
from hpcgym.errors import ControllerError
from hpcgym.interfaces.gym import EnterpriseHPCEnv
from hpcgym.runtime import Runtime
from hpcgym.runtime.channel import WireReply
from tests.reliability.conftest import assert_nothing_left


def test_a_dead_channel_thread_fails_the_command_at_once_and_every_cluster_after(
    fresh_runtime: Runtime, scratch_dir: Path
) -> None:
    first = fresh_runtime.new_cluster(compute_nodes=["compute-01"])
    second = fresh_runtime.new_cluster(compute_nodes=["compute-01"])
    assert first.execute("sinfo -h -o %P").exit_code == 0

    def die(binding: object) -> None:
        raise RuntimeError("injected: the selector thread dies")

    fresh_runtime.channel._accept = die  # type: ignore[method-assign]
    start = time.monotonic()
    # The command that met the fault fails as the infrastructure's, at once: the tool cannot connect,
    # instead of waiting in connect() until the 10 s step limit charges the agent with a timeout.
    with pytest.raises(ControllerError, match="control channel died"):
        first.execute("sinfo")
    assert time.monotonic() - start < 5
    with pytest.raises(ControllerError, match="control channel died"):
        second.execute("true")
    with pytest.raises(ControllerError, match="control channel is down"):
        fresh_runtime.new_cluster()
    first.close()
    second.close()
    fresh_runtime.close()
    assert_nothing_left(scratch_dir)


def test_the_controller_raising_in_a_tool_is_an_infrastructure_failure(
    fresh_runtime: Runtime, scratch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def broken_date(context: object, argv: list[str]) -> WireReply:
        calls.append(argv)
        raise ZeroDivisionError("injected into the date handler")

    env = EnterpriseHPCEnv(scenarios=["explore"], runtime=fresh_runtime, max_steps=10)
    other = EnterpriseHPCEnv(scenarios=["explore"], runtime=fresh_runtime, max_steps=10)
    try:
        env.reset(seed=1)
        other.reset(seed=2)
        _, _, _, _, info = env.step("hostname")
        assert info["infra_failure"] is None
        monkeypatch.setitem(dispatch.TOOLS, "date", broken_date)
        with pytest.raises(ControllerError) as raised:
            env.step("date; echo after")
        assert calls
        message = str(raised.value)
        assert "\n" not in message and "ZeroDivisionError" in message and "infrastructure failure" in message
        info = env.session.info()
        assert info["infra_failure"] is not None and "\n" not in info["infra_failure"]
        assert "injected into the date handler" in info["infra_failure"]
        assert env.session.infra_failures == 1
        assert env.session.episode is None  # discarded: never scored, closed in the background
        monkeypatch.undo()
        # The other episode goes on, and this env's next reset starts clean.
        assert other.step("hostname")[4]["exit_code"] == 0
        _, info = env.reset(seed=3)
        assert info["infra_failure"] is None
        assert env.step("date")[4]["exit_code"] == 0
    finally:
        env.close()
        other.close()
    fresh_runtime.close()
    assert_nothing_left(scratch_dir)


def test_the_openenv_state_names_the_infrastructure_failure(
    fresh_runtime: Runtime, scratch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpcgym.episode.pool import EpisodePool
    from hpcgym.interfaces.openenv.models import HpcAction
    from hpcgym.interfaces.openenv.server.environment import HpcEnvironment, ServerBackend
    from hpcgym.interfaces.task import default_registry

    def broken_date(context: object, argv: list[str]) -> WireReply:
        raise ZeroDivisionError("injected into the date handler")

    pool = EpisodePool(fresh_runtime, 0)
    env = HpcEnvironment(ServerBackend(pool, default_registry(), ("explore",), 10))
    try:
        env.reset(seed=1)
        env.step(HpcAction(command="hostname"))
        assert env.state.infra_failure is None
        monkeypatch.setitem(dispatch.TOOLS, "date", broken_date)
        with pytest.raises(ControllerError):
            env.step(HpcAction(command="date"))
        reason = env.state.infra_failure
        assert reason is not None and "\n" not in reason and "injected into the date handler" in reason
        monkeypatch.undo()
        env.reset(seed=2)
        assert env.state.infra_failure is None
    finally:
        env.close()
        pool.close()
    fresh_runtime.close()
    assert_nothing_left(scratch_dir)
