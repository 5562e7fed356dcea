"""A recorded episode replays byte for byte through every entry point, and a changed one does not."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from hpcgym.interfaces.replay import VIAS, Played, Seen, compare, replay
from hpcgym.scenarios.evaluate import EpisodeRecord, StepRecord, load_transcripts, run_episode, write_report
from hpcgym.scenarios.incident import first_observation


def a_record() -> EpisodeRecord:
    steps = [
        StepRecord(
            "sinfo", "PARTITION\n", 0, "login01", -0.01, digest=hashlib.sha256(b"PARTITION\n").hexdigest()
        )
    ]
    return EpisodeRecord("noop", "hpc_munge", 1, 800, "alert", "truncated", False, [], 1, -0.01, {}, steps)


def test_compare_reports_each_kind_of_difference():
    record = a_record()
    same = Played(first_observation("alert"), [Seen("PARTITION\n", 0, -0.01)])
    assert compare(record, same, "gym").identical
    cases = {
        "first observation": Played(first_observation("other"), same.steps),
        "output differs": Played(same.first, [Seen("PARTITION \n", 0, -0.01)]),
        "exit status": Played(same.first, [Seen("PARTITION\n", 1, -0.01)]),
        "reward": Played(same.first, [Seen("PARTITION\n", 0, -0.02)]),
        "steps played": Played(same.first, []),
    }
    for words, played in cases.items():
        differences = compare(record, played, "gym").differences
        assert len(differences) == 1 and words in differences[0], (words, differences)


@pytest.mark.slow
def test_eval_records_replay_identically_through_every_entry_point(runtime, images_dir, tmp_path):
    records = [run_episode(runtime, policy, "hpc_munge", 901) for policy in ("noop", "gold")]
    write_report(records, tmp_path)
    loaded = load_transcripts(tmp_path / "transcripts.jsonl")
    assert [r.transcript for r in loaded] == [r.transcript for r in records]
    results = replay(loaded, VIAS, images_dir)
    assert [(r.policy, r.via) for r in results] == [(p, v) for p in ("noop", "gold") for v in VIAS]
    assert all(r.identical for r in results), [r.differences for r in results]
    # Another seed is another cluster: the same commands show other bytes.
    moved = replay([dataclasses.replace(loaded[1], seed=902)], ["eval"], images_dir)
    assert not moved[0].identical
