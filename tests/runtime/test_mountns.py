"""Each cluster's mounts are in a mount namespace of its own: none in the host's table or another's."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hpcgym.errors import SandboxError
from hpcgym.runtime import Runtime, mountns, overlay
from tests.runtime.conftest import require_sandbox_host


def table(pid: int | str) -> str:
    return Path(f"/proc/{pid}/mountinfo").read_text()


def test_clusters_mount_nothing_in_the_host_table_nor_in_each_other(runtime: Runtime) -> None:
    with (
        runtime.new_cluster(compute_nodes=["compute-01"]) as first,
        runtime.new_cluster(compute_nodes=["compute-01"]) as second,
    ):
        for cluster in (first, second):
            assert cluster.execute("ssh compute-01 hostname").output == "compute-01\n"
            cluster.nodes["compute-01"].unmount_share("apps")  # a mount made later, on request
        host = table("self")
        assert first.host_dir.name not in host and second.host_dir.name not in host
        assert first.mounts is not None and second.mounts is not None
        own, other = table(first.mounts.pid), table(second.mounts.pid)
        # tmpfs, two shares, and per node its root and two share points (one over a local dir).
        assert own.count(first.host_dir.name) >= 9
        assert first.host_dir.name not in other and second.host_dir.name not in own
        # The host reaches the files through the holder's root; the node sees the same tree.
        first.execute("echo from-node > /root/f")
        assert (first.nodes["login01"].root / "root" / "f").read_text() == "from-node\n"
        assert str(first.nodes["login01"].root).startswith(f"/proc/{first.mounts.pid}/root/")


def test_close_ends_the_namespace_and_the_mount_thread_goes_home(runtime: Runtime) -> None:
    cluster = runtime.new_cluster(compute_nodes=[])
    assert cluster.mounts is not None
    holder, ns = cluster.mounts.pid, os.readlink(cluster.mounts.ns_path)
    assert ns != os.readlink("/proc/self/ns/mnt")
    cluster.close()
    assert not Path(f"/proc/{holder}").exists()
    assert not cluster.host_dir.exists()
    # The nodes' last processes may still be exiting (the kernel reaps them): wait, a while.
    deadline = time.monotonic() + 10
    while ns in namespaces_held() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ns not in namespaces_held()  # no process or thread (ours included) keeps it alive


def namespaces_held() -> set[str]:
    held = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                held.add(os.readlink(f"/proc/{pid}/task/{task}/ns/mnt"))
            except OSError:
                continue
    return held


def test_a_namespace_whose_holder_died_refuses_mounts_in_one_line(scratch_dir: Path) -> None:
    require_sandbox_host()
    with ThreadPoolExecutor(1) as spawner:
        mounts = mountns.MountNamespace(spawner)
        os.kill(mounts.pid, 9)
        os.waitpid(mounts.pid, 0)
        with pytest.raises(SandboxError, match="mount namespace is gone"):
            mounts.run(lambda: None)
        mounts.close()


def test_view_and_inner_are_each_others_inverse(scratch_dir: Path) -> None:
    require_sandbox_host()
    with ThreadPoolExecutor(1) as spawner:
        mounts = mountns.MountNamespace(spawner)
        try:
            inner = scratch_dir / "x" / "y"
            view = mounts.view(inner)
            assert str(view) == f"/proc/{mounts.pid}/root{inner}"
            assert mounts.inner(view) == inner
            assert mounts.inner(inner) == inner  # a path from elsewhere is left alone
            assert mounts.inner(Path(f"/proc/{mounts.pid}/rootx")) == Path(f"/proc/{mounts.pid}/rootx")
            # A mount made through run() lands in the namespace, not in ours.
            target = scratch_dir / f"mountns-probe-{os.getpid()}"
            target.mkdir()
            try:
                mounts.run(lambda: overlay.mount_tmpfs(target, 1 << 20))
                assert str(target) in table(mounts.pid)
                assert str(target) not in table("self")
            finally:
                mounts.close()
                target.rmdir()
        finally:
            mounts.close()
