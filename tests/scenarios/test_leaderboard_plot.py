"""The leaderboard plot: solve rate and mean reward per policy and tier, n on every bar, zeros visible."""

from __future__ import annotations

from hpcgym.scenarios.evaluate import EpisodeRecord, plot_cells, plot_leaderboard


def record(policy: str, tier: int, solved: bool, reward: float) -> EpisodeRecord:
    outcome = "solved" if solved else "truncated"
    return EpisodeRecord(policy, f"s{tier}", tier, 800, "", outcome, solved, [], 1, reward, {})


RECORDS = [
    record("gold", 1, True, 1.5),
    record("gold", 1, True, 1.3),
    record("gold", 2, True, 1.4),
    record("noop", 1, False, 0.0),
    record("noop", 1, False, 0.0),
    record("noop", 2, False, -0.5),
]


def test_cells_hold_rate_reward_and_n():
    cells = plot_cells(RECORDS)
    assert cells[("gold", 1)] == {"solve_rate": 1.0, "mean_reward": 1.4, "n": 2}
    assert cells[("noop", 1)] == {"solve_rate": 0.0, "mean_reward": 0.0, "n": 2}
    assert cells[("noop", 2)]["n"] == 1


def test_plot_has_both_panels_labels_and_visible_zeros(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at
    plot_leaderboard(RECORDS, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    solve, reward = figures[0].axes[:2]
    assert solve.get_ylabel() == "solve rate" and "reward" in reward.get_ylabel()
    for ax in (solve, reward):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["gold", "noop"]
        labels = [t.get_text() for t in ax.texts]
        assert len(labels) == 4 and all("n=" in label for label in labels)
        # Every played cell has a bar of some height, 0 % and a 0.00 mean reward included.
        assert all(abs(bar.get_height()) > 0 for bar in ax.patches)
    assert any(t.get_text().startswith("0%") for t in solve.texts)
    legend = [t.get_text() for t in solve.get_legend().get_texts()]
    assert legend == ["tier 1", "tier 2"]
