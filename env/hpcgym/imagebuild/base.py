"""The base root filesystem: Debian minbase from mmdebstrap, or a rootfs tarball the user supplies.

Both end as a directory that `imagebuild.tarball` turns into the canonical base tar. An OCI base needs no
step here: the builder pulls it by its pinned digest.
"""

from __future__ import annotations

import re
from pathlib import Path

from hpcgym.errors import BuildError
from hpcgym.imagebuild.spec import DPKG_EXCLUDES, BaseKind, BaseSpec
from hpcgym.run import CommandFailed, require_tool, run

# mmdebstrap/apt phrases that mean the mirror, not the recipe, is the problem.
_UNREACHABLE = re.compile(
    r"Could not resolve|Temporary failure resolving|Failed to fetch|Connection refused|"
    r"Unable to connect|Network is unreachable|No route to host|Connection timed out"
)


def mmdebstrap_version() -> str:
    return run(["mmdebstrap", "--version"]).stdout.split()[-1]


def bootstrap_debian(spec: BaseSpec, root: Path, epoch: int) -> None:
    """Run mmdebstrap into `root` (which must not exist yet)."""
    require_tool("mmdebstrap")
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        "--format=directory",
        f"--include={','.join(sorted(spec.packages))}",
        *(f"--dpkgopt={option}" for option in DPKG_EXCLUDES),
        # Hold apt to the mirrors named here; nothing from the host's apt configuration leaks in.
        '--aptopt=Acquire::Languages "none"',
        spec.suite,
        str(root),
        *spec.mirrors,
    ]
    try:
        run(argv, env={"SOURCE_DATE_EPOCH": str(epoch)}, timeout_s=1800)
    except CommandFailed as e:
        if _UNREACHABLE.search(e.output):
            raise BuildError(
                f"mmdebstrap could not reach the Debian mirror ({', '.join(spec.mirrors)})",
                hint="check the network, or pass --mirror 'deb URL bookworm main' for a reachable mirror",
            ) from None
        raise BuildError(f"mmdebstrap failed to bootstrap the base:\n{e}") from None


def unpack_tarball(spec: BaseSpec, root: Path) -> None:
    """Unpack a user-supplied root filesystem tarball into `root`."""
    assert spec.tarball is not None
    root.mkdir()
    try:
        # GNU tar (not Python's tarfile) so setuid bits and numeric owners survive; -a picks the compressor.
        run(["tar", "--extract", "--auto-compress", "--file", str(spec.tarball), "--directory", str(root),
             "--numeric-owner", "--preserve-permissions", "--same-owner"])  # fmt: skip
    except CommandFailed as e:
        raise BuildError(f"cannot unpack base tarball {spec.tarball}:\n{e}") from None


def assemble_base(spec: BaseSpec, root: Path, epoch: int) -> None:
    if spec.kind is BaseKind.MMDEBSTRAP:
        bootstrap_debian(spec, root, epoch)
    elif spec.kind is BaseKind.TARBALL:
        unpack_tarball(spec, root)
    else:
        raise BuildError("an OCI base is pulled by the builder and has no local root to assemble")
