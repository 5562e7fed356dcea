"""Skips for the training tests: the training extra (torch, trl) and a runtime (root, bubblewrap)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def episode_images(images_dir: Path) -> Iterator[Path]:
    """The built images, where this machine can run episodes (root and bubblewrap)."""
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("episodes need root and bubblewrap")
    from training.env import close_local_episodes

    yield images_dir
    close_local_episodes()


@pytest.fixture(scope="session")
def trl_stack() -> None:
    """Skip unless the training extra is installed."""
    for module in ("torch", "trl", "transformers", "datasets"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[train]')")
