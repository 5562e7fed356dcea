"""Hardening past isolation: what a node may still ask of the kernel, fill, or read about the host.

Each test probes from inside a node and checks the host side, and each would fail without its
protection: the seccomp refusals (io_uring, userfaultfd, perf events, ...), the read-only /dev with a
sized /dev/shm, the caps on the parent cgroup, and mount tables that name no host path, image digest
or host pid.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcgym.errors import SandboxError
from hpcgym.runtime import Cluster, OverlayMode, Runtime
from hpcgym.runtime.cgroup import CGROUP_ROOT, Cgroups, ParentLimits
from hpcgym.runtime.seccomp import AUDIT_ARCH, seccomp_program
from hpcgym.runtime.sweep import process_start_time

from .conftest import require_sandbox_host

# --- seccomp ------------------------------------------------------------------------------------

# Each call is one the kernel grants any uid here (user-mode-only userfaultfd, a software counter on
# the caller itself), so only the filter can refuse it inside a node.
SYSCALL_PROBE = r"""
import ctypes, errno, os, platform, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
name = sys.argv[1]
nr = {
    "x86_64": {"io_uring_setup": 425, "userfaultfd": 323, "perf_event_open": 298},
    "aarch64": {"io_uring_setup": 425, "userfaultfd": 282, "perf_event_open": 241},
}[platform.machine()][name]
if name == "io_uring_setup":
    args = (ctypes.c_uint(1), ctypes.create_string_buffer(120))
elif name == "userfaultfd":
    args = (ctypes.c_int(os.O_CLOEXEC | 1),)  # UFFD_USER_MODE_ONLY
else:
    attr = bytearray(128)
    struct.pack_into("=IIQ", attr, 0, 1, len(attr), 1)  # PERF_TYPE_SOFTWARE, size, TASK_CLOCK
    struct.pack_into("=Q", attr, 40, 1 | 1 << 5 | 1 << 6)  # disabled, exclude_kernel, exclude_hv
    args = (ctypes.create_string_buffer(bytes(attr), len(attr)), 0, -1, -1, ctypes.c_ulong(0))
rc = libc.syscall(nr, *args)
print("ok" if rc >= 0 else errno.errorcode[ctypes.get_errno()])
"""


def probe_on_host(name: str, uid: int) -> str:
    python = Path("/usr/bin/python3")
    if not python.exists():
        pytest.skip("no /usr/bin/python3 on the host to run the probe unfiltered")
    done = subprocess.run(
        [python, "-c", SYSCALL_PROBE, name],
        user=uid,
        group=uid,
        extra_groups=[],
        cwd="/",
        env={},
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("name", "refusal"),
    [("io_uring_setup", "ENOSYS"), ("userfaultfd", "EPERM"), ("perf_event_open", "EPERM")],
)
def test_kernel_interfaces_are_refused_inside_a_node(cluster: Cluster, name: str, refusal: str) -> None:
    uid_base = cluster.config.uid_base
    if probe_on_host(name, uid_base) != "ok":
        pytest.skip(f"this kernel refuses {name} to uid {uid_base} by itself; the filter is not what answers")
    result = cluster.execute(f"python3 - {name} <<'EOF'\n{SYSCALL_PROBE}\nEOF")
    assert result.output == f"{refusal}\n"
    ssh = cluster.execute(f"ssh compute-01 python3 -c {shlex.quote(shlex.quote(SYSCALL_PROBE))} {name}")
    assert ssh.output == f"{refusal}\n"
    shell = cluster.nodes["login01"].shell
    assert shell is not None
    status = Path(f"/proc/{shell.shell_pid}/status").read_text()
    assert re.search(r"^Seccomp:\s+2$", status, re.MULTILINE)  # SECCOMP_MODE_FILTER


# Written out here rather than taken from seccomp.py, so a wrong number in its table shows.
EXPECTED_REFUSALS = {  # name: (x86_64, aarch64, errno)
    "io_uring_setup": (425, 425, errno.ENOSYS),
    "io_uring_enter": (426, 426, errno.ENOSYS),
    "io_uring_register": (427, 427, errno.ENOSYS),
    "userfaultfd": (323, 282, errno.EPERM),
    "perf_event_open": (298, 241, errno.EPERM),
    "open_by_handle_at": (304, 265, errno.EPERM),
    "syslog": (103, 116, errno.EPERM),
    "open_tree_attr": (467, 467, errno.EPERM),
    "mount": (165, 40, errno.EPERM),
    "bpf": (321, 280, errno.EPERM),
    "clone3": (435, 435, errno.ENOSYS),
}
STILL_ALLOWED = {  # read, openat, ptrace, process_vm_readv, personality, name_to_handle_at
    "x86_64": (0, 257, 101, 310, 135, 303),
    "aarch64": (63, 56, 117, 270, 92, 264),
}
CLONE_UNSHARE = {"x86_64": (56, 272), "aarch64": (220, 97)}
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
CLONE_NEWUSER = 0x10000000


def run_filter(program: bytes, arch: int, nr: int, arg0: int = 0) -> int:
    """Run a classic-BPF seccomp program over one `struct seccomp_data` (only the opcodes it uses)."""
    insns = [struct.unpack_from("=HBBI", program, at) for at in range(0, len(program), 8)]
    data = struct.pack("=iIQ6Q", nr, arch, 0, arg0, 0, 0, 0, 0, 0)
    acc = pc = 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            (acc,) = struct.unpack_from("=I", data, k)
        elif code == 0x06:  # BPF_RET | BPF_K
            return k
        else:
            taken = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_seccomp_tables_of_both_architectures(machine: str) -> None:
    program, arch = seccomp_program(machine), AUDIT_ARCH[machine]
    column = 0 if machine == "x86_64" else 1
    for name, numbers in EXPECTED_REFUSALS.items():
        assert run_filter(program, arch, numbers[column]) == RET_ERRNO | numbers[2], name
    for nr in STILL_ALLOWED[machine]:
        assert run_filter(program, arch, nr) == RET_ALLOW, nr
    for nr in CLONE_UNSHARE[machine]:
        assert run_filter(program, arch, nr, arg0=CLONE_NEWUSER) == RET_ERRNO | errno.EPERM
        assert run_filter(program, arch, nr, arg0=0x01000000) == RET_ALLOW  # CLONE_CHILD_SETTID
    assert run_filter(program, 0x40000003, 0) == RET_ERRNO | errno.EPERM  # i386 read
    if machine == "x86_64":
        assert run_filter(program, arch, 0x40000000) == RET_ERRNO | errno.EPERM  # x32 read


# --- /dev ---------------------------------------------------------------------------------------

FILL = r"""
import errno, sys
try:
    with open(sys.argv[1], "wb") as f:
        for _ in range(int(sys.argv[2])):
            f.write(bytes(1 << 20))
    print("wrote")
except OSError as e:
    print(errno.errorcode[e.errno])
"""


def test_dev_is_read_only_and_dev_shm_is_sized(cluster: Cluster) -> None:
    size = cluster.config.limits.dev_shm_bytes
    mib = (size >> 20) + 2
    fill = shlex.quote(FILL)
    for run in (cluster.execute, lambda cmd: cluster.execute(f"ssh compute-01 {shlex.quote(cmd)}")):
        assert run(f"python3 -c {fill} /dev/shm/fill {mib}").output == "ENOSPC\n"
        assert run(f"python3 -c {fill} /dev/fill 1").output == "EROFS\n"
        assert run("echo fine > /dev/null && cat /dev/null && echo ok").output == "ok\n"
    shell = cluster.nodes["login01"].shell
    assert shell is not None
    shm = os.statvfs(f"/proc/{shell.shell_pid}/root/dev/shm")
    assert shm.f_blocks * shm.f_frsize == size
    assert not shm.f_flag & os.ST_RDONLY
    assert os.statvfs(f"/proc/{shell.shell_pid}/root/dev").f_flag & os.ST_RDONLY


# --- the parent cgroup --------------------------------------------------------------------------


def cgroup_dirs_of(pid: int) -> list[Path]:
    dirs = []
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        mounts = [CGROUP_ROOT / c for c in controllers.split(",")] if controllers else [CGROUP_ROOT]
        dirs += [mount / path.lstrip("/") for mount in mounts]
    return dirs


def parent_caps(cgroups: Cgroups) -> list[tuple[Path, int]]:
    limits = ParentLimits.from_host()
    if cgroups.version == 2:
        (parent,) = cgroups.parents
        return [(parent / "pids.max", limits.max_pids), (parent / "memory.max", limits.memory_bytes)]
    memory, pids = cgroups.parents
    return [(memory / "memory.limit_in_bytes", limits.memory_bytes), (pids / "pids.max", limits.max_pids)]


def test_parent_cgroup_caps_every_cluster_together(runtime: Runtime, cluster: Cluster) -> None:
    cgroups = runtime.cgroups
    if cgroups is None:
        pytest.skip("this host lets hpcgym create no cgroups; only per-process rlimits apply")
    shell = cluster.nodes["login01"].shell
    assert shell is not None
    assert cluster.execute("sleep 30 &").exit_code == 0
    # The node's processes sit below every capped parent.
    node_dirs = cgroup_dirs_of(shell.shell_pid)
    for parent in cgroups.parents:
        assert any(parent in d.parents for d in node_dirs), parent
    # Lift the caps, as a parent made by an older hpcgym would have none; detection puts them back.
    for path, _ in parent_caps(cgroups):
        path.write_text("max" if path.name == "pids.max" or cgroups.version == 2 else "-1")
    assert Cgroups.detect() is not None
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for path, cap in parent_caps(cgroups):
        assert int(path.read_text()) == cap, path
        assert path.name != "pids.max" or cap < pid_max
    pids_file = next(p for p, _ in parent_caps(cgroups) if p.name == "pids.max")
    assert int((pids_file.parent / "pids.current").read_text()) >= 2


# --- what a node can read about the host --------------------------------------------------------

NODE_VIEWS = (
    "/proc/self/mountinfo",
    "/proc/self/mounts",
    "/proc/1/mountinfo",
    "/proc/self/cgroup",
    "/proc/1/cgroup",
)


@pytest.fixture(params=[OverlayMode.KERNEL, OverlayMode.FUSE], ids=str)
def mode_cluster(request: pytest.FixtureRequest, images_dir: Path, scratch_dir: Path) -> Iterator[Cluster]:
    # Copy mode is exempt: it serves hosts that refuse us mounts, so its nodes' roots are plain binds
    # from the host's scratch filesystem, whose mountinfo root field is the cluster dir's host path.
    require_sandbox_host()
    mode: OverlayMode = request.param
    if mode is OverlayMode.FUSE and shutil.which("fuse-overlayfs") is None:
        pytest.skip("fuse-overlayfs is not installed")
    with (
        Runtime(images_dir, overlay_mode=mode, scratch_dir=scratch_dir) as rt,
        rt.new_cluster(compute_nodes=["compute-01"]) as cluster,
    ):
        yield cluster


def host_secrets(cluster: Cluster, images_dir: Path) -> list[str]:
    pid = os.getpid()
    secrets = ["/dev/shm/hpcgym", "/root/", ".cache", f"{pid}-{process_start_time(pid)}", cluster.dir.name]
    secrets += [str(cluster.config.scratch_dir), cluster.config.scratch_dir.name]
    for lower in cluster.config.lowers.values():
        secrets += [str(lower.parent), lower.name]
    for manifest in images_dir.glob("*/manifest.json"):
        fields = json.loads(manifest.read_text())
        secrets += [str(fields[key]).removeprefix("sha256:") for key in ("digest", "artifact_sha256")]
    return secrets


def path_parts(text: str) -> set[str]:
    """Every component of every path in `text`, split again at dashes (`hpcgym-<pid>-<start>`)."""
    parts: set[str] = set()
    for path in re.findall(r"/[^\s,]*", text):
        components = path.split("/")
        if path.startswith("/proc/self/fd/"):
            components = components[:-1]  # a descriptor number, not a pid
        for component in components:
            parts.update(re.split(r"[-_.]", component))
    return parts


def test_mount_tables_name_no_host_path_digest_or_pid(mode_cluster: Cluster, images_dir: Path) -> None:
    cluster = mode_cluster
    secrets = host_secrets(cluster, images_dir)
    pid = str(os.getpid())
    readers = {
        "login01": cluster.execute,
        "ssh compute-01 CMD": lambda cmd: cluster.execute(f"ssh compute-01 {shlex.quote(cmd)}"),
    }
    for where, run in readers.items():
        for view in (*NODE_VIEWS, "/proc/1/cmdline", "/proc/1/environ"):
            result = run(f"tr '\\0' ' ' < {view}")
            if view == "/proc/1/environ" and "Permission denied" in result.output:
                # hpcgym's init is non-dumpable, so no process of the node may ptrace it or read its
                # environment (CAP_SYS_PTRACE is dropped): nothing can leak there.
                continue
            assert result.exit_code == 0, (where, view, result.output)
            leaked = [s for s in secrets if s in result.output]
            assert not leaked, (where, view, leaked, result.output)
            assert pid not in path_parts(result.output), (where, view, result.output)
            if view.endswith("cgroup"):
                # A cgroup namespace rooted at the cluster's own cgroup: every hierarchy shows `/`.
                assert all(line.endswith(":/") for line in result.output.splitlines()), result.output
        assert " / / " in run("cat /proc/self/mountinfo").output  # the tables were really read
    # The host's side of the same mounts (the cluster's own mount namespace, where a mount mode
    # keeps them) does name the cluster dir: the probe can see a leak.
    holder = cluster.mounts.pid if cluster.mounts is not None else os.getpid()
    host_view = Path(f"/proc/{holder}/mountinfo").read_text()
    assert cluster.dir.name in host_view


def test_control_socket_peer_name_names_no_host_path(cluster: Cluster) -> None:
    probe = (
        'python3 -c "import socket; s = socket.socket(socket.AF_UNIX); '
        "s.connect('/run/hpcgym/control.sock'); print(s.getpeername())\""
    )
    result = cluster.execute(probe)
    assert result.exit_code == 0
    assert cluster.dir.name not in result.output


def test_proc_shows_a_rocky_boot_not_the_host(cluster: Cluster) -> None:
    """/proc/cmdline, /proc/version and pid 1's argv describe a Rocky node, never the host or bwrap."""
    host_cmdline = Path("/proc/cmdline").read_text()
    host_builder = Path("/proc/version").read_text().split(") ", 1)[0]
    release = os.uname().release
    for run in (cluster.execute, lambda cmd: cluster.execute(f"ssh compute-01 {shlex.quote(cmd)}")):
        cmdline = run("cat /proc/cmdline").output
        assert cmdline != host_cmdline and "root=/dev/mapper/rl-root" in cmdline
        version = run("cat /proc/version").output
        assert host_builder not in version and version.startswith(f"Linux version {release} (mockbuild@")
        assert run("uname -r").output == f"{release}\n"
        assert run("echo forged > /proc/cmdline").exit_code != 0
        assert run("tr '\\0' ' ' < /proc/1/cmdline").output.startswith(
            "/usr/lib/systemd/systemd --switched-root"
        )
    assert "bwrap" not in cluster.execute("ps -eo args").output
    # What bwrap was handed (its seccomp and block pipes) is not left open in the shell's commands.
    assert cluster.execute("ls /proc/self/fd").output.split() == ["0", "1", "2", "3"]


def test_a_runtimes_clusters_share_a_cgroup_sized_from_its_limit(images_dir: Path, scratch_dir: Path) -> None:
    """A server's session limit bounds its clusters' memory and processes together, below the host's caps."""
    require_sandbox_host()
    with Runtime(images_dir, scratch_dir=scratch_dir, max_clusters=2) as rt:
        if rt.cgroups is None:
            pytest.skip("this host lets hpcgym create no cgroups; only per-process rlimits apply")
        limits = rt.config.limits
        caps = dict((path.name, int(path.read_text())) for path, _ in parent_caps(rt.cgroups))
        assert caps["pids.max"] == 2 * limits.episode_max_processes
        memory_cap = caps.get("memory.max", caps.get("memory.limit_in_bytes"))
        assert memory_cap == 2 * limits.episode_memory_bytes
        with rt.new_cluster(compute_nodes=[]) as first, rt.new_cluster(compute_nodes=[]) as second:
            shell = first.nodes["login01"].shell
            assert shell is not None
            for parent in rt.cgroups.parents:
                assert any(parent in d.parents for d in cgroup_dirs_of(shell.shell_pid)), parent
            with pytest.raises(SandboxError, match="max_clusters"):
                rt.new_cluster(compute_nodes=[])
            assert second.execute("echo ok").output == "ok\n"
        with rt.new_cluster(compute_nodes=[]) as third:  # room again once one has closed
            assert third.execute("echo ok").output == "ok\n"
        nested = rt.cgroups.parents
    assert not any(p.exists() for p in nested)
