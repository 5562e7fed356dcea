"""A fault leaves no trace in file times or inode numbers: `find -cmin` must not point at it.

Faults are written into the nodes just before the first prompt, so without care the injected file is
the one file with a fresh ctime (or the newest one, or the one with the highest inode number).
"""

from __future__ import annotations

import pytest

from hpcgym.scenarios.faults import library_file_paths

NODES = ("login01", "compute-01", "compute-02", "compute-03", "compute-04")
# Each breaks a different file on a different node (the munge key's mode, a route, the hosts file).
SCENARIOS = ("hpc_munge", "hpc_route_typo", "hpc_hosts_entry", "hpc_ood_apache")


def traces(incident) -> dict[str, tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    paths = " ".join(sorted(library_file_paths()))
    out = {}
    for node in NODES:
        prefix = "" if node == "login01" else f"ssh {node} "
        by_ctime = incident.episode.step(f"{prefix}ls -1td --time=ctime {paths} 2>/dev/null").output
        by_inode = incident.episode.step(
            f"{prefix}ls -1di {paths} 2>/dev/null | sort -n | cut -d' ' -f2"
        ).output
        recent = incident.episode.step(
            f"{prefix}find {paths} -maxdepth 0 -cmin -60 2>/dev/null | sort"
        ).output
        out[node] = (by_ctime, by_inode, recent)
    return out


def test_the_faulted_file_looks_like_every_other_candidate(play):
    seen = {}
    for scenario in SCENARIOS:
        seen[scenario] = traces(play(scenario, seed=0))
    first = seen[SCENARIOS[0]]
    for scenario in SCENARIOS[1:]:
        for node in NODES:
            # Files a fault deleted are missing (that is the fault); compare what both have.
            common = set(first[node][2].split()) & set(seen[scenario][node][2].split())
            assert len(common) >= 3
            for kind, a, b in zip(
                ("ctime", "inode", "recent"), first[node], seen[scenario][node], strict=True
            ):
                assert [p for p in a.split() if p in common] == [p for p in b.split() if p in common], (
                    scenario,
                    kind,
                    node,
                )


@pytest.mark.parametrize("scenario", ["hpc_munge"])
def test_the_faulted_file_is_not_the_only_recent_one(play, scenario):
    incident = play(scenario, seed=0)
    recent = incident.episode.step(
        "find / -xdev -type f -cmin -10 2>/dev/null | grep -v ^/proc"
    ).output.split()
    assert "/etc/munge/munge.key" not in recent or len([p for p in recent if p.startswith("/etc/")]) >= 3
