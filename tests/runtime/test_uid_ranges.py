"""Host identity per cluster: every live cluster runs as, and writes files as, a uid range of its own.

Each test would fail if clusters shared one host range again: the kernel's per-user budgets (here
inotify instances) would be one pool, and one episode could starve another.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hpcgym.runtime import Cluster, OverlayMode, Runtime
from hpcgym.runtime.hostids import USERNS_CACHE, HostIds, reserved_id_ranges
from hpcgym.runtime.sandbox import descendants_of
from hpcgym.runtime.unpack import ID_RANGE

from .conftest import require_sandbox_host

REPO = Path(__file__).resolve().parents[2]
# Owners inside a node, as tests/images expects them (root, munge 981, slurm 982, alice 2001).
IMAGE_OWNERS = {
    "/": "0:0",
    "/etc/munge": "981:981",
    "/etc/munge/munge.key": "981:981",
    "/var/log/munge": "981:981",
    "/etc/slurm/slurm.conf": "0:0",
    "/usr/bin/passwd": "0:0",
    "/home/alice": "2001:2001",
}
LOGIN_ONLY = {"/var/spool/slurmctld": "982:982"}

# Open inotify instances until the kernel refuses, say how many and why, and hold them.
HOLD_INOTIFY = (
    "python3 -c 'import ctypes, time; libc = ctypes.CDLL(None, use_errno=True); "
    "n = sum(1 for _ in iter(lambda: libc.inotify_init1(0) >= 0, False)); "
    "print(n, ctypes.get_errno(), flush=True); time.sleep(300)' > /tmp/held 2>&1 &"
)
TRY_INOTIFY = (
    "python3 -c 'import ctypes, os; libc = ctypes.CDLL(None, use_errno=True); fd = libc.inotify_init1(0); "
    'print("ok" if fd >= 0 else os.strerror(ctypes.get_errno()))\''
)
EMFILE = 24


@pytest.fixture
def private(runtime: Runtime) -> Runtime:
    if runtime.host_ids is None:
        pytest.skip("this host has no idmapped mounts: every cluster shares the image's uid range")
    return runtime


def host_ids_of(pid: int) -> tuple[set[int], set[int]]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {int(u) for u in fields["Uid"].split()}, {int(g) for g in fields["Gid"].split()}


def shell_pid(cluster: Cluster, node: str = "login01") -> int:
    shell = cluster.nodes[node].shell
    assert shell is not None
    return shell.shell_pid


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def owners_outside(cluster: Cluster, top: Path) -> list[str]:
    """Every entry under the host dir `top` whose uid or gid is outside the cluster's range.

    Whiteouts (0/0 character devices) are left out: overlayfs makes them as its mounter, host root,
    and no node ever sees one (the name they hide is simply gone).
    """
    bad = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                continue
            for host_id in (st.st_uid, st.st_gid):
                if not cluster.uid_base <= host_id < cluster.uid_base + ID_RANGE:
                    bad.append(f"{dirpath}/{name}: {st.st_uid}:{st.st_gid}")
    return bad


def test_two_clusters_run_as_different_host_uids(
    private: Runtime, cluster: Cluster, other_cluster: Cluster
) -> None:
    for c in (cluster, other_cluster):
        c.execute("ssh compute-01 true")
        assert c.execute("id -u; id -g").output == "0\n0\n"
        for node in ("login01", "compute-01"):
            assert host_ids_of(shell_pid(c, node)) == ({c.uid_base}, {c.uid_base})
        # Never the image range: nothing that runs may own the shared lower dirs' files.
        assert abs(c.uid_base - private.config.uid_base) >= ID_RANGE
        assert c.uid_base >= 1000
    assert abs(cluster.uid_base - other_cluster.uid_base) >= ID_RANGE
    # A user inside is its cluster's base plus its uid.
    cluster.execute("setpriv --reuid=2001 --regid=2001 --clear-groups sleep 60 &")
    sleepers: list[int] = []
    deadline = time.monotonic() + 5
    while not sleepers and time.monotonic() < deadline:  # setpriv execs sleep a moment later
        sleepers = [p for p in descendants_of(shell_pid(cluster)) if comm(p) == "sleep"]
    assert [host_ids_of(p) for p in sleepers] == [({cluster.uid_base + 2001}, {cluster.uid_base + 2001})]


def test_files_made_in_a_node_belong_to_its_cluster_range(cluster: Cluster, other_cluster: Cluster) -> None:
    for c in (cluster, other_cluster):
        c.execute("touch /root/made && touch /tmp/alice && chown 2001:2001 /tmp/alice")
        c.execute("echo shared > /home/shared-file && ssh compute-01 touch /root/remote")
        login, compute = c.nodes["login01"].dir / "upper", c.nodes["compute-01"].dir / "upper"
        assert os.lstat(login / "root/made").st_uid == c.uid_base
        assert os.lstat(login / "root/made").st_gid == c.uid_base
        assert os.lstat(login / "tmp/alice").st_uid == c.uid_base + 2001
        assert os.lstat(compute / "root/remote").st_uid == c.uid_base
        assert os.lstat(c.dir / "shared/home/upper/shared-file").st_uid == c.uid_base


@pytest.mark.parametrize("node", ["login01", "compute-01"])
def test_image_files_keep_their_owners_inside(cluster: Cluster, other_cluster: Cluster, node: str) -> None:
    owners = IMAGE_OWNERS | (LOGIN_ONLY if node == "login01" else {})
    command = "stat -c '%u:%g %n' " + " ".join(owners)
    if node != "login01":
        command = f"ssh {node} {shlex.quote(command)}"
    expected = "".join(f"{ids} {path}\n" for path, ids in owners.items())
    for c in (cluster, other_cluster):
        assert c.execute(command).output == expected
        # Nothing in the image shows up as the overflow id (an owner the map left out).
        assert c.execute("find /etc /usr/bin /var -xdev -uid 65534 -o -gid 65534 | head -3").output == ""


def test_exhausting_inotify_in_one_cluster_leaves_the_other_alone(
    private: Runtime, cluster: Cluster, other_cluster: Cluster
) -> None:
    # The real attack: while the host range was one pool, this made inotify_init fail everywhere.
    assert other_cluster.execute(TRY_INOTIFY).output == "ok\n"
    cluster.execute(HOLD_INOTIFY)
    held = ""
    deadline = time.monotonic() + 10
    while not held and time.monotonic() < deadline:
        held = cluster.execute("cat /tmp/held").output.strip()
        time.sleep(0.05)
    count, errno = (int(x) for x in held.split())
    assert errno == EMFILE and count > 0
    assert cluster.execute(TRY_INOTIFY).output == "Too many open files\n"
    assert other_cluster.execute(TRY_INOTIFY).output == "ok\n"
    assert other_cluster.execute(f"ssh compute-01 {shlex.quote(TRY_INOTIFY)}").output == "ok\n"


def test_no_node_file_leaves_its_cluster_range(
    private: Runtime, cluster: Cluster, other_cluster: Cluster
) -> None:
    moves = [
        "chmod 600 /etc/passwd",  # a copy-up of a root file
        "chown munge:munge /etc/hosts && chown 65535:65535 /etc/motd",  # the top of the range
        "chown 70000 /etc/hosts",  # outside the range: refused inside
        "chown -R slurm: /var/spool/slurmd && mkdir -p /home/alice/x && chown alice: /home/alice/x",
        "cp -a /etc/munge /root/munge-copy && mv /etc/slurm /etc/slurm.old",
        "ln -s /etc/shadow /root/link && mkfifo /root/fifo && mknod /root/null c 1 3",
        "ssh compute-01 'touch /etc/z && chown 982:982 /etc/z && chmod 4755 /usr/bin/passwd'",
    ]
    for c in (cluster, other_cluster):
        for move in moves:
            c.execute(move)
        assert "Invalid argument" in c.execute("chown 70000 /etc/hosts").output
        tops = [c.dir / "shared" / name / "upper" for name in ("home", "apps")]
        for node in c.nodes.values():
            if node.is_mounted():
                tops += [node.dir / "upper", node.dir / "local"]
        # The upper dirs hold every file a node has written; the merged tree shows the image too.
        for top in [*tops, c.nodes["login01"].root / "etc", c.nodes["compute-01"].root / "usr/bin"]:
            assert owners_outside(c, top) == [], top
        assert os.lstat(c.nodes["login01"].dir / "upper/etc/motd").st_uid == c.uid_base + 65535


def test_lower_views_are_read_only_and_go_at_close(images_dir: Path, scratch_dir: Path) -> None:
    require_sandbox_host()
    # A runtime of its own, with no warm pool that could take the freed slot again at once.
    with Runtime(images_dir, scratch_dir=scratch_dir) as runtime:
        if runtime.host_ids is None:
            pytest.skip("this host has no idmapped mounts")
        image = runtime.config.lowers["rocky-login"]
        with runtime.new_cluster(compute_nodes=["compute-01"]) as cluster:
            view = cluster.lowers["rocky-login"]
            assert view != image
            assert os.stat(view / "etc/munge/munge.key").st_uid == cluster.uid_base + 981
            with pytest.raises(OSError, match="Read-only file system"):
                (view / "etc/hpcgym-test").write_text("x")
            lock = runtime.host_ids.lock_dir / f"{cluster.uid_base}.lock"
            fd = os.open(lock, os.O_RDWR)
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
        assert not view.exists()
        # The image on disk is untouched: still the image range.
        assert os.stat(image / "etc/munge/munge.key").st_uid == runtime.config.uid_base + 981
        # The slot is free again: its lock can be taken.
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hpcgym.runtime.hostids import HostIds
    slots = [HostIds(int(sys.argv[1]), Path(sys.argv[2]), reserved=[]).take() for _ in range(2)]
    print(" ".join(str(s.uid_base) for s in slots), flush=True)
    time.sleep(600)
    """
)


def test_slots_are_exclusive_across_processes_and_freed_by_death(tmp_path: Path) -> None:
    # Another process on the host holds two slots; ours skips them, and gets them once it is killed.
    env = {**os.environ, "PYTHONPATH": str(REPO / "env")}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "1000000", str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout is not None
        theirs = [int(b) for b in holder.stdout.readline().split()]
        ours = HostIds(1_000_000, tmp_path, reserved=[])
        mine = [ours.take() for _ in range(3)]
        assert theirs == [200_000, 200_000 + ID_RANGE]
        assert not {s.uid_base for s in mine} & set(theirs)
        assert len({s.uid_base for s in mine}) == 3
        holder.kill()
        holder.wait()
        mine[0].release()
        again = ours.take()
        assert again.uid_base == 200_000
    finally:
        holder.kill()
        holder.wait()


def test_slots_skip_the_image_range_and_other_owners(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "subuid").write_text("builder:200000:65536\n")
    (etc / "subgid").write_text("builder:400000:1000\n")
    (etc / "passwd").write_text("root:x:0:0::/root:/bin/bash\nodd:x:600000:600000::/:/bin/false\n")
    (etc / "group").write_text("root:x:0:\n")
    reserved = reserved_id_ranges(etc)
    ids = HostIds(1_000_000, tmp_path / "locks", reserved=reserved, max_slots=20)
    image = range(1_000_000, 1_000_000 + ID_RANGE)
    for base in ids.bases:
        slot = range(base, base + ID_RANGE)
        assert not any(r.start < slot.stop and slot.start < r.stop for r in [*reserved, image]), base
    assert ids.bases[0] == 200_000 + ID_RANGE
    assert 200_000 + 3 * ID_RANGE not in ids.bases  # 396608..462143 holds subgid 400000
    assert 200_000 + 6 * ID_RANGE not in ids.bases  # 593216..658751 holds uid 600000


def test_a_host_without_idmapped_mounts_says_so_and_shares_the_image_range(
    images_dir: Path, scratch_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    require_sandbox_host()
    monkeypatch.setattr(
        "hpcgym.runtime.host.idmap_unsupported_reason", lambda *args: "no idmapped mounts (test)"
    )
    with caplog.at_level(logging.WARNING), Runtime(images_dir, scratch_dir=scratch_dir) as runtime:
        assert runtime.host_ids is None
        assert any("no idmapped mounts (test)" in r.getMessage() for r in caplog.records)
        with runtime.new_cluster(compute_nodes=[]) as cluster:
            assert cluster.uid_base == runtime.config.uid_base
            assert host_ids_of(shell_pid(cluster))[0] == {runtime.config.uid_base}
            assert cluster.execute("stat -c %u:%g /etc/munge/munge.key").output == "981:981\n"


@pytest.mark.parametrize("mode", [OverlayMode.FUSE, OverlayMode.COPY])
def test_other_overlay_modes_get_their_own_range_too(
    images_dir: Path, scratch_dir: Path, mode: OverlayMode
) -> None:
    require_sandbox_host()
    with Runtime(images_dir, overlay_mode=mode, scratch_dir=scratch_dir) as runtime:
        if runtime.host_ids is None:
            pytest.skip("this host has no idmapped mounts")
        with runtime.new_cluster(compute_nodes=["compute-01"]) as cluster:
            assert cluster.uid_base != runtime.config.uid_base
            assert host_ids_of(shell_pid(cluster))[0] == {cluster.uid_base}
            assert cluster.execute("stat -c %u:%g /etc/munge/munge.key").output == "981:981\n"
            cluster.execute("touch /root/made && chmod 600 /etc/passwd && ssh compute-01 touch /root/r")
            node = cluster.nodes["login01"]
            # In copy mode the node's root is its own tree; in fuse mode changes land in the upper dir.
            where = node.root if mode is OverlayMode.COPY else node.dir / "upper"
            assert os.lstat(where / "root/made").st_uid == cluster.uid_base
            assert os.lstat(where / "etc/passwd").st_uid == cluster.uid_base
            assert owners_outside(cluster, where / "etc") == []
            views = list(cluster.lowers.values())
        assert not [v for v in views if v.exists()]


def test_the_user_namespaces_kept_are_bounded(tmp_path: Path) -> None:
    # A long-lived server uses ever more distinct slots as other processes take and free low ones;
    # the namespaces of slots no longer held must not pile up with them.
    if os.geteuid() != 0:
        pytest.skip("making user namespaces with a map needs root")
    ids = HostIds(1_000_000, tmp_path, reserved=[])
    held = [ids.take() for _ in range(USERNS_CACHE + 8)]
    for slot in held:
        slot.idmap_fd()
    assert ids.cached_namespaces == USERNS_CACHE + 8  # all held: all kept
    for slot in held[1:]:
        slot.release()
    # The next slot never used before (another process freed it) makes room by closing the others.
    fresh = ids.bases[USERNS_CACHE + 8]
    ids.userns_fd(fresh)
    assert ids.cached_namespaces == 2  # held[0]'s, which is still held, and the new one
    assert os.readlink(f"/proc/self/fd/{held[0].idmap_fd()}").startswith("user:")
    held[0].release()
    ids.close()
