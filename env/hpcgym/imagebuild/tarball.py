"""The canonical tar writer: a root filesystem directory in, the same bytes out on every machine.

Builders (mmdebstrap, buildah, Docker) only assemble a tree; this module decides the artifact. Names are
sorted, owners numeric, every mtime is SOURCE_DATE_EPOCH, device nodes and sockets are left out, hardlinks
point to the first name of their group in sorted order, and host identity (machine-id, ssh host keys,
logs, apt lists, caches, container markers) is scrubbed. The digest of an image is the sha256 of this
uncompressed stream, so two builders that assemble the same tree give the same digest.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

# Bump when the bytes this module writes for the same tree change: it is part of every cache key.
WRITER_VERSION = 2

# Paths (relative, no leading slash) whose content is dropped. A pattern ending in "/*" drops what is
# inside a directory but keeps the directory itself, as a real image keeps /var/log.
SCRUBBED = (
    ".dockerenv",
    "run/.containerenv",
    "dev/*",
    "proc/*",
    "sys/*",
    "tmp/*",
    "var/tmp/*",
    "run/*",
    "etc/ssh/ssh_host_*",
    "var/lib/dbus/machine-id",
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/ldconfig/aux-cache",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/log/**",
    "root/.bash_history",
)

# Files whose content is pinned whatever the builder left there: container engines bind-mount these
# during builds, and machine-id must be empty so each booted copy would generate its own.
PINNED = {"etc/machine-id": b""}

# Docker's init layer forces /etc/mtab -> /proc/mounts into every container it exports; pin the link to
# what a Rocky node has so that both builders agree.
PINNED_SYMLINKS = {"etc/mtab": "../proc/self/mounts"}

BLOCK = 512


@dataclass(frozen=True)
class TarSummary:
    digest: str
    size_bytes: int
    entries: int


@dataclass
class _Entry:
    name: str
    kind: bytes
    mode: int
    uid: int
    gid: int
    size: int = 0
    linkname: str = ""
    source: Path | None = None
    data: bytes | None = None
    inode: tuple[int, int] | None = field(default=None, repr=False)


def is_scrubbed(name: str, is_dir: bool) -> bool:
    for pattern in SCRUBBED:
        if pattern.endswith("/**"):
            # Files anywhere below; directories stay so services can still write their logs.
            if name.startswith(pattern[:-2]) and not is_dir:
                return True
        elif pattern.endswith("/*"):
            if name.startswith(pattern[:-1]):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def scan_tree(root: Path, pinned: Mapping[str, bytes]) -> list[_Entry]:
    """List the tree under root as tar entries, scrubbed, pinned and sorted."""
    entries: dict[str, _Entry] = {}

    def walk(directory: Path, prefix: str) -> Iterator[tuple[str, Path, os.stat_result]]:
        with os.scandir(directory) as it:
            for dirent in it:
                name = prefix + dirent.name
                st = dirent.stat(follow_symlinks=False)
                yield name, Path(dirent.path), st
                if stat.S_ISDIR(st.st_mode):
                    yield from walk(Path(dirent.path), name + "/")

    for name, path, st in walk(root, ""):
        mode = stat.S_IMODE(st.st_mode)
        if is_scrubbed(name, stat.S_ISDIR(st.st_mode)):
            continue
        if stat.S_ISDIR(st.st_mode):
            entries[name] = _Entry(name, tarfile.DIRTYPE, mode, st.st_uid, st.st_gid)
        elif stat.S_ISREG(st.st_mode):
            inode = (st.st_dev, st.st_ino) if st.st_nlink > 1 else None
            entries[name] = _Entry(
                name, tarfile.REGTYPE, mode, st.st_uid, st.st_gid, st.st_size, source=path, inode=inode
            )
        elif stat.S_ISLNK(st.st_mode):
            entries[name] = _Entry(
                name, tarfile.SYMTYPE, 0o777, st.st_uid, st.st_gid, linkname=os.readlink(path)
            )
        elif stat.S_ISFIFO(st.st_mode):
            entries[name] = _Entry(name, tarfile.FIFOTYPE, mode, st.st_uid, st.st_gid)
        # Device nodes and sockets are never part of an image: the sandbox provides /dev.

    for name, data in pinned.items():
        old = entries.get(name)
        if old is not None and old.kind == tarfile.DIRTYPE:
            raise ValueError(f"cannot pin {name}: it is a directory in the tree")
        entries[name] = _Entry(name, tarfile.REGTYPE, 0o644, 0, 0, len(data), data=data)

    for name, target in PINNED_SYMLINKS.items():
        entries[name] = _Entry(name, tarfile.SYMTYPE, 0o777, 0, 0, linkname=target)

    ordered = [entries[name] for name in sorted(entries, key=os.fsencode)]
    # A hardlink group is written once, under its first name in sorted order; the other names link to it.
    first_of: dict[tuple[int, int], str] = {}
    for entry in ordered:
        if entry.inode is None:
            continue
        if entry.inode in first_of:
            entry.kind, entry.linkname, entry.size, entry.source = (
                tarfile.LNKTYPE,
                first_of[entry.inode],
                0,
                None,
            )
        else:
            first_of[entry.inode] = entry.name
    return ordered


class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.sha.update(data)
        self.out.write(data)
        self.size += len(data)


def _copy_exactly(source: Path, size: int, writer: _HashingWriter) -> None:
    remaining = size
    with open(source, "rb") as src:
        while remaining:
            chunk = src.read(min(remaining, 1 << 20))
            if not chunk:
                break
            writer.write(chunk)
            remaining -= len(chunk)
        if remaining or src.read(1):
            raise OSError(f"{source} changed size while it was being archived")


def _header(entry: _Entry, epoch: int) -> bytes:
    info = tarfile.TarInfo(entry.name + ("/" if entry.kind == tarfile.DIRTYPE else ""))
    info.type = entry.kind
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    info.mtime = epoch
    info.size = entry.size if entry.kind == tarfile.REGTYPE else 0
    info.linkname = entry.linkname
    return info.tobuf(format=tarfile.GNU_FORMAT, encoding="utf-8", errors="surrogateescape")


def write_canonical_tar(
    root: Path, out: BinaryIO, *, epoch: int, pinned: Mapping[str, bytes] | None = None
) -> TarSummary:
    """Write the tree under `root` to `out` as a canonical tar stream.

    Args:
        root: the assembled root filesystem (read only; nothing in it is changed).
        out: binary stream the tar bytes go to (a file, or a zstd compressor).
        epoch: SOURCE_DATE_EPOCH, the mtime of every entry.
        pinned: relative path -> content for files whose bytes are fixed regardless of the tree.

    Returns:
        The sha256 digest (hex) of the uncompressed stream, its size and the number of entries.
    """
    writer = _HashingWriter(out)
    entries = scan_tree(root, {**PINNED, **(pinned or {})})
    for entry in entries:
        writer.write(_header(entry, epoch))
        if entry.kind != tarfile.REGTYPE or entry.size == 0:
            continue
        if entry.data is not None:
            writer.write(entry.data)
        else:
            assert entry.source is not None
            _copy_exactly(entry.source, entry.size, writer)
        if entry.size % BLOCK:
            writer.write(b"\0" * (BLOCK - entry.size % BLOCK))
    # End of archive: two zero blocks, padded to tar's default 10 KiB record as GNU tar does.
    writer.write(b"\0" * (2 * BLOCK))
    record = 20 * BLOCK
    if writer.size % record:
        writer.write(b"\0" * (record - writer.size % record))
    return TarSummary(digest=writer.sha.hexdigest(), size_bytes=writer.size, entries=len(entries))
