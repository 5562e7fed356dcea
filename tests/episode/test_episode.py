"""Whole episodes: agent commands through the real shell, stubs, control socket, controller, services."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from hpcgym.episode import Episode, nodes
from tests.conftest import REPO

CAPTURES = REPO.parent / "shared" / "reference" / "slurm-22.05"


def capture(state: str, command: str) -> str:
    if not CAPTURES.is_dir():
        pytest.skip(f"reference captures not found at {CAPTURES}")
    index = json.loads((CAPTURES / state / "index.json").read_text())
    entry = next(e for e in index if e["command"] == command)
    return (CAPTURES / state / entry["file"]).read_text()


@pytest.mark.parametrize(
    "command",
    ["sinfo", "sinfo -N", "sinfo -R", 'sinfo -o "%N %T"', "sinfo -s", "squeue", "scontrol show partition"],
)
def test_slurm_through_the_stub_matches_real_slurm(episode, command):
    # Typed at the prompt exactly as in the capture: bash, stub, socket and controller all take part.
    result = episode.step(command)
    assert (result.output, result.exit_code) == (capture("10-all-idle", command), 0)


def test_services_run_as_real_processes(episode):
    assert episode.step("systemctl is-active munge slurmctld httpd").output == "active\nactive\nactive\n"
    ps = episode.step("ps -eo user,comm --no-headers").output.split("\n")
    assert "munge    munged" in ps and "slurm    slurmctld" in ps
    pid = episode.step("cat /run/munge/munged.pid").output.strip()
    assert episode.step("pidof munged").output.strip() == pid
    episode.step("ssh compute-02")
    assert episode.step("pgrep -x slurmd").exit_code == 0


def test_insecure_munge_key_stops_munged_like_the_real_one(episode):
    episode.step("chmod 0644 /etc/munge/munge.key")
    restart = episode.step("systemctl restart munge")
    assert restart.exit_code == 1
    assert "Job for munge.service failed" in restart.output
    assert episode.step("systemctl is-active munge").output == "failed\n"
    assert episode.step("pgrep -x munged").exit_code == 1
    journal = episode.step("journalctl -u munge --no-pager").output
    assert (
        'munged: Error: Keyfile is insecure: "/etc/munge/munge.key" should not be readable or writable by group'
        " (perms=0644)" in journal
    )
    episode.step("chmod 0400 /etc/munge/munge.key")
    assert episode.step("systemctl restart munge").exit_code == 0
    assert episode.step("systemctl is-active munge").output == "active\n"


def test_dead_slurmd_makes_the_node_not_respond_then_down(episode):
    episode.step("ssh compute-03")
    episode.step("pkill -9 -x slurmd")
    episode.step("exit")
    state = ""
    for _ in range(40):  # SlurmdTimeout=30 s of virtual time at 5 s a step, plus the ping interval
        state = episode.step("sinfo -h -n compute-03 -o %t").output.strip()
        if state == "down*":
            break
    assert state == "down*"


def test_srun_runs_on_the_compute_node(episode):
    result = episode.step("srun -w compute-02 hostname")
    assert (result.output, result.exit_code) == ("compute-02\n", 0)


def test_a_task_can_call_the_cluster_tools_and_reads_the_virtual_clock(episode):
    # The task's own stub calls reach the controller while srun waits for the task.
    result = episode.step("srun -w compute-02 bash -c 'sinfo -h -n compute-02 -o %t; date +%Y'")
    assert (result.output, result.exit_code) == ("mix\n2026\n", 0)


def test_same_commands_same_bytes(runtime):
    commands = [
        "sinfo",
        "date",
        "sbatch --wrap 'sleep 30'",
        "squeue",
        "scontrol show job 1",
        "systemctl status slurmctld",
    ]

    def transcript() -> list[tuple[str, int]]:
        with Episode(runtime) as episode:
            return [(r.output, r.exit_code) for r in map(episode.step, commands)]

    first, second = transcript(), transcript()
    assert first == second
    assert first[2][0] == "Submitted batch job 1\n"


def test_tools_that_read_stdin_get_it(episode):
    decoded = episode.step("echo hello | munge | unmunge")
    assert decoded.exit_code == 0
    assert decoded.output.startswith("STATUS:          Success (0)\nENCODE_HOST:     login01 (10.10.0.10)\n")
    assert decoded.output.endswith("LENGTH:          6\n\nhello\n")
    assert episode.step("printf '#!/bin/bash\\nsleep 60\\n' | sbatch").output == "Submitted batch job 1\n"
    # A tool that does not read stdin leaves it alone, so an endless producer cannot block it.
    assert episode.step("yes | sinfo -h -o %P").output == "compute*\ngpu\n"


def test_a_node_without_a_route_to_the_controller(episode):
    episode.step("ssh compute-01")
    episode.step(
        "sed -i s/GATEWAY0=10.10.1.254/GATEWAY0=10.10.9.254/ /etc/sysconfig/network-scripts/route-eth0"
    )
    episode.step("ifdown eth0; ifup eth0")
    refused = episode.step("sinfo")
    assert (refused.output, refused.exit_code) == (
        "slurm_load_partitions: Unable to contact slurm controller (connect failure)\n",
        1,
    )
    episode.step("exit")
    states = [episode.step("sinfo -h -n compute-01 -o %t").output.strip() for _ in range(12)]
    assert "down*" in states, states
    episode.step(
        "ssh compute-01 'sed -i s/10.10.9.254/10.10.1.254/ /etc/sysconfig/network-scripts/route-eth0'"
    )
    episode.step("ssh compute-01 'ifdown eth0; ifup eth0'")
    back = [episode.step("sinfo -h -n compute-01 -o %t").output.strip() for _ in range(3)]
    assert back[-1] == "idle", back  # ReturnToService=1 brings a DOWN node back once it registers


def test_controller_never_follows_a_symlink_out_of_the_node(episode):
    host_only = REPO / "pyproject.toml"
    episode.step(
        f"ln -s {host_only} /etc/escape-abs; ln -s ../../../../../../../../etc/hostname /etc/escape-rel"
    )
    assert episode.nodes.read("login01", "/etc/escape-abs") is None  # the node has no such file
    assert episode.nodes.read("login01", "/etc/escape-rel") == b"login01\n"  # ".." stops at the node's /
    episode.step("mkfifo /etc/munge/fifo")
    assert episode.nodes.read("login01", "/etc/munge/fifo") is None  # never blocks on a FIFO


def test_closing_under_a_request_in_flight_starts_nothing_and_blames_no_one(runtime, caplog):
    # A background srun holds a request on the login node's socket while its tasks run on the
    # compute nodes; closing the episode then stops those nodes under it. The request's work
    # (restarting what it finds dead) must not start shells in a cluster being torn down.
    episode = Episode(runtime)
    if episode.cluster.cgroup is None:
        episode.close()
        pytest.skip("no cgroup to tell this cluster's processes by")
    cgroups = episode.cluster.cgroup.dirs
    try:
        episode.step("srun -N4 sleep 60 &")
        time.sleep(1.5)
        assert episode.step("squeue -h -o %T").output.split() == ["RUNNING"]
    finally:
        with caplog.at_level(logging.ERROR):
            episode.close()
            # The request's worker thread finishes after the teardown (each of srun's four tasks
            # may run for the host-side bound of 10 s where shells are started again under it).
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and any(
                t.name == "hpcgym-channel-login01" for t in threading.enumerate()
            ):
                time.sleep(0.1)
    assert not [r.getMessage() for r in caplog.records if "controller failed" in r.getMessage()]
    # A shell started in the teardown keeps the cluster's cgroup busy: it is never removed.
    assert [d for d in cgroups if d.exists()] == []


def test_a_node_file_just_changed_has_no_version_until_its_ctime_settles(episode: Episode) -> None:
    # A cache keyed on the version (Network's parsed /etc/hosts) must not trust a ctime a second
    # same-size write could share on a coarse-clock kernel: a fresh change reads again.
    assert episode.step("echo '10.9.9.9 extra' >> /etc/hosts").exit_code == 0
    assert episode.nodes.version("login01", "/etc/hosts") is None
    time.sleep(nodes.VERSION_SETTLE_NS / 1e9 + 0.2)
    settled = episode.nodes.version("login01", "/etc/hosts")
    assert settled is not None
    assert episode.nodes.version("login01", "/etc/hosts") == settled
    assert episode.step("sed -i 's/10.9.9.9/10.9.9.8/' /etc/hosts").exit_code == 0
    assert episode.nodes.version("login01", "/etc/hosts") is None
