"""mount and umount: util-linux 2.37 / nfs-utils texts and exit codes, and the share state they change."""

from __future__ import annotations

import pytest

from hpcgym.controller.services import MemoryNodeAccess
from tests.controller.services.conftest import COMPUTE, LOGIN, Env, make_env

NODE = "compute-02"
NFS_OPTS = (
    "rw,relatime,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,hard,proto=tcp,timeo=600,retrans=2,"
    "sec=sys,clientaddr=10.10.1.12,local_lock=none,addr=10.10.0.10"
)


def with_shares(access: MemoryNodeAccess) -> None:
    for node in (LOGIN, *COMPUTE):
        access.mkdir(node, "/home")
        access.mkdir(node, "/apps")  # setup-node.sh makes it on every node
    for node in COMPUTE:
        access.shares[node] = ("/home", "/apps")


@pytest.fixture
def nfs() -> Env:
    return make_env(with_shares)


def test_mount_lists_the_nfs_shares_with_rocky_options(nfs: Env) -> None:
    reply = nfs.run(NODE, "mount", "-t", "nfs4")
    assert reply.exit_code == 0 and reply.stderr == ""
    assert reply.stdout == (
        f"login01:/export/home on /home type nfs4 ({NFS_OPTS})\n"
        f"login01:/export/apps on /apps type nfs4 ({NFS_OPTS})\n"
    )
    full = nfs.run(NODE, "mount").stdout.splitlines()
    assert full[0] == "proc on /proc type proc (rw,nosuid,nodev,noexec,relatime)"
    assert any(line.startswith("/dev/mapper/rl-root on / type xfs (") for line in full)
    # The login node exports the shares; it mounts none.
    assert "nfs4" not in nfs.run(LOGIN, "mount").stdout


def test_umount_then_mount_cycle(nfs: Env) -> None:
    assert nfs.run(NODE, "umount", "-l", "/apps").exit_code == 0
    assert (NODE, "/apps") in nfs.access.unmounted_shares
    assert "/apps" not in nfs.run(NODE, "mount", "-t", "nfs4").stdout
    again = nfs.run(NODE, "umount", "/apps")
    assert (again.stderr, again.exit_code) == ("umount: /apps: not mounted.\n", 32)
    assert nfs.run(NODE, "mount", "/apps").exit_code == 0
    assert (NODE, "/apps") not in nfs.access.unmounted_shares
    busy = nfs.run(NODE, "mount", "/apps")
    assert (busy.stderr, busy.exit_code) == ("mount.nfs4: /apps is busy or already mounted\n", 32)
    # Other nodes are untouched.
    assert not [entry for entry in nfs.access.unmounted_shares if entry[0] != NODE]


def test_relative_paths_sources_and_mount_all(nfs: Env) -> None:
    assert nfs.run(NODE, "umount", "-fl", "apps", cwd="/").exit_code == 0
    assert nfs.run(NODE, "umount", "login01:/export/home").exit_code == 0
    assert {p for n, p in nfs.access.unmounted_shares if n == NODE} == {"/apps", "/home"}
    reply = nfs.run(NODE, "mount", "-a")
    assert (reply.stdout, reply.stderr, reply.exit_code) == ("", "", 0)
    assert not nfs.access.unmounted_shares
    assert nfs.run(NODE, "umount", "-a", "-t", "nfs4").exit_code == 0
    assert len(nfs.access.unmounted_shares) == 2
    assert nfs.run(NODE, "mount", "-t", "nfs4", "login01:/export/apps", "/apps").exit_code == 0


@pytest.mark.parametrize(
    ("node", "argv", "stderr", "code"),
    [
        (NODE, ["mount", "/nosuch"], "mount: /nosuch: can't find in /etc/fstab.\n", 1),
        (LOGIN, ["mount", "/apps"], "mount: /apps: can't find in /etc/fstab.\n", 1),
        (LOGIN, ["umount", "/apps"], "umount: /apps: not mounted.\n", 32),
        (NODE, ["umount", "/nosuch"], "umount: /nosuch: no mount point specified.\n", 32),
        (NODE, ["umount", "/"], "umount: /: target is busy.\n", 32),
        (NODE, ["mount", "--bind", "/home", "/apps"], "mount: /apps: permission denied.\n", 32),
        (NODE, ["umount"], "umount: bad usage\nTry 'umount --help' for more information.\n", 1),
        (
            NODE,
            ["mount", "-z"],
            "mount: invalid option -- 'z'\nTry 'mount --help' for more information.\n",
            1,
        ),
        (
            NODE,
            ["umount", "--bogus"],
            "umount: unrecognized option '--bogus'\nTry 'umount --help' for more information.\n",
            1,
        ),
        (
            NODE,
            ["mount", "login01:/export/scratch", "/apps"],
            "mount.nfs4: access denied by server while mounting login01:/export/scratch\n",
            32,
        ),
        (
            NODE,
            ["mount", "-t", "nfs4", "nfs9:/export/apps", "/apps"],
            "mount.nfs4: Failed to resolve server nfs9: Name or service not known\n",
            32,
        ),
    ],
)
def test_errors(nfs: Env, node: str, argv: list[str], stderr: str, code: int) -> None:
    reply = nfs.run(node, *argv)
    assert (reply.stdout, reply.stderr, reply.exit_code) == ("", stderr, code)
    assert not nfs.access.unmounted_shares


def test_mount_needs_the_fstab_entry_and_a_route(nfs: Env) -> None:
    nfs.run(NODE, "umount", "/apps")
    fstab = nfs.access.read(NODE, "/etc/fstab") or b""
    nfs.access.put(NODE, "/etc/fstab", fstab.replace(b"login01:/export/apps", b"#gone"))
    reply = nfs.run(NODE, "mount", "/apps")
    assert (reply.stderr, reply.exit_code) == ("mount: /apps: can't find in /etc/fstab.\n", 1)
    nfs.access.put(NODE, "/etc/fstab", fstab)
    nfs.access.put(
        NODE, "/etc/sysconfig/network-scripts/route-eth0", "ADDRESS0=10.10.0.0\nGATEWAY0=10.10.1.253\n"
    )
    nfs.run(NODE, "ifdown", "eth0")
    reply = nfs.run(NODE, "mount", "/apps")
    assert (reply.stderr, reply.exit_code) == ("mount.nfs4: Connection timed out\n", 32)
    assert (NODE, "/apps") in nfs.access.unmounted_shares


def test_version_and_help(nfs: Env) -> None:
    assert nfs.run(NODE, "umount", "-V").stdout.startswith("umount from util-linux 2.37.4 (libmount 2.37.4: ")
    assert nfs.run(NODE, "mount", "--help").stdout.startswith("\nUsage:\n mount [-lhV]\n")
