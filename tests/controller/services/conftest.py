"""A five-node cluster in memory: the images' real files with setup-node.sh's owners and modes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from hpcgym.controller import Controller, ToolReply
from hpcgym.controller.rpc import User
from hpcgym.controller.services import MemoryNodeAccess, ServiceManager, sync_cluster

IMAGES = Path(__file__).resolve().parents[3] / "images"
MUNGE_UID = 981
SLURM_UID = 982
COMPUTE = ("compute-01", "compute-02", "compute-03", "compute-04")
LOGIN = "login01"
PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "munge:x:981:981:Runs Uid 'N' Gid Emporium:/var/lib/munge:/sbin/nologin\n"
    "slurm:x:982:982:SLURM resource manager:/var/lib/slurm:/sbin/nologin\n"
)
GROUP = "root:x:0:\nmunge:x:981:\nslurm:x:982:\n"


def _copy_tree(access: MemoryNodeAccess, node: str, root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            access.put(node, "/" + str(path.relative_to(root)), path.read_bytes())


def populate(access: MemoryNodeAccess, node: str) -> None:
    role = "rocky-login" if node == LOGIN else "rocky-compute"
    _copy_tree(access, node, IMAGES / "common" / "files")
    _copy_tree(access, node, IMAGES / role / "files")
    access.put(node, "/etc/hostname", f"{node}\n")
    access.put(node, "/etc/passwd", PASSWD)
    access.put(node, "/etc/group", GROUP)
    for directory in ("/etc/munge", "/var/lib/munge", "/var/log/munge"):
        access.mkdir(node, directory, mode=0o700, uid=MUNGE_UID, gid=MUNGE_UID)
    access.chown(node, "/etc/munge/munge.key", MUNGE_UID, MUNGE_UID)
    access.chmod(node, "/etc/munge/munge.key", 0o400)
    access.mkdir(node, "/var/log/slurm", mode=0o755, uid=SLURM_UID, gid=SLURM_UID)
    access.mkdir(node, "/var/spool/slurmd", mode=0o755)
    if node == LOGIN:
        access.mkdir(node, "/var/spool/slurmctld", mode=0o700, uid=SLURM_UID, gid=SLURM_UID)


@dataclass
class Env:
    """One episode's controller with services, and a way to type commands on a node."""

    controller: Controller
    access: MemoryNodeAccess
    services: ServiceManager

    def run(self, node: str, *argv: str, cwd: str = "/root", stdin: str | None = None) -> ToolReply:
        """One stub invocation, exactly as the runtime's socket hands it to the controller."""
        return self.controller.handle(node, list(argv), cwd, stdin=stdin)

    def tick(self, seconds: int = 1) -> None:
        self.controller.advance(seconds)


def make_env(prepare=None) -> Env:  # type: ignore[no-untyped-def]
    access = MemoryNodeAccess()
    for node in (LOGIN, *COMPUTE):
        populate(access, node)
    if prepare is not None:
        prepare(access)
    controller = Controller.from_slurm_conf(
        IMAGES / "common" / "files" / "etc" / "slurm" / "slurm.conf",
        slurmd_running=False,
        users=(User("root", 0, "root", 0),),
        nodes=access,
    )
    env = Env(controller, access, controller.services)
    sync_cluster(controller.slurm, controller.services)
    return env


@pytest.fixture
def env() -> Env:
    return make_env()
