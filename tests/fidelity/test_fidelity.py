"""The differential harness, CI-sized: the quick states on real Slurm 22.05.8 and on the simulator.

Needs root, Debian's slurm-wlm and munge, bubblewrap and the built images (CI installs them all).
The ratio it asserts is the issue's bar for the whole run; a regression in any simulated tool that
the quick states touch drops it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hpcgym.fidelity import harness, states
from hpcgym.fleet.localslurm import missing_binaries

pytestmark = pytest.mark.slow

MIN_RATIO = 0.95


def test_ci_states_are_identical_on_real_slurm_and_the_simulator(images_dir: Path, tmp_path: Path) -> None:
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)}): apt-get install slurm-wlm munge")
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("the Slurm daemons and the episodes need root and bubblewrap")
    chosen = states.choose_states(ci=True)
    report = harness.run_fidelity(chosen, images_dir, out=tmp_path)
    assert not [s.name for s in report.states if s.error], [f"{s.name}: {s.error}" for s in report.states]
    assert report.outputs >= 150
    differing = [
        f"{s.name}: {c.command}\n{c.diff()}" for s in report.states for c in s.compared if not c.identical
    ]
    assert report.ratio >= MIN_RATIO, f"{report.summary()}\n" + "\n".join(differing)
