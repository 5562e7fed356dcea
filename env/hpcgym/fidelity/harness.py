"""`invoke fidelity`: play every chosen state on both clusters, compare, write the report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from hpcgym.errors import HpcgymError
from hpcgym.fidelity import real, sim
from hpcgym.fidelity.mask import mask_output
from hpcgym.fidelity.report import Compared, Report, StateResult
from hpcgym.fidelity.script import Cmd, State
from hpcgym.fleet.localslurm import missing_binaries


def check_prerequisites() -> None:
    missing = missing_binaries()
    if missing:
        raise HpcgymError(
            f"Slurm or munge is not installed ({', '.join(missing)})",
            hint="apt-get install slurm-wlm munge (Debian 12 has 22.05.8)",
        )


def run_fidelity(
    states: Sequence[State],
    images: Path,
    progress: Callable[[str], None] = lambda _: None,
    scratch: Path | None = None,
    out: Path | None = None,
) -> Report:
    """Play `states` on a real cluster and on the simulator (one fresh cluster of each per state)."""
    from hpcgym.runtime import Runtime

    check_prerequisites()
    report = Report()
    with Runtime(images) as runtime:
        for state in states:
            started = time.monotonic()
            result = StateResult(state.name, state.about)
            report.states.append(result)
            try:
                real_run = real.play(state, scratch)
                sim_run = sim.play(state, runtime, real_run)
            except HpcgymError as error:
                # One state's failure (a command that hangs on the real cluster, a daemon that does
                # not come back) is reported as such; the other states still count.
                result.error = str(error).splitlines()[0]
                progress(f"{state.name}: error: {result.error}")
                continue
            commands = [step.line for step in state.steps if isinstance(step, Cmd)]
            for line, got_real, got_sim in zip(commands, real_run.outputs, sim_run.outputs, strict=True):
                result.compared.append(
                    Compared(line, mask_output(got_real, real_run.facts), mask_output(got_sim, sim_run.facts))
                )
            progress(
                f"{state.name}: {result.identical}/{len(result.compared)} identical "
                f"({time.monotonic() - started:.0f} s)"
            )
            if out is not None:
                write_report(report, out)
    return report


def write_report(report: Report, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "fidelity.md", out / "fidelity.json"
    md.write_text(report.to_markdown())
    js.write_text(report.to_json())
    return md, js
