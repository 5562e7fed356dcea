"""Masking and comparison rules of the fidelity harness, without any cluster."""

from __future__ import annotations

from hpcgym.fidelity.mask import Facts, mask_text, same_within_tolerance
from hpcgym.fidelity.report import Compared, Report, StateResult
from hpcgym.fidelity.shell import Output

REAL = Facts(start_s=1_800_000_000.0, root="/tmp/fid-x/slurm", work_dir="/tmp/fid-x/work", hostname="vm")
SIM = Facts(start_s=1_795_419_965.0)


def test_timestamps_become_offsets_from_each_sides_start() -> None:
    # 1_800_000_012 is 2027-01-15T08:00:12Z; 1_795_419_977 is 2026-11-23T07:46:17Z: both 12 s in.
    real = mask_text("SubmitTime=2027-01-15T08:00:12 EndTime=Unknown\n", REAL)
    sim = mask_text("SubmitTime=2026-11-23T07:46:17 EndTime=Unknown\n", SIM)
    assert real == sim == "SubmitTime=<T+12> EndTime=Unknown\n"


def test_a_value_that_differs_for_a_reason_stays_visible() -> None:
    real = mask_text("EndTime=Unknown\n", REAL)
    sim = mask_text("EndTime=2026-11-23T07:46:17\n", SIM)
    assert not same_within_tolerance(real, sim)


def test_elapsed_times_may_differ_by_the_tolerance_only() -> None:
    assert same_within_tolerance(mask_text("R 0:02 1", SIM), mask_text("R 0:03 1", SIM))
    assert not same_within_tolerance(mask_text("R 0:02 1", SIM), mask_text("R 0:09 1", SIM))
    assert not same_within_tolerance(mask_text("R 0:02 1", SIM), mask_text("CG 0:02 1", SIM))


def test_the_real_clusters_paths_and_host_read_as_the_simulators() -> None:
    text = 'Failed to access "/tmp/fid-x/slurm/munge/munge.socket": No such file\nSlurmctld(primary) at vm is UP\n'
    assert mask_text(text, REAL) == (
        'Failed to access "/run/munge/munge.socket.2": No such file\nSlurmctld(primary) at login01 is UP\n'
    )
    assert mask_text("StdOut=/tmp/fid-x/work/slurm-1.out", REAL) == "StdOut=/root/slurm-1.out"


def test_exit_status_and_streams_all_count() -> None:
    same = Output("a\n", "", 0)
    state = StateResult("s", "about")
    state.compared = [
        Compared("x", same, same),
        Compared("y", same, Output("a\n", "", 1)),
        Compared("z", same, Output("a\n", "warn\n", 0)),
    ]
    report = Report([state])
    assert (report.outputs, report.identical) == (3, 1)
    assert "-exit: 0\n+exit: 1" in state.compared[1].diff()
    assert "**differs**" in report.to_markdown()


def test_only_sinfos_tie_order_is_let_go() -> None:
    head = "NODELIST    NODES PARTITION STATE \n"
    real = Output(head + "compute-03      1       gpu idle  \ncompute-03      1  compute* idle  \n", "", 0)
    sim = Output(head + "compute-03      1  compute* idle  \ncompute-03      1       gpu idle  \n", "", 0)
    assert Compared("sinfo -N", real, sim).identical
    assert Compared("sinfo -N", real, sim).reordered
    # Another tool's order counts, and so does a row that is not in both.
    assert not Compared("squeue", real, sim).identical
    other = Output(head + "compute-03      1  compute* down  \ncompute-03      1       gpu idle  \n", "", 0)
    assert not Compared("sinfo -N", real, other).identical
