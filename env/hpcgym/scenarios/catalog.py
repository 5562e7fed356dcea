"""The library's table for the scenarios README, made from the files so the two never disagree.

Each row gives a scenario's id, tier, whether it is in the lite set, what breaks (its title), what it
teaches and where the failure is documented in the real world (its `teaches` and `source`).
`invoke scenario-table` writes it between the README's markers; a test fails when they differ.
"""

from __future__ import annotations

from pathlib import Path

from hpcgym.scenarios.schema import LIBRARY, load_scenario, scenario_ids

README = LIBRARY.parent / "README.md"
BEGIN = "<!-- scenario table: made by `invoke scenario-table` from library/*.yaml; do not edit -->"
END = "<!-- end of scenario table -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(library: Path = LIBRARY) -> str:
    """The markdown table of every scenario, by tier then id."""
    lines = [
        "| id | tier | lite | what breaks | what it teaches | real-world source |",
        "|---|---|---|---|---|---|",
    ]
    for sid in scenario_ids(library):
        s = load_scenario(sid, library)
        lite = "yes" if s.lite else ""
        lines.append(
            f"| {sid} | {s.tier} | {lite} | {_cell(s.title)} | {_cell(s.teaches)} | {_cell(s.source)} |"
        )
    return "\n".join(lines) + "\n"


def with_table(readme: str, library: Path = LIBRARY) -> str:
    """`readme` with the text between the markers replaced by the current table.

    Raises:
        ValueError: the markers are missing.
    """
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError(f"{README} lacks the scenario table markers")
    return f"{head}{BEGIN}\n{table(library)}{END}{tail}"


def write_readme(path: Path = README) -> bool:
    """Bring the README's table up to date; True when it changed."""
    text = path.read_text()
    new = with_table(text)
    if new != text:
        path.write_text(new)
    return new != text
