"""`invoke bench` end to end, with tiny sample counts: it runs, prints the table, writes the JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from hpcgym.bench import run_bench
from hpcgym.runtime import Runtime


@pytest.mark.slow
def test_bench_prints_table_and_writes_json(runtime: Runtime, images_dir: Path, tmp_path: Path) -> None:
    out = io.StringIO()
    figures = run_bench(
        images_dir, tmp_path / "bench.json", resets=2, steps=10, idle=4, console=Console(file=out, width=200)
    )
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written == json.loads(json.dumps(figures))
    groups = {(row["group"], row["what"]) for row in written["rows"]}
    assert ("reset", "warm pool (kernel overlay)") in groups
    assert ("reset", "cold, kernel overlay") in groups
    assert ("step", "`true`") in groups
    assert written["idle"]["alive"] == 4
    table = out.getvalue()
    assert "| reset" in table and "p50" in table and "baseline" in table
