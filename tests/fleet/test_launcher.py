"""The launcher without Slurm: configs, rendered scripts, dry runs, the coordination dir and bad input."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from hpcgym.fleet import launcher
from hpcgym.fleet.config import FleetError, config_names, dump_config, load_config
from hpcgym.fleet.coord import CoordDir, Launch, ServerMarker
from hpcgym.fleet.ready import live_markers
from hpcgym.fleet.slurm import TaskState
from tests.conftest import REPO

PATHS = launcher.Paths(
    Path("/opt/hpcgym"), Path("/opt/hpcgym/.venv/bin/python"), Path("/opt/hpcgym/build/images")
)


@pytest.mark.parametrize("name", ["dev", "production"])
def test_shipped_configs_load_and_round_trip(name: str, tmp_path: Path) -> None:
    config = load_config(name)
    assert config.name == name and config.version >= 1
    copy = tmp_path / "copy.yaml"
    copy.write_text(dump_config(config))
    assert load_config(copy) == config
    assert set(config_names()) >= {"dev", "production"}


def test_server_script_renders_every_setting(tmp_path: Path) -> None:
    config = launcher.with_overrides(
        load_config("dev"), partition="short", sessions_per_server=12, time_limit="30"
    )
    plan = launcher.plan_up(config, 4, tmp_path / "launch-1", PATHS)
    script = plan.script
    coord = tmp_path / "launch-1"
    for line in (
        "#SBATCH --array=0-3",
        "#SBATCH --partition=short",
        "#SBATCH --time=30",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --mem=8G",
        "#SBATCH --signal=B:TERM@60",
        f"#SBATCH --output={coord}/logs/server-%A_%a.log",
        "export HPCGYM_MAX_SESSIONS=12",
        "export HPCGYM_POOL_SIZE=2",
        "export HPCGYM_IMAGES=/opt/hpcgym/build/images",
        f"exec /opt/hpcgym/.venv/bin/python -m hpcgym.fleet.serve --coord-dir {coord} --ready-timeout-s 300",
    ):
        assert f"\n{line}\n" in script, line
    assert "$" not in script.replace("${", "").split("set -euo pipefail")[0]  # no placeholder left
    assert plan.sbatch == ["sbatch", "--parsable", f"{coord}/server.sbatch"]
    # sbatch reads #SBATCH lines only until the first command, so all of them come before it.
    first_command = script.index("set -euo pipefail")
    assert script.rindex("#SBATCH") < first_command
    # The rendering is a pure function of its inputs.
    assert launcher.plan_up(config, 4, tmp_path / "launch-1", PATHS).script == script


def test_rendered_script_is_valid_bash(tmp_path: Path) -> None:
    plan = launcher.plan_up(load_config("production"), 2, tmp_path / "x", PATHS)
    path = tmp_path / "server.sbatch"
    path.write_text(plan.script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert "#SBATCH --exclusive" in plan.script


def test_dry_run_prints_scripts_and_submits_nothing(tmp_path: Path) -> None:
    coord = tmp_path / "dry"
    env = {**os.environ, "PATH": "/usr/bin:/bin"}  # sbatch or not, a dry run never calls it
    argv = ["fleet-up", "--servers=2", "--partition=cpu", "--dry-run", f"--coord-dir={coord}"]
    out = subprocess.run(
        [str(REPO / ".venv" / "bin" / "invoke"), *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith(f"# {coord}/server.sbatch\n#!/bin/bash\n")
    assert "#SBATCH --partition=cpu\n" in out
    assert out.endswith(f"$ sbatch --parsable {coord}/server.sbatch\n")
    assert not coord.exists()


def test_train_script_depends_on_the_fleet_and_waits_for_it(tmp_path: Path) -> None:
    coord = CoordDir(tmp_path / "launch")
    coord.create()
    config = load_config("dev")
    coord.config_file.write_text(dump_config(config))
    coord.write_launch(Launch("launch", "dev", 1, servers=3, server_job="41"))
    plan = launcher.plan_train(coord, PATHS)
    assert plan.sbatch == ["sbatch", "--parsable", "--dependency=after:41", f"{coord.root}/train.sbatch"]
    assert "#SBATCH --gpus=1\n" in plan.script
    assert "#SBATCH --partition=gpu\n" in plan.script
    assert f"-m hpcgym.fleet.ready --coord-dir {coord.root} --min-ready 0 --wait-s 900)" in plan.script
    assert f"export OPENENV_API_KEY_FILE={coord.root}/token\n" in plan.script
    assert "-m training.grpo --config training/configs/cpu-smoke.json --env-urls $urls\n" in plan.script
    no_gpu = launcher.plan_train(coord, PATHS, launcher.with_overrides(config, gpus=0))
    assert "--gpus" not in no_gpu.script
    script = tmp_path / "train.sbatch"
    script.write_text(plan.script)
    subprocess.run(["bash", "-n", str(script)], check=True)

    coord.write_launch(Launch("launch", "dev", 1, servers=3, server_job="41", train_job="42"))
    with pytest.raises(FleetError, match="already has training job 42"):
        launcher.plan_train(coord, PATHS)


def test_coordination_dir_token_is_private_and_checked(tmp_path: Path) -> None:
    coord = CoordDir(tmp_path / "launch")
    coord.create()
    assert stat.S_IMODE(coord.token.stat().st_mode) == 0o600
    assert stat.S_IMODE(coord.root.stat().st_mode) == 0o700
    assert len(coord.read_token()) >= 40
    with pytest.raises(FleetError, match="already exists"):
        coord.create()
    coord.token.chmod(0o644)
    with pytest.raises(FleetError, match="mode 0644"):
        coord.read_token()


def marker(task: int, job: str) -> ServerMarker:
    return ServerMarker(
        job, "10", task, f"http://n{task}:80{task}", f"n{task}", 8000 + task, 100 + task, 8, "t"
    )


def test_markers_of_tasks_slurm_no_longer_runs_are_not_ready(tmp_path: Path) -> None:
    coord = CoordDir(tmp_path / "launch")
    coord.create()
    for task, job in ((0, "11"), (1, "12"), (2, "13"), (3, "14")):
        coord.write_marker(marker(task, job))
    (coord.servers_dir / "9.json").write_text("{half a marker")
    assert [m.task_id for m in coord.markers()] == [0, 1, 2, 3]
    states = [
        TaskState("10", 0, "11", "RUNNING", "n0"),
        TaskState("10", 1, "12", "COMPLETING", "n1"),  # being cancelled
        TaskState("10", 2, "99", "RUNNING", "n2"),  # requeued: another job id now
        # task 3: gone from squeue altogether (SIGKILLed, node died)
    ]
    assert [m.task_id for m in live_markers(coord.markers(), states)] == [0]
    coord.remove_marker(0)
    assert live_markers(coord.markers(), states) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("server:", "server:\n  colour: blue"), "unknown keys colour"),
        (("  mem: 8G", "  mem: 8 GB"), "not a Slurm size"),
        (('  time: "01:00:00"', "  time: 1:00:00"), "must be a string"),  # YAML reads 3600
        (('  time: "01:00:00"', '  time: "an hour"'), "not a Slurm time limit"),
        (("  partition: debug", "  partition: 'debug\\n#SBATCH --qos=high'"), "not a Slurm partition name"),
        (("  sessions_per_server: 8", "  sessions_per_server: 0"), "at least 1"),
        (("  extra_sbatch: []", '  extra_sbatch: ["--account=$(id)"]'), "one long option"),
        (("  drain_s: 60", "  drain_s: yes"), "must be an integer"),
        (("  ready_timeout_s: 300", "  # ready_timeout_s: 300"), "missing keys ready_timeout_s"),
        (("  args: [", '  args: ["--env-urls", "http://x", '), "must not name --env-urls"),
        (("version: 1", "version: 0"), "version must be at least 1"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    text = (Path(launcher.__file__).parent / "configs" / "dev.yaml").read_text()
    old, new = change
    assert old in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(FleetError, match=message):
        load_config(bad)


def test_bad_command_line_values_are_refused(tmp_path: Path) -> None:
    config = load_config("dev")
    with pytest.raises(FleetError, match="at least 1"):
        launcher.plan_up(config, 0, tmp_path / "x", PATHS)
    with pytest.raises(FleetError, match="partition"):
        launcher.with_overrides(config, partition="a b")
    with pytest.raises(FleetError, match="time limit"):
        launcher.with_overrides(config, time_limit="1h")
    with pytest.raises(FleetError, match="shell characters"):
        launcher.plan_up(config, 2, tmp_path / "it's", PATHS)
    with pytest.raises(FleetError, match="no fleet config 'nope'"):
        load_config("nope")
    with pytest.raises(FleetError, match="no fleet launch"):
        launcher.find_coord(None, tmp_path / "none")


def test_serve_refuses_to_run_outside_a_slurm_array_task(tmp_path: Path) -> None:
    coord = CoordDir(tmp_path / "launch")
    coord.create()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run(
        [str(REPO / ".venv" / "bin" / "python"), "-m", "hpcgym.fleet.serve", "--coord-dir", str(coord.root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "runs inside a Slurm array task" in proc.stderr
    assert list(coord.servers_dir.iterdir()) == []
