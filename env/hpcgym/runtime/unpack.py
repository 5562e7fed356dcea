"""IMAGE -> lower dir: unpack each image once into a cache keyed by its digest.

An image is `rootfs.tar.zst` plus `manifest.json` (written by `hpcgym.imagebuild`). The artifact's sha256
is checked before anything is extracted, and the digest of the uncompressed tar is computed while
extracting into a temporary dir, which is renamed into place only when both match. A lock file
serialises processes that unpack the same digest; a `<key>.complete` marker says an entry is whole, so a
second process simply reuses it.

File owners are shifted by `uid_base` on the way out (`0` -> `uid_base`, `998` -> `uid_base + 998`),
so no file of the image belongs to a host user. Each cluster sees the lower dir through an idmapped
view that shifts this range onto its own (`hostids.py`), whose ids its sandboxes map to 0..65535:
root in a node is an unprivileged uid on the host. The lower dir is never written after the rename;
per-episode changes live in overlay upper dirs (`overlay.py`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import zstandard

from hpcgym.errors import DigestMismatch, SandboxError

log = logging.getLogger(__name__)

# How many ids (0..65535) the image's range and each cluster's range hold.
ID_RANGE = 65536
DEFAULT_UID_BASE = 1_000_000


def default_cache_dir() -> Path:
    return Path(os.environ.get("HPCGYM_ROOTFS_CACHE", Path.home() / ".cache" / "hpcgym" / "rootfs"))


@dataclass(frozen=True)
class Image:
    """One built image as the build wrote it: the artifact and what its manifest says about it."""

    role: str
    artifact: Path
    digest: str
    artifact_sha256: str

    @classmethod
    def load(cls, image_dir: Path) -> Image:
        manifest_path = image_dir / "manifest.json"
        artifact = image_dir / "rootfs.tar.zst"
        if not manifest_path.is_file() or not artifact.is_file():
            raise SandboxError(
                f"no built image in {image_dir} (need manifest.json and rootfs.tar.zst)",
                hint="run `invoke build-images` first",
            )
        manifest = json.loads(manifest_path.read_text())
        return cls(
            role=str(manifest.get("role", image_dir.name)),
            artifact=artifact,
            digest=str(manifest["digest"]).removeprefix("sha256:"),
            artifact_sha256=str(manifest["artifact_sha256"]).removeprefix("sha256:"),
        )


class _HashingReader:
    """A file-like wrapper that hashes every byte read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.sha.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


class _ShiftedTarFile(tarfile.TarFile):
    """Extracts with owners shifted into the host id range the sandboxes map to 0..65535."""

    uid_base = DEFAULT_UID_BASE

    def chown(
        self,
        tarinfo: tarfile.TarInfo,
        targetpath: str | bytes | os.PathLike[str] | os.PathLike[bytes],
        numeric_owner: bool,
    ) -> None:
        if tarinfo.uid is None or tarinfo.gid is None:
            return
        if tarinfo.uid >= ID_RANGE or tarinfo.gid >= ID_RANGE:
            raise SandboxError(f"{tarinfo.name}: owner {tarinfo.uid}:{tarinfo.gid} is outside 0..65535")
        os.lchown(targetpath, self.uid_base + tarinfo.uid, self.uid_base + tarinfo.gid)


# Python's extraction filters arrived in 3.11.4 (Debian 12 ships 3.11.2) and 3.14 makes the `data`
# filter the default, which clears setuid bits. So the safety checks are ours, and tarfile is told to
# trust the member as it stands, where it knows how to be told.
_TRUSTED = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


def _is_wanted(member: tarfile.TarInfo, dest: Path) -> bool:
    """Whether to extract `member`; raises on a name or hard link that would leave `dest`."""
    if member.isdev() or member.isfifo():
        return False  # bwrap provides a minimal /dev; device nodes in an image are never used
    if member.name in (".", "./", ""):
        return False
    names = [member.name] + ([member.linkname] if member.islnk() else [])
    for name in names:
        # realpath follows the symlinks already extracted, so a link planted earlier cannot
        # carry a later member outside the tree.
        if name.startswith("/") or not _inside(os.path.realpath(dest / name), dest):
            raise SandboxError(f"image member {member.name!r} would be written outside the root")
    return True


def _inside(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root) + os.sep)


def sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def unpack_rootfs(image: Image, cache_dir: Path | None = None, uid_base: int = DEFAULT_UID_BASE) -> Path:
    """Return the lower dir of `image`, unpacking it on first use.

    Args:
        image: the image to unpack.
        cache_dir: where lower dirs live (default `~/.cache/hpcgym/rootfs` or `$HPCGYM_ROOTFS_CACHE`).
        uid_base: first host uid of the range mapped to 0..65535 in the sandboxes.

    Raises:
        DigestMismatch: the artifact or the tar inside it is not what the manifest says.
    """
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = f"{image.digest}-u{uid_base}"
    target = cache_dir / key
    # The marker sits beside the tree, not in it, so nothing of ours shows up inside a sandbox.
    marker = cache_dir / f"{key}.complete"
    if _is_whole(target, marker):
        return target
    with (cache_dir / f"{key}.lock").open("w") as lock:
        # A second process blocks here and then finds the marker the first one wrote.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_whole(target, marker):
            return target
        if marker.exists():
            log.warning("the cache entry %s is damaged or gone; unpacking %s again", target, image.role)
            marker.unlink()
        actual = sha256_file(image.artifact)
        if actual != image.artifact_sha256:
            raise DigestMismatch(
                f"{image.artifact}: sha256 {actual} does not match the manifest's {image.artifact_sha256}",
                hint="rebuild the image with `invoke build-images`",
            )
        staging = cache_dir / f".{key}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o755)
        try:
            _extract_verified(image, staging, uid_base)
            if target.exists():
                # Running episodes may still see the damaged tree through their mounts: it is moved
                # aside, not deleted under them, and swept once this process is gone.
                aside = cache_dir / f".{key}-damaged.partial-{os.getpid()}"
                shutil.rmtree(aside, ignore_errors=True)
                os.rename(target, aside)
            os.rename(staging, target)
            marker.write_text(json.dumps({"digest": image.digest, "tree": tree_fingerprint(target)}) + "\n")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log.info("unpacked %s (%s) into %s", image.role, image.digest[:12], target)
    return target


def tree_fingerprint(root: Path) -> str:
    """A digest of every entry's name, type, mode, owner, size and mtime under `root` (links not followed).

    Reading every byte of both images at each start would cost seconds; a truncated file, a byte
    written over, a file or the whole tree deleted all change this listing, and it takes a walk.
    """
    sha = hashlib.sha256()
    stack = [root]
    lines = []
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                rel = os.path.relpath(entry.path, root)
                lines.append(f"{rel}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0{st.st_mtime_ns}")
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
    for line in sorted(lines):
        sha.update(line.encode(errors="surrogateescape") + b"\n")
    return sha.hexdigest()


def _is_whole(target: Path, marker: Path) -> bool:
    # The marker records the tree's fingerprint when it was unpacked; an entry that no longer
    # matches it is unpacked again. A marker of an older hpcgym (empty) is trusted once and filled in.
    try:
        text = marker.read_text()
    except FileNotFoundError:
        return False
    if not target.is_dir():
        return False
    try:
        recorded = json.loads(text)["tree"] if text.strip() else None
    except (ValueError, KeyError, TypeError):
        return False
    actual = tree_fingerprint(target)
    if recorded is None:
        marker.write_text(json.dumps({"tree": actual}) + "\n")
        return True
    return bool(recorded == actual)


def _extract_verified(image: Image, staging: Path, uid_base: int) -> None:
    with image.artifact.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as plain:
        hashing = _HashingReader(plain)
        with _ShiftedTarFile.open(fileobj=hashing, mode="r|") as tar:  # type: ignore[call-overload]
            tar.uid_base = uid_base
            for member in tar:
                if _is_wanted(member, staging):
                    # A hard link shares the inode its target already set up: applying the link
                    # entry's mode and owner again could only clear a setuid bit.
                    set_attrs = not member.islnk()
                    tar.extract(member, staging, set_attrs=set_attrs, numeric_owner=True, **_TRUSTED)
        hashing.drain()
    if hashing.sha.hexdigest() != image.digest:
        raise DigestMismatch(
            f"{image.artifact}: tar digest {hashing.sha.hexdigest()} does not match {image.digest}",
            hint="the artifact is corrupt; rebuild it with `invoke build-images`",
        )
    # The tar has no root entry; the root of the tree belongs to root inside the sandbox.
    os.chown(staging, uid_base, uid_base)
    os.chmod(staging, 0o755)
