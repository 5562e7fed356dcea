"""testinfra against each unpacked image, every command run inside a bubblewrap sandbox.

One unpacked copy per role for the whole session, mounted read-only in the sandbox, as testinfra's own
suite shares one container. The sandbox has no network and sees no host path but the image.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import testinfra.host
from testinfra.backend import base

from tests.conftest import ROLES, unpack_image


class BwrapBackend(base.BaseBackend):
    """Run each command as root in a read-only bubblewrap sandbox of an unpacked root filesystem."""

    NAME = "bwrap"

    def __init__(self, root: Path, **kwargs: Any) -> None:
        self.root = root
        super().__init__(str(root), **kwargs)

    def run(self, command: str, *args: str, **kwargs: Any) -> base.CommandResult:
        cmd = self.get_command(command, *args)
        sandbox = [
            "bwrap", "--ro-bind", str(self.root), "/", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--tmpfs", "/run", "--die-with-parent",
            # No user namespace: it would map only root, and every other owner would read as nobody.
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--clearenv", "--setenv", "PATH", "/usr/sbin:/usr/bin:/sbin:/bin", "--setenv", "LANG", "C.UTF-8",
            "/bin/sh", "-c", cmd,
        ]  # fmt: skip
        out = self.run_local(shlex.join(sandbox))
        out.command = self.encode(cmd)
        return out


@pytest.fixture(scope="session")
def unpacked(images_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("bwrap") is None:
        pytest.skip("bwrap is not installed (apt-get install bubblewrap)")
    return {role: unpack_image(images_dir / role, tmp_path_factory.mktemp(role) / "root") for role in ROLES}


@pytest.fixture(scope="session", params=ROLES)
def role(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def host(unpacked: dict[str, Path], role: str) -> testinfra.host.Host:
    return testinfra.host.Host(BwrapBackend(unpacked[role]))


@pytest.fixture(scope="session")
def manifest(images_dir: Path, role: str) -> dict[str, Any]:
    return json.loads((images_dir / role / "manifest.json").read_text())
