"""Fixtures for fault injection: each test breaks a runtime of its own, then checks the host is clean.

A broken runtime cannot be shared (a dead channel serves no one), so every test gets a fresh one over
a private scratch dir; `assert_nothing_left` reads the host (mounts in every namespace, processes,
cgroups, the scratch dir) for anything of this process's clusters once the runtime is closed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcgym.runtime import Runtime
from hpcgym.soak.leaks import take_snapshot
from tests.runtime.conftest import require_sandbox_host


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hpcgym-faults-", dir="/dev/shm"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fresh_runtime(images_dir: Path, scratch_dir: Path) -> Iterator[Runtime]:
    require_sandbox_host()
    runtime = Runtime(images_dir, pool_size=0, scratch_dir=scratch_dir, default_timeout_s=10)
    try:
        yield runtime
    finally:
        runtime.close()


def assert_nothing_left(scratch_dir: Path) -> None:
    """No cluster of this process is left: no dir, mount, process or cgroup of its tag."""
    snapshot = take_snapshot(os.getpid())
    assert list(scratch_dir.iterdir()) == []
    assert snapshot.closed == [], snapshot.closed
    assert (snapshot.mounts, snapshot.namespace_mounts, snapshot.processes, snapshot.cgroups) == (
        0,
        0,
        0,
        0,
    ), snapshot.examples
