"""What an image is made of: roles, builder backends, base sources and the inputs that key the cache.

Everything here is data or pure functions of data. The build steps in `pipeline.py` read these specs;
nothing here runs a program.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpcgym.errors import BuildError

# 2023-11-14 22:13:20 UTC. Any fixed value works; changing it changes every digest.
DEFAULT_SOURCE_DATE_EPOCH = 1700000000
PERSONA = "rocky-9.5"

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# What an operator on a real login or compute node expects to be able to use. Everything the cluster
# simulates (Slurm, munge, systemd, ssh, curl, nvidia-smi) comes from stubs/, not from packages.
BASE_PACKAGES = (
    "bash",
    "coreutils",
    "file",
    "findutils",
    "gawk",
    "grep",
    "gzip",
    "hostname",
    "iproute2",
    "iputils-ping",
    "less",
    "lsof",
    "nano",
    "ncurses-bin",
    "netcat-openbsd",
    "passwd",
    "procps",
    "psmisc",
    "python3",
    "sed",
    "strace",
    "tar",
    "util-linux",
    "vim-tiny",
    "xz-utils",
)
# Like a Rocky container image installed with tsflags=nodocs: no manuals, docs or translations.
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
)


class Role(enum.StrEnum):
    LOGIN = "rocky-login"
    COMPUTE = "rocky-compute"

    def size_budget_bytes(self) -> int:
        # The uncompressed tar may not grow past this without someone deciding it should.
        return 220 * 1024 * 1024


class BuildBackend(enum.StrEnum):
    BUILDAH = "buildah"
    DOCKER = "docker"


class BaseKind(enum.StrEnum):
    MMDEBSTRAP = "mmdebstrap"
    TARBALL = "tarball"
    OCI = "oci"


_PINNED_OCI = re.compile(r"^[a-z0-9][a-z0-9._\-/:]*@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class BaseSpec:
    """Where the root of every image comes from.

    `mmdebstrap` (the default) bootstraps Debian minbase from `mirrors`; `tarball` takes a root filesystem
    tarball the user supplies; `oci` takes a registry reference pinned by digest.
    """

    kind: BaseKind = BaseKind.MMDEBSTRAP
    suite: str = DEBIAN_SUITE
    mirrors: tuple[str, ...] = DEBIAN_MIRRORS
    packages: tuple[str, ...] = BASE_PACKAGES
    tarball: Path | None = None
    reference: str | None = None

    @classmethod
    def parse(cls, text: str, mirrors: tuple[str, ...] = ()) -> BaseSpec:
        """Read a `--base` value: `mmdebstrap`, `tarball:PATH` or `oci:REF@sha256:DIGEST`."""
        if text == "mmdebstrap":
            return cls(mirrors=mirrors or DEBIAN_MIRRORS)
        if text.startswith("tarball:"):
            path = Path(text.removeprefix("tarball:")).expanduser().resolve()
            if not path.is_file():
                raise BuildError(
                    f"base tarball {path} does not exist", hint="pass tarball:/path/to/rootfs.tar"
                )
            return cls(kind=BaseKind.TARBALL, tarball=path)
        if text.startswith("oci:"):
            reference = text.removeprefix("oci:")
            if not _PINNED_OCI.match(reference):
                raise BuildError(
                    f"OCI base {reference!r} is not pinned by digest",
                    hint="use a reference like quay.io/rockylinux/rockylinux:9.5@sha256:<64 hex digits>",
                )
            return cls(kind=BaseKind.OCI, reference=reference)
        raise BuildError(
            f"unknown base {text!r}", hint="use mmdebstrap, tarball:/path/rootfs.tar or oci:REF@sha256:..."
        )

    def describe(self) -> dict[str, Any]:
        """The base as the manifest and the cache key record it."""
        if self.kind is BaseKind.MMDEBSTRAP:
            return {
                "kind": str(self.kind),
                "suite": self.suite,
                "mirrors": list(self.mirrors),
                "packages": sorted(self.packages),
                "dpkg_excludes": list(DPKG_EXCLUDES),
            }
        if self.kind is BaseKind.TARBALL:
            assert self.tarball is not None
            return {"kind": str(self.kind), "path": str(self.tarball), "sha256": sha256_file(self.tarball)}
        return {"kind": str(self.kind), "reference": self.reference}

    @property
    def emulated(self) -> bool:
        # Only a Debian base needs dressing up; a supplied tarball or OCI base is taken at its word.
        return self.kind is BaseKind.MMDEBSTRAP


@dataclass(frozen=True)
class ImageSpec:
    """One role's recipe: its Containerfile and the trees it copies."""

    role: Role
    images_dir: Path
    stubs_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return self.images_dir / str(self.role)

    @property
    def containerfile(self) -> Path:
        return self.directory / "Containerfile"

    @property
    def context_trees(self) -> dict[str, Path]:
        """Build-context folder name -> source tree, exactly what the Containerfile can COPY."""
        return {
            "common": self.images_dir / "common",
            "files": self.directory / "files",
            "stubs": self.stubs_dir,
        }

    def check(self) -> None:
        if not self.containerfile.is_file():
            raise BuildError(
                f"{self.containerfile} is missing", hint=f"every role needs images/{self.role}/Containerfile"
            )
        for name, tree in self.context_trees.items():
            if not tree.is_dir():
                raise BuildError(f"build context folder {name!r} ({tree}) is missing")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def normalized_mode(st_mode: int) -> int:
    # Git only keeps the executable bit, so only that may reach the image from the repository.
    if stat.S_ISDIR(st_mode):
        return 0o755
    return 0o755 if st_mode & 0o111 else 0o644


def hash_tree(root: Path) -> str:
    """Digest of a source tree: names, kinds, normalized modes and contents, never mtimes."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            path = Path(dirpath) / name
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                record = f"L {rel} {os.readlink(path)}"
            elif stat.S_ISDIR(st.st_mode):
                record = f"D {rel}"
            else:
                record = f"F {rel} {normalized_mode(st.st_mode):o} {sha256_file(path)}"
            digest.update(record.encode() + b"\0")
    return digest.hexdigest()


def finalize_cache_key(inputs: dict[str, Any]) -> str:
    """The cache key of a build step: sha256 of its inputs as canonical JSON."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
