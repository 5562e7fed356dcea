"""Where a training or evaluation model comes from: a local directory, or a hub id.

"build/tiny-qwen2" and "Qwen/Qwen2.5-0.5B-Instruct" look alike, and transformers, given a directory
that does not exist, retries the hub for most of a minute before a traceback that does not name the
directory. So a name that is a directory (here or in the checkout) is used as one, a name that looks
like a path but is none is an error at once, and only what remains goes to the hub.
"""

from __future__ import annotations

from pathlib import Path

from hpcgym.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
# The first folder of paths people give that are never hub organisations.
LOCAL_ROOTS = ("build", "runs", "models", "checkpoints")
TINY_MODEL = "build/tiny-qwen2"


def resolve_model(model: str) -> str:
    """A directory's absolute path, or the hub id unchanged.

    Raises:
        ConfigError: `model` looks like a local path, but no such directory exists.
    """
    given = Path(model).expanduser()
    candidates = [given] if given.is_absolute() else [given, REPO_ROOT / given]
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    parts = Path(model).parts
    looks_local = (
        model.startswith(("/", ".", "~"))
        or len(parts) != 2
        or parts[0] in LOCAL_ROOTS
        or model.endswith("/final")
    )
    if not looks_local:
        return model
    looked = dict.fromkeys(str(c.absolute()) for c in candidates)
    where = " or ".join(looked)
    if Path(model).name == Path(TINY_MODEL).name:
        hint = f"make it (offline, seconds): .venv/bin/python -m training.tiny --out {TINY_MODEL}"
    else:
        hint = "give a saved model's folder (with config.json) or a hub id, e.g. Qwen/Qwen2.5-0.5B-Instruct"
    raise ConfigError(f"no model at {where}", hint=hint)


def model_name(model: str) -> str:
    """The leaderboard name of a model: a hub id as given; a directory by its last two folders.

    `runs/qwen0.5b/final` becomes `qwen0.5b/final`, not `final`, so runs stay apart.
    """
    path = Path(model)
    if not path.is_dir():
        return model
    parts = path.resolve().parts
    return "/".join(parts[-2:]) if len(parts) >= 2 else parts[-1]
