"""The controller's file work on a node cannot be turned against the host, stall, or end the episode.

Each test is an attack typed by the agent as root in a node, followed by a check on the host: the
planted path outside the node is untouched, the step came back, and another episode in the same
process still answers. The controller (host root) writes pid files, logs, `munge -o` and `curl -o`
output and reads configs inside nodes, so every one of those is a way in unless it stays relative to
the node's root.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcgym.episode import Episode

# Swaps two names atomically in a tight loop (renameat2 RENAME_EXCHANGE), as a TOCTOU racer would.
RACER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
nr = {"x86_64": 316, "aarch64": 276}[os.uname().machine]
a, b = sys.argv[1].encode(), sys.argv[2].encode()
while True:
    libc.syscall(nr, -100, a, -100, b, 2)
"""


@pytest.fixture
def bystander(runtime) -> Iterator[Episode]:
    with Episode(runtime) as ep:
        yield ep


def host_marker() -> Path:
    path = Path("/tmp") / f"hpcgym-pwned-{secrets.token_hex(6)}"
    assert not path.exists()
    return path


def assert_still_fine(*episodes: Episode) -> None:
    for ep in episodes:
        assert ep.step("echo alive").output == "alive\n"
        assert ep.step("systemctl is-active munge").exit_code in (0, 3)
        assert ep.step("sinfo -h -o %P").exit_code == 0


def test_symlinked_temp_and_target_names_never_write_host_files(episode, bystander):
    marker = host_marker()
    # The old temp-file name, the target and a parent dir, each a symlink to a host path.
    episode.step(f"ln -s {marker} /root/.o.hpcgym-tmp; ln -s {marker}.t /root/t; ln -s /tmp /root/d")
    for out in ("/root/o", "/root/t", f"/root/d/{marker.name}.d"):
        assert episode.step(f"munge -n -o {out}").exit_code == 0
    for suffix in ("", ".t", ".d"):
        assert not Path(f"{marker}{suffix}").exists()
    # What was written landed inside the node, where the agent asked.
    assert episode.step("head -c 6 /root/o").output == "MUNGE:"
    assert episode.step(f"test -f /tmp/{marker.name}.d").exit_code == 0
    assert_still_fine(episode, bystander)


def test_pid_file_and_log_paths_from_node_configs_stay_inside_the_node(episode):
    marker = host_marker()
    episode.step(
        f"sed -i 's|^SlurmctldPidFile=.*|SlurmctldPidFile=/../../../../..{marker}|' /etc/slurm/slurm.conf"
    )
    assert episode.step("systemctl restart slurmctld").exit_code == 0
    assert not marker.exists()
    assert episode.step(f"cat {marker}").output.strip() == episode.step("pidof slurmctld").output.strip()
    # A daemon log that is a symlink out of the node.
    episode.step("ssh compute-01")
    log_marker = host_marker()
    episode.step(f"rm -f /var/log/slurm/slurmd.log; ln -s {log_marker} /var/log/slurm/slurmd.log")
    assert episode.step("systemctl restart slurmd").exit_code == 0
    assert not log_marker.exists()
    assert "slurmd" in episode.step(f"cat {log_marker}").output


def test_stop_never_deletes_host_files_through_a_pid_file(episode):
    victim = host_marker()
    victim.write_text("keep me\n")
    try:
        episode.step(f"sed -i 's|^PIDFile=.*|PIDFile={victim}|' /usr/lib/systemd/system/munge.service")
        episode.step("systemctl daemon-reload; systemctl restart munge")
        assert episode.step("systemctl stop munge").exit_code == 0
        assert victim.read_text() == "keep me\n"
    finally:
        victim.unlink()


def test_renaming_a_parent_under_the_controller_cannot_redirect_it(episode, bystander):
    marker = host_marker()
    victim = host_marker()
    victim.write_text("keep me\n")
    try:
        # /root/a is a real directory and /root/b a symlink to the host's /tmp, swapped non-stop.
        episode.step("mkdir /root/a; ln -s /tmp /root/b; touch /root/a/" + victim.name)
        episode.step(f"printf %s {RACER!r} > /root/racer.py")
        episode.step("python3 /root/racer.py /root/a /root/b >/dev/null 2>&1 &")
        episode.step(
            f"sed -i 's|^PIDFile=.*|PIDFile=/root/a/{victim.name}|' /usr/lib/systemd/system/munge.service"
        )
        episode.step("systemctl daemon-reload")
        for _ in range(30):
            episode.step(f"munge -n -o /root/a/{marker.name}")
            episode.step("systemctl restart munge")
        assert not marker.exists()
        assert victim.read_text() == "keep me\n"
        assert_still_fine(bystander)
    finally:
        episode.step("pkill -f racer.py")
        victim.unlink()


def test_fifos_where_the_controller_reads_or_writes_do_not_block_it(episode, bystander):
    episode.step("rm -f /run/munge/munged.pid; mkfifo /run/munge/munged.pid")
    episode.step("ssh compute-01")
    episode.step("rm -f /var/log/slurm/slurmd.log; mkfifo /var/log/slurm/slurmd.log")
    episode.step("cat /var/log/slurm/slurmd.log > /dev/null &")  # a reader, so open(O_WRONLY) would succeed
    episode.step("rm -f /etc/munge/munge.key; mkfifo /etc/munge/munge.key")
    started = time.monotonic()
    episode.step("systemctl restart slurmd")
    restart = episode.step("systemctl restart munge")
    assert time.monotonic() - started < 10
    assert restart.exit_code != 0  # munged cannot use a FIFO as its key, as the real one cannot
    episode.step("exit")
    assert episode.step("systemctl restart munge").exit_code == 0
    assert_still_fine(episode, bystander)


def test_huge_sparse_config_costs_the_controller_nothing(episode):
    def rss_kib() -> int:
        status = Path(f"/proc/{os.getpid()}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])

    episode.step("truncate -s 256M /etc/slurm/slurm.conf")
    before = rss_kib()
    for _ in range(3):
        episode.step("sinfo")
        episode.step("systemctl restart slurmctld")
    assert rss_kib() - before < 64 * 1024


def test_full_disk_and_blocked_paths_are_the_daemons_problem(episode, bystander):
    # A directory where the pid file goes: the daemon runs without one, as slurmd does.
    episode.step("systemctl stop munge; rm -f /run/munge/munged.pid; mkdir /run/munge/munged.pid")
    assert episode.step("systemctl start munge").exit_code == 0
    assert episode.step("pgrep -x munged").exit_code == 0
    into_dir = episode.step("munge -n -o /root")
    assert (into_dir.output, into_dir.exit_code) == (
        'munge: Error: Failed to open output file "/root": Is a directory\n',
        1,
    )
    # A full tmpfs: pid files and logs cannot be written; the episode goes on.
    # Files are capped at 512 MiB each (RLIMIT_FSIZE), the episode's tmpfs at 1 GiB: three fill it.
    episode.step("for i in 1 2 3; do dd if=/dev/zero of=/root/fill$i bs=1M count=500 2>/dev/null; done")
    episode.step("rmdir /run/munge/munged.pid")
    episode.step("systemctl restart munge slurmctld")
    full = episode.step("munge -n -o /root/cred")
    assert full.exit_code == 1
    assert full.output.startswith('munge: Error: Failed to write to "/root/cred": No space left on device')
    episode.step("curl -s -o /root/page http://localhost/")
    episode.step("rm -f /root/fill*")
    assert episode.step("systemctl restart munge").exit_code == 0
    assert_still_fine(episode, bystander)


def test_symlink_loops_read_as_missing_not_as_a_controller_failure(episode):
    episode.step("ln -sf /etc/loop-a /etc/loop-b; ln -sf /etc/loop-b /etc/loop-a")
    episode.step("rm -f /etc/hosts; ln -s /etc/loop-a /etc/hosts")
    episode.step("rm -f /etc/slurm/slurm.conf; ln -s /etc/loop-a /etc/slurm/slurm.conf")
    episode.step("systemctl restart slurmctld munge")
    episode.step("sinfo")
    assert episode.step("echo alive").output == "alive\n"


def test_unencodable_paths_are_a_tool_error_not_a_controller_failure(episode):
    episode.step(r"sed -i 's|^SlurmctldPidFile=.*|SlurmctldPidFile=/run/a\x00b|' /etc/slurm/slurm.conf")
    episode.step("systemctl restart slurmctld")
    assert episode.step("curl -s -o $'/root/a\\x00b' http://localhost/ ; echo rc=$?").exit_code == 0
    assert episode.step("echo alive").output == "alive\n"


def test_huge_remote_output_is_bounded_in_the_controller(episode):
    def rss_kib() -> int:
        status = Path(f"/proc/{os.getpid()}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])

    before = rss_kib()
    result = episode.step("ssh compute-01 head -c 300M /dev/zero | wc -c")
    assert rss_kib() - before < 200 * 1024
    assert int(result.output.split()[-1]) <= 2 << 20
    assert episode.step("ssh compute-01 echo ok").output == "ok\n"


def test_ids_the_node_cannot_map_leave_no_host_root_file(episode, bystander):
    # The daemon's uid comes from the node's own /etc/passwd; one outside the node's id range used
    # to leave a fresh log behind owned by host root (the node sees it as 65534).
    episode.step("sed -i 's/^munge:x:[0-9]*:/munge:x:70000:/' /etc/passwd; rm -rf /var/log/munge")
    assert episode.step("systemctl restart munge").exit_code != 0
    assert episode.step("find / -xdev \\( -uid 65534 -o -gid 65534 \\) -newer /etc/passwd").output == ""
    assert_still_fine(bystander)


def test_files_written_under_a_share_land_in_the_share(episode, bystander):
    """/home and /apps are binds in the node: the controller writes what the node would see there."""
    assert episode.step("munge -n -o /home/alice/cred && ls -l /home/alice/cred").exit_code == 0
    seen = episode.step("ssh compute-01 cat /home/alice/cred").output
    assert seen.startswith("MUNGE:")
    assert episode.step("cat /home/alice/cred").output == seen
    # Where the share is stale on a node, the node's write fails as its own would; nothing else does.
    episode.step("ssh compute-01 true")
    episode.cluster.nodes["compute-01"].make_share_stale("apps")
    out = episode.step("ssh compute-01 munge -n -o /apps/cred")
    assert out.exit_code != 0 and "Stale file handle" in out.output
    # Every other way the controller touches the stale tree is the node's error too.
    for command in ("mount -o remount /apps", "mkdir -p /apps/x", "chmod 700 /apps", "umount -l /apps"):
        episode.step(f"ssh compute-01 {command}")
    assert episode.step("ssh compute-01 mount /apps").exit_code == 0
    assert episode.step("munge -n -o /apps/cred && cat /apps/cred").output.startswith("MUNGE:")
    assert_still_fine(episode, bystander)
