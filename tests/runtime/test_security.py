"""Isolation: from inside a node the agent reaches nothing of the host and nothing of other episodes.

Each test states one property and would fail if the sandbox lost it (host pid namespace, host
network, a bind of a host path, capabilities, user namespaces, shared uids, a writable lower dir).
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from hpcgym.runtime import Cluster, Runtime

REPO = Path(__file__).resolve().parents[2]


def host_pids_of(cluster: Cluster, node: str = "login01") -> tuple[int, int]:
    shell = cluster.nodes[node].shell
    assert shell is not None
    return shell.pid1, shell.shell_pid


def test_root_inside_is_an_unprivileged_uid_outside(cluster: Cluster) -> None:
    assert cluster.execute("id -u").output == "0\n"
    _, shell_pid = host_pids_of(cluster)
    status = Path(f"/proc/{shell_pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert all(int(u) == cluster.uid_base for u in uids)
    assert cluster.uid_base >= 1000


def test_cannot_see_host_processes(cluster: Cluster) -> None:
    pids = cluster.execute("ls /proc | grep -E '^[0-9]+$'").output.split()
    assert len(pids) < 10
    assert (
        str(os.getpid()) not in pids
        or "pytest" not in cluster.execute(f"cat /proc/{os.getpid()}/cmdline").output
    )
    assert "pytest" not in cluster.execute("cat /proc/[0-9]*/cmdline | tr '\\0' ' '").output


def test_no_network_but_loopback(cluster: Cluster) -> None:
    links = cluster.execute("/usr/bin/ip -o link show").output  # the real iproute2, not the simulated ip
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    # A listener on the host's loopback is not the node's loopback.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        probe = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)\""
        assert cluster.execute(probe).exit_code != 0
    outside = "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)\""
    assert cluster.execute(outside).exit_code != 0
    # The node's own loopback works.
    serve = "python3 -c \"import socket; s=socket.socket(); s.bind(('127.0.0.1', 7777)); s.listen(); "
    serve += "c=socket.create_connection(('127.0.0.1', 7777)); print('loopback ok')\""
    assert cluster.execute(serve).output == "loopback ok\n"


def test_host_files_are_out_of_reach(cluster: Cluster, runtime: Runtime, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("host-secret")
    lower = runtime.config.lowers["rocky-login"]
    for path in (secret, REPO / "pyproject.toml", lower / "etc" / "os-release", runtime.scratch_dir):
        assert cluster.execute(f"ls -d {path}").exit_code != 0, path
    # /etc/shadow and /root inside are the image's, never the host's.
    if Path("/etc/shadow").exists():
        host_root_line = next(
            x for x in Path("/etc/shadow").read_text().splitlines() if x.startswith("root:")
        )
        assert host_root_line not in cluster.execute("cat /etc/shadow").output
    assert "host-secret" not in cluster.execute("grep -rs host-secret /root /etc /tmp /home").output


def test_cannot_mount_or_get_capabilities_back(cluster: Cluster) -> None:
    # mount(2) straight through libc: /usr/bin/mount in the image is a simulated tool, not the syscall.
    for source, fstype, flags in (("none", "tmpfs", 0), ("/etc", "", 4096)):  # 4096 = MS_BIND
        probe = (
            'python3 -c "import ctypes; l=ctypes.CDLL(None, use_errno=True); '
            f"print(l.mount(b'{source}', b'/mnt', b'{fstype}', {flags}, None), ctypes.get_errno())\""
        )
        assert cluster.execute(probe).output == "-1 1\n"  # EPERM
    assert cluster.execute("unshare -Urm true").exit_code != 0
    assert cluster.execute("unshare -U true").exit_code != 0
    effective = int(cluster.execute("awk '/CapEff/ {print $2}' /proc/self/status").output, 16)
    cap_sys_admin, cap_sys_module, cap_sys_ptrace = 21, 16, 19
    for cap in (cap_sys_admin, cap_sys_module, cap_sys_ptrace):
        assert not effective & (1 << cap)


def test_cannot_load_modules(cluster: Cluster) -> None:
    # finit_module(fd, "", 0) straight through libc: refused whatever tools the image has.
    probe = (
        'python3 -c "import ctypes, os, platform; l=ctypes.CDLL(None, use_errno=True); '
        "nr={'x86_64': 313, 'aarch64': 273}[platform.machine()]; fd=os.open('/etc/hostname', 0); "
        "print(l.syscall(nr, fd, b'', 0), ctypes.get_errno())\""
    )
    assert cluster.execute(probe).output == "-1 1\n"


def test_lower_dir_is_never_modified(runtime: Runtime) -> None:
    def fingerprint(root: Path) -> str:
        sha = hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                st = os.lstat(os.path.join(dirpath, name))
                sha.update(
                    f"{dirpath}/{name} {st.st_mode} {st.st_uid} {st.st_size} {st.st_mtime_ns}\n".encode()
                )
        return sha.hexdigest()

    lowers = runtime.config.lowers
    before = {role: fingerprint(path) for role, path in lowers.items()}
    with runtime.new_cluster(compute_nodes=["compute-01"]) as cluster:
        vandal = "rm -rf /usr/share/doc /etc/hosts; chmod 000 /etc/passwd; echo x >> /etc/os-release; touch /newfile"
        cluster.execute(vandal)
        cluster.execute(f"ssh compute-01 '{vandal}'")
        assert cluster.execute("ls /newfile").exit_code == 0
    assert {role: fingerprint(path) for role, path in lowers.items()} == before


def test_kill_all_kills_only_that_nodes_processes(cluster: Cluster, other_cluster: Cluster) -> None:
    cluster.execute("sleep 600 &")
    other_cluster.execute("sleep 700 &")
    cluster.execute("ssh compute-01 'sleep 800 >/dev/null 2>&1 &'")
    cluster.execute("ssh compute-02")
    cluster.execute("sleep 900 &")
    cluster.execute("kill -9 -1")
    assert "sleep 900" not in cluster.execute("ps -eo args").output
    cluster.execute("exit")
    assert "sleep 600" in cluster.execute("ps -eo args").output
    assert "sleep 800" in cluster.execute("ssh compute-01 ps -eo args").output
    assert "sleep 700" in other_cluster.execute("ps -eo args").output


def test_fork_bomb_is_bounded_to_its_node(cluster: Cluster, other_cluster: Cluster) -> None:
    limit = cluster.config.limits.max_processes
    result = cluster.execute(
        "bomb() { bomb | bomb & }; bomb; sleep 2; ls /proc | grep -c '^[0-9]'", timeout_s=8
    )
    count = int(result.output.split()[-1]) if result.output.split()[-1].isdigit() else limit
    assert count <= limit + 5
    assert other_cluster.execute("for i in $(seq 20); do /bin/true; done; echo fine").output == "fine\n"
    cluster.execute("kill -9 -1")


def test_episodes_do_not_share_files(cluster: Cluster, other_cluster: Cluster) -> None:
    cluster.execute("echo mine > /etc/marker; echo mine > /home/marker; echo mine > /tmp/marker")
    for path in ("/etc/marker", "/home/marker", "/tmp/marker"):
        assert other_cluster.execute(f"cat {path}").exit_code != 0


def test_runaway_memory_and_file_size_are_limited(cluster: Cluster) -> None:
    limits = cluster.config.limits
    big = limits.max_memory_bytes * 2
    assert cluster.execute(f"python3 -c 'b = bytearray({big})'").exit_code != 0
    result = cluster.execute(f"head -c {limits.max_file_bytes + 4096} /dev/zero > /tmp/big; ls -l /tmp/big")
    assert str(limits.max_file_bytes + 4096) not in result.output


def test_cluster_memory_is_bounded_as_a_whole(runtime: Runtime) -> None:
    if runtime.cgroups is None:
        pytest.skip("this host lets hpcgym create no cgroups; only per-process rlimits apply")
    budget = runtime.config.limits.episode_memory_bytes
    each = budget // 3  # every process stays under its own RLIMIT_AS; together they exceed the budget
    hog = f"python3 -c 'import time; b = bytes(range(256)) * ({each} // 256); time.sleep(3)'"
    with runtime.new_cluster() as cluster:
        cluster.execute(f"for i in 1 2 3 4 5; do {hog} & done; wait", timeout_s=30)
        assert cluster.cgroup is not None
        peak = (
            int((cluster.cgroup.dirs[0] / "memory.max_usage_in_bytes").read_text())
            if runtime.cgroups.version == 1
            else 0
        )
        assert peak <= budget
        assert cluster.execute("echo survived").output == "survived\n"


def test_cannot_ptrace_host_processes(cluster: Cluster) -> None:
    # The host's pids do not exist in the node's PID namespace: attaching finds no such process.
    probe = (
        'python3 -c "import ctypes; l=ctypes.CDLL(None, use_errno=True); '
        f'print(l.ptrace(16, {os.getpid()}, 0, 0), ctypes.get_errno())"'
    )
    rc, errno = cluster.execute(probe).output.split()
    assert rc == "-1" and errno in ("1", "3")
