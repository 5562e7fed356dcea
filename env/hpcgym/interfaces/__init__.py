"""Episode -> OBSERVATION for users: the CLI, gymnasium, OpenEnv and the chat client TRL and eval share.

`default_images_dir` is the one place the built images' default location is decided, so every entry
point (gym, `hpcgym exec`, the server, training) finds the same images whatever the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

# env/hpcgym/interfaces/__init__.py -> the checkout's root (where pyproject.toml and build/ live).
REPO_ROOT = Path(__file__).resolve().parents[3]


def default_images_dir() -> Path:
    """`$HPCGYM_IMAGES`, else the checkout's `build/images` (not the working directory's)."""
    configured = os.environ.get("HPCGYM_IMAGES", "").strip()
    if configured:
        return Path(configured).resolve()
    if (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT / "build" / "images"
    # An installed (non-editable) package has no checkout around it; the image sets HPCGYM_IMAGES.
    return Path("build/images").resolve()
