"""FIDELITY: the same operator scripts on a real Slurm 22.05 cluster and on the simulator, compared.

A state (`states.py`) is a short script of what an operator types, with waits and daemon stops in
between. `real.py` plays it on a private Slurm + munge cluster started from Debian's slurm-wlm
(`hpcgym.fleet.localslurm`), `sim.py` on a fresh episode through its real bash, with the virtual clock
moved by the real run's elapsed time before each command. `mask.py` hides only what is specific to a
host or a moment (dates, paths of the private cluster, pids); `report.py` compares stdout, stderr and
exit status and writes markdown and JSON. `harness.py` ties them together for `invoke fidelity`.
`invoke fidelity` calls the three exported here: `choose_states`, `run_fidelity` and `write_report`.
"""

from hpcgym.fidelity.harness import run_fidelity, write_report
from hpcgym.fidelity.states import choose_states

__all__ = ["choose_states", "run_fidelity", "write_report"]
