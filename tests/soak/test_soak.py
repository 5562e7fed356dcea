"""The short soak CI runs: episodes through a real server, then nothing of a closed episode on the host."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from hpcgym.soak.leaks import Snapshot, find_leaks
from hpcgym.soak.run import DEFAULT_POLICIES, DEFAULT_SCENARIOS, Plan, fit_slope, run_soak
from tests.runtime.conftest import require_sandbox_host


def test_the_plan_is_a_function_of_the_episode_number() -> None:
    plan = Plan(episodes=100)
    assert [plan.episode(i) for i in range(100)] == [Plan(episodes=100).episode(i) for i in range(100)]
    played = {plan.episode(i)[:2] for i in range(len(DEFAULT_SCENARIOS) * len(DEFAULT_POLICIES))}
    assert len(played) == len(DEFAULT_SCENARIOS) * len(DEFAULT_POLICIES)  # every pair, in turn


def test_the_slope_is_a_least_squares_fit() -> None:
    assert fit_slope([(0, 100), (1000, 200), (2000, 300), (3000, 400)]) == 100.0
    assert fit_slope([(0, 5), (1000, 5), (2000, 5), (3000, 5)]) == 0.0
    assert fit_slope([(0, 1), (1, 2)]) is None  # too few points to judge


def _snapshot(fds: int = 0) -> Snapshot:
    return Snapshot("hpcgym-1-2", 0, 0, 0, 0, 0, 0, fds, 0, 0, 0, 0, examples={"fd_kinds": []})


def test_growth_and_references_to_closed_clusters_are_leaks() -> None:
    assert find_leaks(_snapshot(fds=10), _snapshot(fds=10)) == []
    assert find_leaks(_snapshot(fds=10), _snapshot(fds=8)) == []
    assert find_leaks(_snapshot(fds=10), _snapshot(fds=11)) == ["fds: 10 at the start, 11 at the end"]
    closed = replace(_snapshot(), closed=["mount /dev/shm/hpcgym-1-2-000007/root"])
    assert find_leaks(_snapshot(), closed) == ["mount /dev/shm/hpcgym-1-2-000007/root"]


def test_a_short_soak_leaves_nothing(images_dir: Path, tmp_path: Path) -> None:
    require_sandbox_host()
    report = run_soak(images_dir, Plan(episodes=24, sessions=4), tmp_path)
    assert report.errors == 0, report.first_errors
    assert report.leaks == []
    assert sum(report.by_policy.values()) == 24 and len(report.by_policy) >= 4
    assert report.after_exit["mounts"] == report.after_exit["processes"] == report.after_exit["shm_dirs"] == 0
    assert report.server_exit_code == 0
    assert (tmp_path / "soak.json").is_file() and "**Leaks: 0**" in (tmp_path / "soak.md").read_text()


def test_a_soak_killed_outright_takes_its_server_with_it(tmp_path: Path) -> None:
    # SIGKILL runs no `finally`; the server (here a stand-in) must still not outlive the soak.
    script = (
        "import subprocess, sys\n"
        "from hpcgym.soak.run import _die_with_parent\n"
        "p = subprocess.Popen(['sleep', '300'], preexec_fn=_die_with_parent)\n"
        "print(p.pid, flush=True)\n"
        "subprocess.run(['sleep', '300'])\n"
    )
    soak = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert soak.stdout is not None
    server = int(soak.stdout.readline())
    assert Path(f"/proc/{server}").exists()
    soak.kill()
    soak.wait()
    deadline = time.monotonic() + 10
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(server)


def _alive(pid: int) -> bool:
    # The stand-in is re-parented to init once the soak dies, which reaps it: gone, or a zombie.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
