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


# The kernel stamps ctime from a clock that ticks every few milliseconds, so files written in one
# pass share a stamp or fall on either side of a tick, wherever the tick happens to land: changes
# closer together than this are one moment, as an agent reading `ls -lt --full-time` would see them.
ONE_MOMENT_S = 0.05


def moments(stat_lines: str) -> list[frozenset[str]]:
    """Group paths by ctime into moments, oldest first."""
    stamped = []
    for line in stat_lines.splitlines():
        path, stamp = line.split("|")
        clock, fraction = stamp.split()[1].split(".")
        hours, minutes, seconds = clock.split(":")
        day = stamp.split()[0]
        stamped.append(
            (day, int(hours) * 3600 + int(minutes) * 60 + int(seconds) + float("0." + fraction), path)
        )
    stamped.sort()
    groups: list[set[str]] = []
    last: tuple[str, float] | None = None
    for day, t, path in stamped:
        if last is None or last[0] != day or t - last[1] > ONE_MOMENT_S:
            groups.append(set())
        groups[-1].add(path)
        last = (day, t)
    return [frozenset(g) for g in groups]


def traces(incident) -> dict[str, tuple[list[frozenset[str]], list[str], list[str]]]:  # type: ignore[no-untyped-def]
    paths = " ".join(sorted(library_file_paths()))
    out = {}
    for node in NODES:
        prefix = "" if node == "login01" else f"ssh {node} "
        by_ctime = incident.episode.step(f"{prefix}stat -c %n\\|%z {paths} 2>/dev/null").output
        by_inode = incident.episode.step(
            f"{prefix}ls -1di {paths} 2>/dev/null | sort -n | cut -d' ' -f2"
        ).output
        recent = incident.episode.step(
            f"{prefix}find {paths} -maxdepth 0 -cmin -60 2>/dev/null | sort"
        ).output
        out[node] = (moments(by_ctime), by_inode.split(), recent.split())
    return out


def test_the_faulted_file_looks_like_every_other_candidate(play):
    seen = {}
    for scenario in SCENARIOS:
        seen[scenario] = traces(play(scenario, seed=0))
    first = seen[SCENARIOS[0]]
    for scenario in SCENARIOS[1:]:
        for node in NODES:
            # Files a fault deleted are missing (that is the fault); compare what both have.
            common = set(first[node][2]) & set(seen[scenario][node][2])
            assert len(common) >= 3
            ctimes_a, inodes_a, recent_a = first[node]
            ctimes_b, inodes_b, recent_b = seen[scenario][node]
            assert [g & common for g in ctimes_a if g & common] == [
                g & common for g in ctimes_b if g & common
            ], (
                scenario,
                "ctime",
                node,
            )
            assert [p for p in inodes_a if p in common] == [p for p in inodes_b if p in common], (
                scenario,
                "inode",
                node,
            )
            assert [p for p in recent_a if p in common] == [p for p in recent_b if p in common], (
                scenario,
                "recent",
                node,
            )


def test_moments_group_close_changes_and_split_far_ones():
    lines = (
        "/b|2026-12-06 13:28:55.781302092 +0000\n"
        "/a|2026-12-06 13:28:55.790000000 +0000\n"
        "/c|2026-12-06 13:29:10.000000000 +0000\n"
    )
    assert moments(lines) == [frozenset({"/a", "/b"}), frozenset({"/c"})]


@pytest.mark.parametrize("scenario", ["hpc_munge"])
def test_the_faulted_file_is_not_the_only_recent_one(play, scenario):
    incident = play(scenario, seed=0)
    recent = incident.episode.step(
        "find / -xdev -type f -cmin -10 2>/dev/null | grep -v ^/proc"
    ).output.split()
    assert "/etc/munge/munge.key" not in recent or len([p for p in recent if p.startswith("/etc/")]) >= 3
