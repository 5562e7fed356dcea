"""The controller's one TOOLS table names exactly the programs the images link to the client.

setup-node.sh makes a hard link to hpcgym-client for every line of stubs/tools.list that is not a
comment (`grep -v '^#' | while read -r tool`); a program linked there without a handler answers
"command not found" in a node, and a handler without a link is never reached.
"""

from __future__ import annotations

import inspect
from pathlib import Path, PurePosixPath

import hpcgym.controller
from hpcgym.controller import dispatch
from hpcgym.controller.tools import RUNTIME_TOOLS, SLURM_CLIENTS, TOOLS
from hpcgym.runtime.cluster import Cluster

TOOLS_LIST = Path(__file__).resolve().parents[2] / "stubs" / "tools.list"


def linked_programs(text: str) -> list[str]:
    """The programs setup-node.sh links, read as its loop reads tools.list (basename = program)."""
    paths = [line.strip() for line in text.splitlines() if not line.startswith("#")]
    return [PurePosixPath(path).name for path in paths if path]


def test_the_table_and_tools_list_name_the_same_programs() -> None:
    linked = linked_programs(TOOLS_LIST.read_text())
    assert len(linked) == len(set(linked)), f"tools.list links a program twice: {sorted(linked)}"
    handled = set(TOOLS) | RUNTIME_TOOLS
    missing = sorted(set(linked) - handled)
    extra = sorted(handled - set(linked))
    assert not missing, f"in stubs/tools.list but no handler in controller/tools.py TOOLS: {missing}"
    assert not extra, f"handled in controller/tools.py but not linked by stubs/tools.list: {extra}"
    assert not RUNTIME_TOOLS & set(TOOLS), sorted(RUNTIME_TOOLS & set(TOOLS))


def test_the_reader_follows_setup_nodes_loop() -> None:
    text = "# a comment\n/usr/bin/sinfo\n\n  /usr/sbin/slurmd  \n#/usr/bin/gone\n"
    assert linked_programs(text) == ["sinfo", "slurmd"]


def test_dispatch_uses_the_one_table_and_its_slurm_clients_are_in_it() -> None:
    # No second table: what dispatch looks programs up in, and what the package exports, is this one.
    assert dispatch.TOOLS is TOOLS
    assert hpcgym.controller.TOOLS is TOOLS
    assert set(TOOLS) >= SLURM_CLIENTS, sorted(SLURM_CLIENTS - set(TOOLS))


def test_the_runtime_answers_its_tools_before_the_controller() -> None:
    # Cluster.dispatch takes ssh off the channel; were that gone, ssh would need a TOOLS entry.
    source = inspect.getsource(Cluster.dispatch)
    for program in RUNTIME_TOOLS:
        assert f'== "{program}"' in source, f"runtime/cluster.py no longer answers {program}"
