"""Which servers of a launch are ready: a marker on disk whose array task Slurm still runs.

A marker alone is not enough (a server killed with SIGKILL, or a node that died, leaves its marker
behind), so every reader crosses the markers with squeue. `python -m hpcgym.fleet.ready` waits for
enough ready servers and prints their URLs, one word each; the training job's script uses it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hpcgym.errors import HpcgymError
from hpcgym.fleet import slurm
from hpcgym.fleet.config import FleetError
from hpcgym.fleet.coord import CoordDir, ServerMarker


def live_markers(markers: list[ServerMarker], states: list[slurm.TaskState]) -> list[ServerMarker]:
    """The markers whose exact array task (job id included) squeue shows RUNNING."""
    running = {(s.array_job_id, s.task_id, s.job_id) for s in states if s.is_running}
    return [m for m in markers if (m.array_job_id, m.task_id, m.job_id) in running]


def ready_servers(coord: CoordDir) -> list[ServerMarker]:
    """The launch's servers that are ready now."""
    launch = coord.read_launch()
    if launch.server_job is None:
        return []
    return live_markers(coord.markers(), slurm.tasks([launch.server_job]))


def wait_ready(coord: CoordDir, min_ready: int, wait_s: float, poll_s: float = 2.0) -> list[ServerMarker]:
    """Wait until at least `min_ready` servers (0: every server of the launch) are ready.

    Raises:
        FleetError: not enough servers were ready within `wait_s`, or every server task has ended.
    """
    launch = coord.read_launch()
    wanted = launch.servers if min_ready == 0 else min_ready
    if wanted > launch.servers:
        raise FleetError(f"--min-ready {wanted} is more than the {launch.servers} servers launched")
    deadline = time.monotonic() + wait_s
    while True:
        ready = ready_servers(coord)
        if len(ready) >= wanted:
            return ready
        alive = [s for s in slurm.tasks(launch.job_ids) if s.state in slurm.ALIVE_STATES]
        if not any(s.array_job_id == launch.server_job for s in alive):
            raise FleetError(
                f"every server task of launch {launch.launch_id} has ended; see {coord.logs_dir}"
            )
        if time.monotonic() > deadline:
            raise FleetError(
                f"only {len(ready)} of {wanted} servers were ready after {wait_s:g} s",
                hint=f"see {coord.logs_dir}",
            )
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> None:
    """Print the URLs of the ready servers, once enough are ready (exit 1 if they never are)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--coord-dir", type=Path, required=True)
    parser.add_argument("--min-ready", type=int, default=0, help="servers to wait for (0: all; default)")
    parser.add_argument("--wait-s", type=float, default=900.0)
    args = parser.parse_args(argv)
    try:
        ready = wait_ready(CoordDir(args.coord_dir.resolve()), args.min_ready, args.wait_s)
    except HpcgymError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    print(" ".join(m.url for m in ready))


if __name__ == "__main__":
    main()
