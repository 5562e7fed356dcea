"""`invoke bench` end to end, with tiny sample counts: it runs, prints the table, writes the JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from hpcgym.bench.episodes import CLIENT_COMMANDS, host_delta_text, run_bench, run_client_bench, use_client
from hpcgym.episode import Episode
from hpcgym.runtime import Runtime


@pytest.mark.slow
def test_bench_prints_table_and_writes_json(
    runtime: Runtime, images_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    figures = run_bench(
        images_dir, tmp_path / "bench.json", resets=2, steps=10, idle=4, console=Console(file=out, width=200),
        client_steps=0,
    )  # fmt: skip
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written == json.loads(json.dumps(figures))
    groups = {(row["group"], row["what"]) for row in written["rows"]}
    assert ("reset", "warm pool (kernel overlay)") in groups
    assert ("reset", "cold, kernel overlay") in groups
    assert ("step", "`true`") in groups
    assert written["idle"]["alive"] == 4
    table = out.getvalue()
    assert "| reset" in table and "p50" in table and "baseline" in table
    # Each phase says on stderr what runs, long before the table.
    phases = [line for line in capsys.readouterr().err.splitlines() if line.startswith("bench ")]
    assert [line.split(" [")[0] for line in phases] == [f"bench {n}/6" for n in range(1, 7)]


def test_a_negative_host_memory_delta_is_not_printed_as_a_figure() -> None:
    assert host_delta_text(1.234) == "1.23 MB"
    assert "n/a" in host_delta_text(-0.5) and "-" not in host_delta_text(-0.5)


def first_bytes_of_sinfo(episode: Episode) -> str:
    return episode.cluster.execute("head -c 4 /usr/bin/sinfo | od -An -c | tr -d ' '").output.strip()


def test_use_client_points_the_tools_at_either_client(runtime: Runtime) -> None:
    with Episode(runtime) as episode:
        assert first_bytes_of_sinfo(episode) == "177ELF"  # the image's own: the native client
        use_client(episode, "python")
        assert first_bytes_of_sinfo(episode) == "#!/u"
        assert episode.step("sinfo").output.startswith("PARTITION")
        use_client(episode, "native")
        assert first_bytes_of_sinfo(episode) == "177ELF"
        # The daemons' programs stay the image's client, so the controller still knows them.
        assert episode.step("systemctl restart munge; systemctl is-active munge").output == "active\n"


@pytest.mark.slow
def test_client_bench_runs_both_clients_side_by_side(images_dir: Path) -> None:
    out = io.StringIO()
    figures = run_client_bench(
        images_dir, steps=3, concurrencies=(1, 2), seconds=0.3, boots=2, density=3,
        console=Console(file=out, width=200),
    )  # fmt: skip
    steps = figures["steps"]
    assert set(steps) == set(CLIENT_COMMANDS)  # type: ignore[arg-type]
    for by_client in steps.values():  # type: ignore[attr-defined]
        assert set(by_client) == {"python", "native"}
        assert all(stats["n"] == 3 and stats["p50_ms"] > 0 for stats in by_client.values())
    rows = figures["throughput"]
    assert [(r["concurrency"], r["command"]) for r in rows] == [  # type: ignore[attr-defined]
        (1, "true"), (1, "sinfo"), (2, "true"), (2, "sinfo"),
    ]  # fmt: skip
    for row in rows:  # type: ignore[attr-defined]
        assert row["ratio"] == row["native"]["steps_per_s"] / row["python"]["steps_per_s"]
    assert figures["density"]["answered_sinfo"] == 3  # type: ignore[index]
    table = out.getvalue()
    assert "python/native" in table and "`scontrol show node`" in table and "3/3 full episodes" in table
