"""`hpcgym exec`: one fresh episode per call, each command one agent step."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from hpcgym.interfaces.cli import main
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None, reason="the runtime needs root and bubblewrap"
)


def run_json(capsys, images_dir, *args):
    assert main(["exec", "--images", str(images_dir), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_exec_json_records_each_step(capsys, images_dir):
    records = run_json(
        capsys, images_dir, "--", "hostname", "systemctl is-active nosuch", "ssh compute-04 hostname"
    )
    assert records == [
        {"command": "hostname", "output": "login01\n", "exit_code": 0},
        {"command": "systemctl is-active nosuch", "output": "inactive\n", "exit_code": 3},
        {"command": "ssh compute-04 hostname", "output": "compute-04\n", "exit_code": 0},
    ]


def test_exec_with_another_slurm_conf_and_node(capsys, images_dir, tmp_path):
    conf = (REPO / "images" / "common" / "files" / "etc" / "slurm" / "slurm.conf").read_text()
    conf = conf.replace("compute-0[1-4]", "node[1-2]").replace("compute-0[3-4]", "node2")
    path = tmp_path / "slurm.conf"
    path.write_text(conf)
    records = run_json(
        capsys,
        images_dir,
        "--slurm-conf",
        str(path),
        "--node",
        "node2",
        "--",
        "hostname",
        "sinfo -h -N -o %N",
    )
    assert [r["output"] for r in records] == ["node2\n", "node1\nnode2\nnode2\n"]


def test_exec_reports_library_errors_as_exit_codes(capsys, tmp_path):
    assert main(["exec", "--images", str(tmp_path / "none"), "--", "true"]) == 1
    assert "invoke build-images" in capsys.readouterr().err


def test_exec_plays_an_incident_and_ends_with_its_grade(capsys, images_dir):
    fix = ["ssh compute-01 chmod 0400 /etc/munge/munge.key", "ssh compute-01 systemctl restart munge"]
    assert main(["exec", "--images", str(images_dir), "--scenario", "hpc_munge", "--", "sinfo -R", *fix]) == 0
    out = capsys.readouterr().out
    assert out.startswith("After last night's configuration push, compute-01 is down*")
    assert "[root@login01 ~]# sinfo -R\nREASON " in out
    # Half the fix: the route is still wrong, so the episode is not solved; the seed is the first test one.
    assert "== hpc_munge seed 800: not solved (running), reward " in out
    assert "   components: step_cost -0.030, diagnosis " in out


def test_exec_help_names_no_work_items(capsys):
    with pytest.raises(SystemExit):
        main(["exec", "--help"])
    assert "issue" not in capsys.readouterr().out
