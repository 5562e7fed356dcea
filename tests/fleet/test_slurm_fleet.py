"""A fleet on a real Slurm cluster: fleet-up, ready servers, episodes on all of them, one killed, fleet-down.

The cluster is Debian's slurm-wlm on this machine (hpcgym.fleet.localslurm): three slurmd, each a
node of partition `debug`. The fleet is driven through `invoke` exactly as a user would, with
`SLURM_CONF` pointing at the test cluster.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from hpcgym.fleet.coord import CoordDir
from hpcgym.fleet.localslurm import LocalSlurm, local_slurm, missing_binaries
from hpcgym.fleet.ready import ready_servers
from hpcgym.fleet.slurm import ALIVE_STATES, tasks
from hpcgym.scenarios.schema import load_scenario
from tests.conftest import REPO

pytestmark = pytest.mark.slow

SERVERS = 3
FLEET_CONFIG = """\
name: slurm-test
version: 1
server:
  partition: debug
  cpus_per_task: 1
  mem: 2000M
  time: "00:15:00"
  sessions_per_server: 3
  pool_size: 1
  ready_timeout_s: 240
  drain_s: 30
trainer:
  partition: debug
  gpus: 0
  cpus_per_task: 1
  mem: 1000M
  time: "00:05:00"
  min_ready: 0
  wait_s: 60
  args: ["--help"]   # the real trainer's argv, but only its usage: GRPO itself is tested in tests/training
"""


@pytest.fixture
def slurm(tmp_path: Path, images_dir: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)}): apt-get install slurm-wlm munge")
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("the Slurm daemons and the env servers need root and bubblewrap")
    with local_slurm(tmp_path / "slurm", nodes=3, cpus_per_node=2) as cluster:
        monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster


def invoke(cluster: LocalSlurm, *args: str, timeout_s: float = 180) -> str:
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "invoke"), *args],
        cwd=REPO,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, (
        f"invoke {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    )
    return proc.stdout + proc.stderr


def wait_ready(coord: CoordDir, count: int, timeout_s: float, cluster: LocalSlurm) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while len(ready := ready_servers(coord)) != count:
        if time.monotonic() > deadline:
            logs = "\n".join(p.read_text()[-2000:] for p in sorted(coord.logs_dir.glob("*.log")))
            pytest.fail(
                f"{len(ready)} of {count} servers ready after {timeout_s:g} s\n{logs}\n{cluster.logs()}"
            )
        time.sleep(0.5)
    return [m.url for m in ready]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # it has just exited


def process_tree(roots: set[int]) -> set[int]:
    """`roots` and every live descendant (the episode sandboxes a server started carry no Slurm env)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    tree = {pid for pid in roots if pid in parents}
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    return tree


def job_processes(cluster: LocalSlurm) -> list[str]:
    """Processes some job of this cluster started (their environment names its slurm.conf and a job)."""
    conf = f"SLURM_CONF={cluster.conf}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if conf in environ and any(v.startswith(b"SLURM_JOB_ID=") for v in environ):
                found.append(f"{entry.name}: {cmdline}")
    return found


def test_a_fleet_serves_episodes_survives_a_lost_server_and_leaves_nothing(
    slurm: LocalSlurm, tmp_path: Path
) -> None:
    from hpcgym.interfaces.openenv.client import HpcEnvClient
    from training.dataset import build_rows
    from training.env import EnvSettings, HpcToolEnv

    config = tmp_path / "slurm-test.yaml"
    config.write_text(FLEET_CONFIG)
    coord = CoordDir(tmp_path / "fleet" / "launch")
    start = time.monotonic()
    invoke(
        slurm, "fleet-up", "--servers", str(SERVERS), "--config", str(config), "--coord-dir", str(coord.root)
    )
    assert stat.S_IMODE(coord.token.stat().st_mode) == 0o600
    # The trainer goes in at once; Slurm holds it until the array runs, then it waits for readiness.
    invoke(slurm, "fleet-train", "--coord-dir", str(coord.root), "--gpus", "0")
    launch = coord.read_launch()
    assert launch.train_job is not None
    urls = wait_ready(coord, SERVERS, 240, slurm)
    ready_s = time.monotonic() - start
    assert len(set(urls)) == SERVERS
    # serve and its server, per task: the check at the end sees the processes jobs start.
    assert len(job_processes(slurm)) >= 2 * SERVERS

    status = invoke(slurm, "fleet-status", "--coord-dir", str(coord.root))
    assert f"{SERVERS} of {SERVERS} servers ready" in status
    assert all(url in status for url in urls)

    # The training job got exactly the ready servers' URLs and ran the trainer with them.
    deadline = time.monotonic() + 60
    while any(t.state in ALIVE_STATES for t in tasks([launch.train_job])):
        assert time.monotonic() < deadline, "the training job did not finish in 60 s"
        time.sleep(0.5)
    train_log = (coord.logs_dir / f"train-{launch.train_job}.log").read_text()
    assert f"env servers: {' '.join(urls)}\n" in train_log, train_log
    assert "usage: python -m training.grpo" in train_log

    # One episode per server: consecutive resets go round the URLs.
    token = coord.read_token()
    row = build_rows(["hpc_munge"], "train", seeds_per_scenario=1)[0]
    envs = [HpcToolEnv(EnvSettings(env_urls=tuple(urls), api_key=token, max_steps=10)) for _ in urls]
    node = load_scenario("hpc_munge").draw_params(row["seed"])["node"]  # the row's seed is the episode's
    for env in envs:
        assert f"{node} is down" in env.reset(**row)
        assert str(node) in env.run("sinfo -N -h -o '%N %t'")
    used = {env._backend.url for env in envs}  # type: ignore[union-attr]
    assert used == set(urls)
    # Without the launch's token a server refuses the session.
    with pytest.raises(Exception, match="401"):  # the websockets handshake's error
        with HpcEnvClient(urls[0], api_key="wrong").sync() as client:
            client.reset(scenario="hpc_munge", seed=0)

    # Lose one server: its marker goes at once, the others keep serving, its episode moves over.
    victim = next(m for m in ready_servers(coord) if m.url == envs[0]._backend.url)  # type: ignore[union-attr]
    slurm.run("scancel", f"{victim.array_job_id}_{victim.task_id}")
    survivors = wait_ready(coord, SERVERS - 1, 60, slurm)
    assert victim.url not in survivors
    # Readers dropped the marker as soon as Slurm stopped running the task; serve removes the file itself.
    deadline = time.monotonic() + 20
    while coord.marker_path(victim.task_id).exists():
        assert time.monotonic() < deadline, "the killed server's marker is still there after 20 s"
        time.sleep(0.2)
    # A cancelled server may drain for a while; once Slurm has ended the task, its episode must move.
    deadline = time.monotonic() + 60
    while any(t.task_id == victim.task_id and t.state in ALIVE_STATES for t in tasks([victim.array_job_id])):
        assert time.monotonic() < deadline, "the cancelled task was still alive after 60 s"
        time.sleep(0.2)
    assert "compute-02" in envs[0].run("sinfo -N -h -o '%N %t'")
    assert envs[0]._backend.url in survivors  # type: ignore[union-attr]
    for env in envs[1:]:
        env.run("hostname")
    fresh = HpcToolEnv(EnvSettings(env_urls=tuple(urls), api_key=token, max_steps=10))
    for _ in range(SERVERS):
        fresh.reset(**row)
        assert fresh._backend.url in survivors  # type: ignore[union-attr]
    for env in [*envs, fresh]:
        assert env.get_reward() is not None
        env._backend.release()  # type: ignore[union-attr]

    # Every process the surviving servers run, sandboxes included, must be gone after fleet-down.
    fleet_tree = process_tree({int(line.split(":")[0]) for line in job_processes(slurm)})
    assert any(b"bwrap" in cmdline(pid) for pid in fleet_tree), "no sandbox seen under the servers"
    down = invoke(slurm, "fleet-down", "--coord-dir", str(coord.root), "--drain-timeout-s", "60")
    assert "drained" in down, down
    assert not coord.root.exists()
    assert slurm.run("squeue", "-h", "-o", "%i %T").strip() == ""
    assert job_processes(slurm) == []
    assert process_tree(fleet_tree) == set(), "processes of the fleet outlived fleet-down"
    print(f"{SERVERS} servers ready {ready_s:.1f} s after fleet-up (array job {launch.server_job})")
