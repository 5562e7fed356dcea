"""Every scenario says where it comes from, and the README's table is the library's own."""

from __future__ import annotations

import pytest

from hpcgym.scenarios import catalog, scenario_ids
from hpcgym.scenarios.schema import load_scenario

RECORDS = ("source", "teaches", "observation", "generic_fix_breaks", "hint")


@pytest.mark.parametrize("scenario", scenario_ids())
def test_each_scenario_records_its_source_and_what_it_needs(scenario: str) -> None:
    loaded = load_scenario(scenario)
    missing = [name for name in RECORDS if not getattr(loaded, name).strip()]
    assert not missing, f"{scenario} lacks {missing}"
    assert len(loaded.teaches) <= 200 and "\n" not in loaded.teaches.strip()


def test_the_readme_table_is_made_from_the_library() -> None:
    text = catalog.README.read_text()
    assert catalog.with_table(text) == text, "run `invoke scenario-table`"
    rows = [line for line in text.splitlines() if line.startswith("| hpc_")]
    assert [row.split(" | ")[0][2:] for row in rows] == scenario_ids()


def test_the_table_follows_a_changed_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    library = tmp_path / "library"
    library.mkdir()
    source = catalog.LIBRARY / "hpc_ifdown.yaml"
    (library / "hpc_ifdown.yaml").write_text(source.read_text().replace("tier: 1", "tier: 4", 1))
    assert "| hpc_ifdown | 4 |" in catalog.table(library)
    with pytest.raises(ValueError):
        catalog.with_table("no markers here", library)
