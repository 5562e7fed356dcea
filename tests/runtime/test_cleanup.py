"""Cleanup: after close, after an exception, and after the owning process is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpcgym.runtime import Runtime
from hpcgym.runtime.cgroup import Cgroups
from hpcgym.runtime.sweep import mount_points, sweep_stale

REPO = Path(__file__).resolve().parents[2]


def mounts_under(path: Path) -> list[Path]:
    return [p for p in mount_points() if p == path or path in p.parents]


def mount_ns(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/mnt")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; so is a process that exits while we read it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_many_clusters_leave_nothing_behind(runtime: Runtime) -> None:
    before = set(os.listdir(runtime.scratch_dir))
    pids: list[int] = []
    dirs: list[Path] = []
    cgroups: list[Path] = []
    for i in range(12):
        with runtime.new_cluster(compute_nodes=["compute-01"]) as cluster:
            cluster.execute("sleep 300 & echo x > /home/f")
            if i % 3 == 0:
                cluster.execute("ssh compute-01 'sleep 300 >/dev/null 2>&1 &'")
            dirs.append(cluster.host_dir)
            if cluster.mounts is not None:
                pids.append(cluster.mounts.pid)  # the holder of the cluster's mount namespace
            cgroups += list(cluster.cgroup.dirs) if cluster.cgroup else []
            for node in cluster.nodes.values():
                if node.shell is not None:
                    pids += [node.shell.pid1, node.shell.shell_pid]
    time.sleep(0.2)
    assert not [p for p in pids if alive(p)]
    for d in dirs:
        assert not d.exists()
        assert not mounts_under(d)
    assert not [c for c in cgroups if c.exists()]
    # Only the warm pool's ready clusters remain.
    assert len(set(os.listdir(runtime.scratch_dir)) - before) <= runtime.pool.size
    # Every bwrap this process started was waited for: none is left a zombie (the soak's server
    # once kept one for every other episode it closed).
    assert _zombie_children() == []


def _zombie_children() -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[:2] == ["Z", str(os.getpid())]:
            found.append(int(name))
    return found


def test_exception_inside_with_block_cleans_up(runtime: Runtime) -> None:
    with pytest.raises(ZeroDivisionError), runtime.new_cluster() as cluster:
        cluster.execute("true")
        shell = cluster.nodes["login01"].shell
        assert shell is not None
        pid, where = shell.shell_pid, cluster.host_dir
        raise ZeroDivisionError
    assert not alive(pid)
    assert not where.exists() and not mounts_under(where)


OWNER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hpcgym.runtime import Runtime
    rt = Runtime(Path(sys.argv[1]), scratch_dir=Path(sys.argv[2]), pool_size=1)
    clusters = [rt.new_cluster(compute_nodes=["compute-01"]) for _ in range(3)]
    clusters[0].execute("ssh compute-01 true")
    rt.pool.wait_full()
    pids = [n.shell.shell_pid for c in clusters for n in c.nodes.values() if n.shell]
    pids += [c.mounts.pid for c in clusters]  # each holds its cluster's mount namespace
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(600)
    """
)


def test_sigkill_of_the_owner_then_sweep_leaves_nothing(images_dir: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    scratch = Path("/dev/shm") / f"hpcgym-sweep-test-{os.getpid()}"
    scratch.mkdir(mode=0o755)
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO / "env")}
        owner = subprocess.Popen(
            [sys.executable, "-c", OWNER, str(images_dir), str(scratch)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert owner.stdout is not None
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) >= 7
        # Every cluster's mounts are in a namespace of its own, none in the host's table.
        assert not mounts_under(scratch)
        assert all(mount_ns(p) != mount_ns(os.getpid()) for p in pids[-3:])
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        deadline = time.monotonic() + 5
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in pids if alive(p)]
        swept = sweep_stale(scratch)
        assert len(swept) == 4  # three clusters and the pool's one
        assert not mounts_under(scratch)
        assert os.listdir(scratch) == []
        groups = Cgroups.detect()
        if groups is not None:
            groups.sweep_stale()
            for parent in groups.parents:
                assert not [c for c in parent.iterdir() if c.name.startswith(f"hpcgym-{owner.pid}-")]
    finally:
        for point in sorted(mounts_under(scratch), key=lambda p: len(p.parts), reverse=True):
            subprocess.run(["umount", "-l", str(point)], check=False)
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


def test_sweep_leaves_live_owners_alone(runtime: Runtime) -> None:
    with runtime.new_cluster() as cluster:
        sweep_stale(runtime.scratch_dir)
        assert cluster.host_dir.exists() and cluster.dir.exists()
        assert cluster.execute("echo ok").output == "ok\n"


def test_sweep_ends_processes_a_dead_owner_left_in_its_cgroup() -> None:
    groups = Cgroups.detect()
    if groups is None:
        pytest.skip("this host gives hpcgym no cgroups")
    # A dead owner's name (pid 1 with a start time it never had) and a survivor inside its cgroup.
    stale = [parent / "hpcgym-1-1-000000" for parent in groups.parents]
    for directory in stale:
        directory.mkdir(exist_ok=True)
    survivor = subprocess.Popen(["sleep", "300"])
    try:
        for directory in stale:
            (directory / "cgroup.procs").write_text(str(survivor.pid))
        groups.sweep_stale()
        assert survivor.wait(timeout=5) == -signal.SIGKILL
        assert not any(directory.exists() for directory in stale)
    finally:
        survivor.kill()
