"""A full scratch filesystem (/dev/shm out of space or inodes) fails the episode it meets, clearly.

The scratch dir here is a tmpfs of its own with few inodes, filled by the test: a cluster made then,
or a node started lazily then, fails as an infrastructure failure with a one-line reason; the
episodes already running go on, and once space is back everything works and nothing is left.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcgym.errors import HpcgymError
from hpcgym.interfaces.gym import EnterpriseHPCEnv
from hpcgym.runtime import Runtime
from hpcgym.runtime.sandbox import Limits
from tests.reliability.conftest import assert_nothing_left
from tests.runtime.conftest import require_sandbox_host


@pytest.fixture
def small_scratch() -> Iterator[Path]:
    require_sandbox_host()
    # Under /dev/shm, not tmp_path: the sandboxes' unprivileged uids must be able to reach it.
    path = Path(tempfile.mkdtemp(prefix="hpcgym-enospc-", dir="/dev/shm"))
    path.chmod(0o755)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64M,nr_inodes=512,mode=755", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
        path.rmdir()


def fill(scratch: Path) -> list[Path]:
    made: list[Path] = []
    with pytest.raises(OSError, match="No space left"):
        while True:
            made.append(scratch / f"fill-{len(made)}")
            made[-1].mkdir()
    return made[:-1]


def free(made: list[Path]) -> None:
    for path in made:
        path.rmdir()


def test_enospc_while_creating_and_while_running(images_dir: Path, small_scratch: Path) -> None:
    limits = Limits(episode_tmpfs_bytes=32 << 20)
    runtime = Runtime(images_dir, pool_size=0, scratch_dir=small_scratch, default_timeout_s=10, limits=limits)
    env = EnterpriseHPCEnv(scenarios=["explore"], runtime=runtime, max_steps=10, pool_size=0)
    other = EnterpriseHPCEnv(scenarios=["explore"], runtime=runtime, max_steps=10, pool_size=0)
    try:
        other.reset(seed=1)
        env.reset(seed=2)
        made = fill(small_scratch)
        # While running: a node's disk is its episode's own tmpfs; filling it is the agent's doing,
        # seen as on a real full disk, and the episode goes on. A node not started yet still starts.
        output, _, _, _, info = env.step("dd if=/dev/zero of=/root/big bs=1M count=64; rm -f /root/big")
        assert "No space left on device" in output and info["infra_failure"] is None
        assert env.step("ssh compute-02 hostname")[0].strip() == "compute-02"
        # While creating: the next reset meets the full scratch and fails as the host's fault.
        with pytest.raises(HpcgymError) as raised:
            env.reset(seed=3)
        message = str(raised.value)
        assert "\n" not in message and "No space left" in message and "infrastructure failure" in message
        reason = env.session.info()["infra_failure"]
        assert reason is not None and "No space left" in reason and "\n" not in reason
        assert env.session.infra_failures == 1
        # The episode already running goes on.
        assert other.step("echo still here")[0] == "still here\n"
        free(made)
        env.reset(seed=4)
        assert env.step("ssh compute-02 hostname")[0].strip() == "compute-02"
    finally:
        env.close()
        other.close()
        runtime.close()
    assert_nothing_left(small_scratch)
