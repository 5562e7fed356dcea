"""A real runtime over the built images, shared by the session; a fresh episode per test."""

from __future__ import annotations

import os
import shutil

import pytest

from hpcgym.episode import Episode
from hpcgym.runtime import Runtime


@pytest.fixture(scope="session")
def runtime(images_dir):
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("the runtime needs root and bubblewrap")
    with Runtime(images_dir) as rt:
        yield rt


@pytest.fixture
def episode(runtime):
    with Episode(runtime) as ep:
        yield ep
