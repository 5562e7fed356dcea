"""The stale NFS layer: the kernel's own ESTALE texts, one node only, undone by unmount, and cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hpcgym.runtime import Cluster
from hpcgym.runtime.stalefs import StaleMount
from hpcgym.runtime.sweep import mount_points, sweep_stale
from tests.runtime.conftest import require_sandbox_host

REPO = Path(__file__).resolve().parents[2]


def stalefs_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("stalefs:")]


def sh(command: str) -> tuple[int, str]:
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=10)
    return done.returncode, done.stdout + done.stderr


def test_every_access_is_a_stale_file_handle(tmp_path: Path) -> None:
    require_sandbox_host()
    target = tmp_path / "apps"
    target.mkdir()
    with StaleMount(target, source="login01:/export/apps") as stale:
        with pytest.raises(OSError) as caught:
            os.stat(target)
        assert caught.value.errno == 116
        assert sh(f"ls {target}") == (2, f"ls: cannot access '{target}': Stale file handle\n")
        assert sh(f"df {target}") == (1, f"df: {target}: Stale file handle\n")
        assert sh(f"cd {target}") == (1, f"bash: line 1: cd: {target}: Stale file handle\n")
        assert sh(f"cat {target}/x")[1] == f"cat: {target}/x: Stale file handle\n"
        line = next(
            line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(target) in line
        )
        assert " - fuse.nfs4 login01:/export/apps " in line
        assert stale.requests > 0
    assert not os.path.ismount(target)
    assert not stalefs_threads()
    assert target.is_dir()


def test_a_stale_share_on_one_node_only(cluster: Cluster) -> None:
    cluster.execute("echo hello > /apps/README")
    cluster.execute("ssh compute-01")
    node = cluster.nodes["compute-01"]
    node.make_share_stale("apps")
    assert cluster.execute("ls /apps").output == "ls: cannot access '/apps': Stale file handle\n"
    assert cluster.execute("cd /apps").output == "bash: cd: /apps: Stale file handle\n"
    # A fresh ssh command builds its own mount namespace and still meets the stale handle.
    assert (
        cluster.execute("ssh compute-01 cat /apps/README").output == "cat: /apps/README: Stale file handle\n"
    )
    assert cluster.execute("ssh compute-02 cat /apps/README").output == "hello\n"
    assert cluster.execute("cat /home/alice/.bashrc >/dev/null; echo $?").output == "0\n"
    assert not node.sees_share("apps") and node.sees_share("home")
    assert cluster.nodes["compute-02"].sees_share("apps")

    node.unmount_share("apps")
    assert cluster.execute("ls -A /apps; echo $?").output == "0\n"  # the empty local mount point
    assert not node.sees_share("apps")
    node.mount_share("apps")
    assert cluster.execute("cat /apps/README").output == "hello\n"
    assert cluster.execute("ssh compute-01 cat /apps/README").output == "hello\n"
    assert node.sees_share("apps")
    assert not stalefs_threads()


def test_close_removes_the_stale_layer_and_its_thread(runtime) -> None:  # type: ignore[no-untyped-def]
    with runtime.new_cluster(compute_nodes=["compute-01"]) as cluster:
        cluster.nodes["compute-01"].make_share_stale("home")
        assert stalefs_threads()
        directory = cluster.host_dir
    assert not stalefs_threads()
    assert not directory.exists()
    assert not [p for p in mount_points() if directory in p.parents or p == directory]


def test_a_writable_agent_cannot_fake_the_share(cluster: Cluster) -> None:
    cluster.execute("ssh compute-01")
    node = cluster.nodes["compute-01"]
    node.unmount_share("apps")
    # The local mount point is the agent's to fill; it is still not the share.
    cluster.execute("mkdir -p /apps/modulefiles && touch /apps/README")
    assert (
        cluster.execute("rmdir /apps").output == "rmdir: failed to remove '/apps': Device or resource busy\n"
    )
    assert cluster.execute("rm -rf /apps").output == "rm: cannot remove '/apps': Device or resource busy\n"
    cluster.execute("ln -s /home /apps")  # lands inside the mount point: /apps/home
    assert not node.sees_share("apps")


def test_sweep_removes_a_dead_owners_stale_mount(scratch_dir: Path) -> None:
    require_sandbox_host()
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        sys.path.insert(0, {str(REPO / "env")!r})
        from hpcgym.runtime.stalefs import StaleMount
        from hpcgym.runtime.sweep import owner_tag
        target = Path({str(scratch_dir)!r}) / f"{{owner_tag()}}-000000" / "nodes" / "compute-01" / "mnt" / "apps"
        target.mkdir(parents=True)
        StaleMount(target, source="login01:/export/apps").mount()
        print(target, flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    target = Path(child.stdout.readline().strip())
    assert target in mount_points()
    child.send_signal(signal.SIGKILL)
    child.wait()
    time.sleep(0.1)
    swept = sweep_stale(scratch_dir)
    assert target.parents[3] in swept
    assert target not in mount_points()
    assert not target.parents[3].exists()


def test_a_chrooted_shell_cannot_point_the_check_at_a_host_path(cluster: Cluster) -> None:
    """The check asks the kernel what the shell's root holds; a symlink there must not lead to the host."""
    cluster.execute("ssh compute-01")
    node = cluster.nodes["compute-01"]
    node.unmount_share("apps")
    host_share = cluster.dir / "shared" / "apps" / "root"
    assert host_share.is_dir()
    # A root of the agent's own: bash and its libraries, and /apps a symlink to the share's host path.
    cluster.execute(
        "mkdir /tmp/t && mkfifo /tmp/t/wait && cp -L --parents /usr/bin/bash $(ldd /usr/bin/bash | grep -o '/[^ ]*') /tmp/t/ && "
        f"ln -s {host_share} /tmp/t/apps"
    )
    shell = node.shell
    assert shell is not None
    root_link = f"/proc/{shell.shell_pid}/root"
    before = os.readlink(root_link)
    # The shell itself turns into a chrooted bash (same pid); the check runs while it sits there.
    step = threading.Thread(
        target=cluster.execute, args=("exec chroot /tmp/t /usr/bin/bash -c 'read -t 4 <>/wait'", 6)
    )
    step.start()
    try:
        deadline = time.monotonic() + 4
        while os.readlink(root_link) == before:
            assert time.monotonic() < deadline, "the shell never chrooted"
            time.sleep(0.05)
        assert os.path.samefile(f"{root_link}/apps", host_share)  # followed, it is the share
        assert not node.sees_share("apps")
    finally:
        step.join()
