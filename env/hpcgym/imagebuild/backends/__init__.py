"""Builder backends: two small classes behind one interface.

A backend only assembles: it imports the base, runs the role's Containerfile with the network cut, and
exposes the result as a directory. The artifact and its digest come from `imagebuild.tarball`, so every
backend gives the same bytes for the same inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from hpcgym.imagebuild.spec import BuildBackend


class Builder(Protocol):
    name: BuildBackend

    def version(self) -> str:
        """The builder's own version; part of every cache key."""
        ...

    def has_image(self, tag: str) -> bool: ...

    def import_base(self, tarball: Path, tag: str) -> None:
        """Make a root filesystem tarball available as the image `tag`."""
        ...

    def build(self, context: Path, build_args: dict[str, str], tag: str, *, pull: bool) -> None:
        """Build `context/Containerfile` into the image `tag`, with no network for RUN steps."""
        ...

    def exported_root(self, tag: str, scratch: Path) -> contextlib.AbstractContextManager[Path]:
        """The image's root filesystem as a directory, for as long as the context lasts."""
        ...

    def remove_image(self, tag: str) -> None: ...


def open_builder(backend: BuildBackend) -> Builder:
    """Connect to a backend; raises `MissingTool` with a hint when it is not installed or not running."""
    # Imported here so that using one backend never needs the other's dependencies.
    if backend is BuildBackend.BUILDAH:
        from hpcgym.imagebuild.backends.buildah import BuildahBuilder

        return BuildahBuilder()
    from hpcgym.imagebuild.backends.docker import DockerBuilder

    return DockerBuilder()


def iter_build_errors(log: str) -> Iterator[str]:
    """The lines of a build log worth showing: the failing step and what it printed."""
    lines = log.strip().splitlines()
    steps = [i for i, line in enumerate(lines) if line.startswith("STEP ") or line.startswith("Step ")]
    start = steps[-1] if steps else max(0, len(lines) - 25)
    yield from lines[start:][-40:]
