"""Fixtures shared by the whole suite: where the repository, the built images and ../shared are."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IMAGES = Path(os.environ.get("HPCGYM_IMAGES", REPO / "build" / "images"))
STORE = REPO / ".hpcgym" / "store"
ROLES = ("rocky-login", "rocky-compute")


def require_toolchain() -> None:
    """Skip unless the pinned C toolchain that compiles the stubs (zig) is on this machine."""
    from hpcgym.errors import MissingTool
    from hpcgym.imagebuild.client import toolchain_version

    try:
        toolchain_version()
    except MissingTool as e:
        pytest.skip(str(e))


def unpack_image(image_dir: Path, dest: Path) -> Path:
    """Unpack an image's rootfs with GNU tar (keeps setuid bits and numeric owners)."""
    dest.mkdir(parents=True)
    tar = shutil.which("tar")
    assert tar is not None
    rc = os.spawnv(
        os.P_WAIT,
        tar,
        ["tar", "--zstd", "-xpf", str(image_dir / "rootfs.tar.zst"), "-C", str(dest), "--numeric-owner"],
    )
    assert rc == 0, f"unpacking {image_dir} failed"
    return dest


@pytest.fixture(scope="session")
def runtime(images_dir: Path):  # type: ignore[no-untyped-def]
    """One real runtime over the built images for the whole session (root and bubblewrap needed)."""
    from hpcgym.runtime import Runtime

    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("the runtime needs root and bubblewrap")
    with Runtime(images_dir) as rt:
        yield rt


@pytest.fixture(scope="session")
def images_dir() -> Path:
    missing = [role for role in ROLES if not (IMAGES / role / "manifest.json").is_file()]
    if missing:
        pytest.skip(f"images not built ({', '.join(missing)}): run `invoke build-images` first")
    return IMAGES
