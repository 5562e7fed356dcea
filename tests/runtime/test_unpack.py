"""Unpacking: digests checked before and during extraction, setuid kept, owners shifted, done once."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
from pathlib import Path

import pytest
import zstandard

from hpcgym.errors import DigestMismatch, SandboxError
from hpcgym.runtime.unpack import Image, unpack_rootfs

BASE = 1_000_000


def make_image(where: Path, *, corrupt_digest: bool = False) -> Image:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, data: bytes = b"", **kw: object):
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size = kind, mode, len(data)
            for key, value in kw.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if data else None)

        add("etc", tarfile.DIRTYPE, 0o755)
        add("etc/shadow", mode=0o640, data=b"root:*:1::::::\n", gid=42)
        add("usr", tarfile.DIRTYPE, 0o755)
        add("usr/bin", tarfile.DIRTYPE, 0o755)
        add("usr/bin/su", mode=0o4755, data=b"#!/bin/true\n")
        add("usr/bin/sinfo", tarfile.LNKTYPE, 0o755, linkname="usr/bin/su")
        add("var/lib/munge", tarfile.DIRTYPE, 0o700, uid=998, gid=998)
    data = raw.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    artifact = zstandard.ZstdCompressor().compress(data)
    where.mkdir(parents=True)
    (where / "rootfs.tar.zst").write_bytes(artifact)
    manifest = {
        "digest": "0" * 64 if corrupt_digest else digest,
        "artifact_sha256": hashlib.sha256(artifact).hexdigest(),
        "role": "rocky-login",
        "entries": 7,
    }
    (where / "manifest.json").write_text(json.dumps(manifest))
    return Image.load(where)


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("unpacking chowns into the sandbox uid range and needs root")


def test_unpack_keeps_setuid_hardlinks_and_shifts_owners(as_root: None, tmp_path: Path) -> None:
    lower = unpack_rootfs(make_image(tmp_path / "img"), tmp_path / "cache", BASE)
    su = (lower / "usr/bin/su").stat()
    assert su.st_mode & 0o7777 == 0o4755
    assert su.st_uid == BASE
    assert (lower / "usr/bin/sinfo").stat().st_ino == su.st_ino
    shadow = (lower / "etc/shadow").stat()
    assert (shadow.st_uid, shadow.st_gid, shadow.st_mode & 0o777) == (BASE, BASE + 42, 0o640)
    munge = (lower / "var/lib/munge").stat()
    assert (munge.st_uid, munge.st_mode & 0o777) == (BASE + 998, 0o700)
    assert lower.stat().st_uid == BASE
    assert sorted(p.name for p in lower.iterdir()) == ["etc", "usr", "var"]  # no marker inside


def test_unpack_happens_once(as_root: None, tmp_path: Path) -> None:
    image = make_image(tmp_path / "img")
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(unpack_rootfs(image, tmp_path / "cache", BASE)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    marker_time = (tmp_path / "cache" / f"{results[0].name}.complete").stat().st_mtime_ns
    (image.artifact).write_bytes(b"garbage")  # a cached entry is trusted without re-reading
    assert unpack_rootfs(image, tmp_path / "cache", BASE) == results[0]
    assert (tmp_path / "cache" / f"{results[0].name}.complete").stat().st_mtime_ns == marker_time


def test_corrupt_artifact_is_refused(as_root: None, tmp_path: Path) -> None:
    image = make_image(tmp_path / "img")
    blob = bytearray(image.artifact.read_bytes())
    blob[-5] ^= 0xFF
    image.artifact.write_bytes(bytes(blob))
    with pytest.raises(DigestMismatch):
        unpack_rootfs(image, tmp_path / "cache", BASE)
    assert not any((tmp_path / "cache").glob("*.complete"))


def test_wrong_tar_digest_is_refused_and_nothing_kept(as_root: None, tmp_path: Path) -> None:
    image = make_image(tmp_path / "img", corrupt_digest=True)
    with pytest.raises(DigestMismatch):
        unpack_rootfs(image, tmp_path / "cache", BASE)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_member_that_escapes_through_a_symlink_is_refused(as_root: None, tmp_path: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        link = tarfile.TarInfo("etc")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path / "outside")
        tar.addfile(link)
        payload = tarfile.TarInfo("etc/passwd")
        payload.size = 4
        tar.addfile(payload, io.BytesIO(b"evil"))
    data = raw.getvalue()
    where = tmp_path / "img"
    where.mkdir()
    artifact = zstandard.ZstdCompressor().compress(data)
    (where / "rootfs.tar.zst").write_bytes(artifact)
    manifest = {
        "digest": hashlib.sha256(data).hexdigest(),
        "artifact_sha256": hashlib.sha256(artifact).hexdigest(),
    }
    (where / "manifest.json").write_text(json.dumps(manifest | {"role": "rocky-login", "entries": 2}))
    (tmp_path / "outside").mkdir()
    with pytest.raises(SandboxError, match="outside the root"):
        unpack_rootfs(Image.load(where), tmp_path / "cache", BASE)
    assert not (tmp_path / "outside" / "passwd").exists()
