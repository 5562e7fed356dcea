"""The content-addressed image store.

Layout::

    <store>/<digest>/rootfs.tar.zst   the canonical tar, zstd-compressed
    <store>/<digest>/manifest.json    what it is and how it was made (sorted keys, no build time)
    <store>/keys/<cache-key>          the digest that a build with those inputs produced
    <store>/locks/<cache-key>.lock    held while that build runs

An entry appears by renaming a finished temporary folder into place, so a reader sees a whole entry or
none; a key is written only after its entry exists. A build interrupted at any point leaves at most a
`tmp-*` folder, which the next build removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcgym.errors import DigestMismatch
from hpcgym.imagebuild.spec import sha256_file

ARTIFACT = "rootfs.tar.zst"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class StoreEntry:
    digest: str
    path: Path

    @property
    def artifact(self) -> Path:
        return self.path / ARTIFACT

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_path.read_text())


def dump_manifest(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


class Store:
    """A folder of images addressed by the digest of their uncompressed tar."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("keys", "locks"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def entry(self, digest: str) -> StoreEntry | None:
        path = self.root / digest
        # The manifest is the last thing written before the rename, so its presence marks a whole entry.
        return StoreEntry(digest, path) if (path / MANIFEST).is_file() else None

    def lookup(self, cache_key: str) -> StoreEntry | None:
        key_file = self.root / "keys" / cache_key
        if not key_file.is_file():
            return None
        return self.entry(key_file.read_text().strip())

    @contextlib.contextmanager
    def locked(self, cache_key: str) -> Iterator[None]:
        """Hold the lock of one build; a second process building the same inputs waits here."""
        with open(self.root / "locks" / f"{cache_key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """A temporary folder inside the store (same filesystem, so the final rename is atomic)."""
        path = Path(tempfile.mkdtemp(prefix="tmp-", dir=self.root))
        (path / ".owner").write_text(str(os.getpid()))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(self, staged: Path, digest: str, cache_key: str) -> StoreEntry:
        """Move a staged folder holding the artifact and manifest into place and record its key."""
        final = self.root / digest
        # The same bytes built again (--no-cache, the other backend) replace the entry, so its manifest
        # always describes the newest build of that digest; the old one is moved aside, then removed.
        retired = None
        if final.exists():
            retired = final.with_name(f"tmp-retired-{digest[:16]}-{os.getpid()}")
            os.rename(final, retired)
        os.rename(staged, final)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
        self.remember(cache_key, digest)
        entry = self.entry(digest)
        assert entry is not None
        return entry

    def remember(self, cache_key: str, digest: str) -> None:
        key_file = self.root / "keys" / cache_key
        tmp = key_file.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(digest + "\n")
        os.replace(tmp, key_file)

    def sweep(self) -> list[Path]:
        """Remove what interrupted builds left behind; return what was removed.

        A staging folder names the process that owns it, so a build running in another process keeps its own.
        """
        removed = []
        for path in sorted(self.root.glob("tmp-*")):
            if not _owner_alive(path):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
        return removed

    def verify(self, entry: StoreEntry) -> None:
        """Check the artifact's bytes against the sha256 its manifest records."""
        expected = entry.manifest()["artifact_sha256"]
        actual = sha256_file(entry.artifact)
        if actual != expected:
            raise DigestMismatch(
                f"{entry.artifact} has sha256 {actual}, its manifest says {expected}",
                hint="the store entry is corrupt: delete it and run `invoke build-images --no-cache`",
            )


def _owner_alive(path: Path) -> bool:
    try:
        pid = int((path / ".owner").read_text())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
