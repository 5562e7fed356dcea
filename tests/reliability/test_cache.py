"""A damaged rootfs cache entry is found at the next unpack and unpacked again; running episodes go on.

The cache is private to each test (it is shared by every hpcgym process on the host otherwise).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from hpcgym.runtime import Runtime
from tests.reliability.conftest import assert_nothing_left
from tests.runtime.conftest import require_sandbox_host

VICTIM = "etc/slurm/slurm.conf"  # a file every login node has, read by nothing in these tests


def truncate(lower: Path) -> None:
    os.truncate(lower / VICTIM, 10)


def flip_a_byte(lower: Path) -> None:
    with open(lower / VICTIM, "r+b") as f:
        f.seek(5)
        byte = f.read(1)
        f.seek(5)
        f.write(bytes([byte[0] ^ 0x01]))


def delete(lower: Path) -> None:
    shutil.rmtree(lower)


@pytest.mark.parametrize("damage", [truncate, flip_a_byte, delete], ids=lambda f: f.__name__)
def test_a_damaged_cache_entry_is_unpacked_again_while_episodes_run(
    images_dir: Path,
    scratch_dir: Path,
    tmp_path: Path,
    damage: Callable[[Path], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_sandbox_host()
    cache = tmp_path / "cache"

    def start() -> Runtime:
        return Runtime(
            images_dir, pool_size=0, scratch_dir=scratch_dir, cache_dir=cache, default_timeout_s=10
        )

    with start() as first:
        lower = first.config.lowers["rocky-login"]
        whole = (lower / VICTIM).read_bytes()
        running = first.new_cluster(compute_nodes=[])
        assert running.execute("echo before").output == "before\n"
        damage(lower)
        with (
            caplog.at_level(logging.WARNING, logger="hpcgym.runtime.unpack"),
            start() as second,
        ):
            assert second.config.lowers["rocky-login"] == lower
            assert (lower / VICTIM).read_bytes() == whole
            assert any("damaged or gone" in r.getMessage() for r in caplog.records)
            fresh = second.new_cluster(compute_nodes=[])
            assert fresh.execute(f"cat /{VICTIM} | wc -c").output.strip() == str(len(whole))
            # The episode that ran on the damaged tree goes on.
            assert running.execute("echo after").output == "after\n"
            fresh.close()
        running.close()
        # A third start finds the entry whole and unpacks nothing.
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="hpcgym.runtime.unpack"), start():
            assert not [r for r in caplog.records if "unpack" in r.getMessage()]
    assert_nothing_left(scratch_dir)
