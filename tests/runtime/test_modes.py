"""Every overlay mode gives the same cluster; many clusters can be driven from many threads at once."""

from __future__ import annotations

import shlex
import threading
from pathlib import Path

import pytest

from hpcgym.runtime import OverlayMode, Runtime
from hpcgym.runtime.sweep import mount_points

from .conftest import require_sandbox_host


@pytest.mark.parametrize("mode", [OverlayMode.FUSE, OverlayMode.COPY])
def test_other_overlay_modes_work_and_clean_up(
    images_dir: Path, scratch_dir: Path, mode: OverlayMode
) -> None:
    require_sandbox_host()
    with Runtime(images_dir, overlay_mode=mode, scratch_dir=scratch_dir) as runtime:
        assert runtime.overlay_mode is mode
        with runtime.new_cluster(compute_nodes=["compute-01"]) as cluster:
            assert cluster.execute("touch /etc/x && stat -c %A /usr/bin/passwd").output == "-rwsr-xr-x\n"
            cluster.execute("echo shared > /home/f")
            assert cluster.execute("ssh compute-01 cat /home/f").output == "shared\n"
            where = cluster.host_dir
    assert not where.exists()
    assert not [p for p in mount_points() if where in p.parents or p == where]


def test_many_clusters_driven_from_threads(runtime: Runtime) -> None:
    errors: list[str] = []

    def episode(i: int) -> None:
        with runtime.new_cluster(compute_nodes=["compute-01"]) as cluster:
            for step in range(15):
                out = cluster.execute(f"echo {i}-{step}").output
                if out != f"{i}-{step}\n":
                    errors.append(f"episode {i} step {step}: {out!r}")
            ssh = cluster.execute("ssh compute-01 hostname")
            if ssh.output != "compute-01\n":
                errors.append(f"episode {i}: ssh failed: {ssh!r}")

    threads = [threading.Thread(target=episode, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_copy_mode_closes_a_cluster_with_a_very_deep_tree(images_dir: Path, scratch_dir: Path) -> None:
    """A node in copy mode writes into the host's scratch dir; any tree it makes there must go at close."""
    require_sandbox_host()
    with Runtime(images_dir, overlay_mode=OverlayMode.COPY, scratch_dir=scratch_dir) as rt:
        cluster = rt.new_cluster(compute_nodes=[])
        deep = "import os\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n"
        made = cluster.execute(f"cd /root && python3 -c {shlex.quote(deep)} && echo made")
        assert made.output == "made\n"
        directory = cluster.host_dir
        cluster.close()  # Python's rmtree raised RecursionError here
        assert not directory.exists()
