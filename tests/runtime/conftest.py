"""Fixtures for the runtime tests: one Runtime per session, a fresh cluster for every test that writes.

Everything here needs root and bubblewrap (the sandboxes map a range of host uids) and the built
images; without them the tests skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcgym.runtime import Cluster, Runtime


def require_sandbox_host() -> None:
    if os.geteuid() != 0:
        pytest.skip("the runtime maps host uid ranges into sandboxes and needs root")
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")


@pytest.fixture(scope="session")
def scratch_dir() -> Iterator[Path]:
    # A private scratch dir keeps the cleanup checks blind to other hpcgym processes on the host.
    path = Path(tempfile.mkdtemp(prefix="hpcgym-tests-", dir="/dev/shm"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def runtime(images_dir: Path, scratch_dir: Path) -> Iterator[Runtime]:
    require_sandbox_host()
    with Runtime(images_dir, pool_size=2, scratch_dir=scratch_dir, default_timeout_s=10) as rt:
        yield rt


@pytest.fixture
def cluster(runtime: Runtime) -> Iterator[Cluster]:
    with runtime.new_cluster(compute_nodes=["compute-01", "compute-02"]) as c:
        yield c


@pytest.fixture
def other_cluster(runtime: Runtime) -> Iterator[Cluster]:
    with runtime.new_cluster(compute_nodes=["compute-01"]) as c:
        yield c
