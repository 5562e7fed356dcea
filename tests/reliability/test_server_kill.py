"""A server SIGKILLed mid-episode leaves nothing once the next one has started (its start-up sweep).

SIGKILL skips every cleanup of the server itself: its sandboxes die with it (bwrap's
--die-with-parent), but its scratch dirs, their mounts and its cgroups stay until the next hpcgym
process on the host sweeps what dead owners left, and the uid slot locks are the kernel's to drop.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from hpcgym.interfaces.openenv.client import HpcEnvClient
from hpcgym.interfaces.openenv.models import HpcAction
from hpcgym.soak.leaks import find_remains, held_uid_slots, take_snapshot
from hpcgym.soak.run import Plan, soak_server
from tests.runtime.conftest import require_sandbox_host


async def _start_episode(url: str) -> HpcEnvClient:
    client = HpcEnvClient(url, message_timeout_s=120.0)
    await client.reset(seed=5, scenario="explore")
    step = await client.step(HpcAction(command="ssh compute-01 hostname"))
    assert step.observation.output.strip() == "compute-01"
    return client


async def _close(client: HpcEnvClient) -> None:
    await asyncio.wait_for(client.close(), 10)  # the server is gone: this only ends our side


async def _one_episode(url: str) -> str:
    client = HpcEnvClient(url, message_timeout_s=120.0)
    try:
        await client.reset(seed=6, scenario="explore")
        return (await client.step(HpcAction(command="hostname"))).observation.output
    finally:
        await client.close()


def test_a_sigkilled_server_leaves_nothing_after_the_next_start(images_dir: Path, tmp_path: Path) -> None:
    require_sandbox_host()
    plan = Plan(episodes=1, sessions=1, scenarios=("explore",), pool_size=1)
    with soak_server(plan, images_dir, tmp_path / "killed.log") as (url, killed):
        loop = asyncio.new_event_loop()
        try:
            client = loop.run_until_complete(_start_episode(url))
            tag = take_snapshot(killed.pid).tag
            os.kill(killed.pid, signal.SIGKILL)
            killed.wait(timeout=30)
            with_dead_owner = take_snapshot(killed.pid, tag)
            # What the sweep is for: the dead server's scratch dirs are still there. Its mounts
            # never were in the host's table (each cluster's are in a namespace of its own).
            assert with_dead_owner.shm_dirs > 0 and with_dead_owner.mounts == 0
            loop.run_until_complete(_close(client))
        finally:
            loop.close()
    with soak_server(plan, images_dir, tmp_path / "restarted.log") as (url, _):
        deadline = time.monotonic() + 10
        while find_remains(take_snapshot(killed.pid, tag)) and time.monotonic() < deadline:
            time.sleep(0.2)  # processes the kernel is still reaping
        assert find_remains(take_snapshot(killed.pid, tag)) == []
        assert [slot for slot in held_uid_slots() if f"pid {killed.pid})" in slot] == []
        assert asyncio.run(_one_episode(url)) == "login01\n"
