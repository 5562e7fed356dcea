"""The red team: no script that never reads the terminal solves a lite scenario or beats doing nothing.

Cheats of cheats.py, and blind, play lite scenarios at one test seed each (800 + the scenario's
place in the lite list, so the variants differ) through `evaluate.run_episode`, the loop gym,
OpenEnv and `invoke eval` use. Each must end unsolved with a return no higher than noop's on the
same (scenario, seed). The whole grid takes about 10 minutes on two cores, so by default the
strongest scripts play every lite scenario and each other cheat a rotating third of them (every
cheat plays); HPCGYM_RED_TEAM=all plays every pair, and `invoke eval --lite --policies noop,cheats`
plays them all with a leaderboard and transcripts.
"""

from __future__ import annotations

import os
import shlex

import pytest

from hpcgym.scenarios import cheats
from hpcgym.scenarios.evaluate import EpisodeRecord, run_episode
from hpcgym.scenarios.incident import gold_commands
from hpcgym.scenarios.policies import (
    POLICY_GROUPS,
    POLICY_NAMES,
    BlindPolicy,
    expand_policy_names,
    make_policy,
)
from hpcgym.scenarios.schema import lite_ids, load_scenario, scenario_ids

LITE = lite_ids()
SEEDS = {scenario: 800 + index for index, scenario in enumerate(LITE)}
RED_TEAM = ("blind", *cheats.CHEAT_NAMES)
# Played on every lite scenario: the union of the gold fixes, the measured 40/40 script, and the
# two generic scripts that steer around every trap they can see (by who set a reason, by shape).
EVERYWHERE = ("blind", "cheat-fix-everything", "cheat-safe-generic", "cheat-structural-generic")
STRIDE = 3


def red_team_grid(full: bool) -> list[tuple[str, str]]:
    """(policy, scenario) pairs: all of them, or EVERYWHERE everywhere and each other cheat on the
    lite scenarios it aims at (cheats.AIMS) plus a rotating STRIDE-th of the others."""
    rotating = [name for name in RED_TEAM if name not in EVERYWHERE]
    return [
        (policy, scenario)
        for index, scenario in enumerate(LITE)
        for policy in RED_TEAM
        if full
        or policy in EVERYWHERE
        or scenario in cheats.AIMS[policy]
        or (index + rotating.index(policy)) % STRIDE == 0
    ]


GRID = red_team_grid(os.environ.get("HPCGYM_RED_TEAM") == "all")


# ---- the scripts themselves (no cluster) ------------------------------------------------------------


def test_the_red_team_is_registered_and_large_enough():
    assert len(cheats.CHEAT_NAMES) >= 15
    assert set(RED_TEAM) <= set(POLICY_NAMES)
    assert expand_policy_names(["gold", "noop", "cheats"]) == ["gold", "noop", *RED_TEAM]
    assert expand_policy_names(["blind", "cheats", "noop"]) == ["blind", *cheats.CHEAT_NAMES, "noop"]
    assert POLICY_GROUPS["cheats"] == RED_TEAM
    assert list(cheats.cheats()) == list(cheats.CHEAT_NAMES)
    played = {policy for policy, _ in red_team_grid(full=False)}
    assert played == set(RED_TEAM) and len(played) >= 15
    library = set(scenario_ids())
    assert all(set(aims) <= library for aims in cheats.AIMS.values())


@pytest.mark.parametrize("name", RED_TEAM)
def test_a_cheat_never_reads_and_fits_every_budget(name):
    smallest = min(load_scenario(scenario).max_steps for scenario in scenario_ids())
    assert smallest >= cheats.MIN_STEPS
    typed = []
    for observations in (["", "", ""], ["compute-03 down*", "Keyfile is insecure", "exit"]):
        policy = make_policy(name)
        policy.reset("an alert", 7)
        commands = []
        for step in range(smallest + 1):
            command = policy.act(observations[step % len(observations)])
            if command is None:
                break
            assert "\n" not in command
            commands.append(command)
        typed.append(commands)
    assert typed[0] == typed[1] and 1 <= len(typed[0]) <= smallest


def split_commands(line: str) -> list[list[str]]:
    """A `;`-separated shell line as the words of each command (quotes respected)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token == ";":
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def effects(line: str) -> list[tuple[str, tuple[str, ...]]]:
    """(node, words) of every command `line` runs, looking through `ssh NODE REMOTE`."""
    found: list[tuple[str, tuple[str, ...]]] = []
    for words in split_commands(line):
        if len(words) > 2 and words[0] == "ssh" and words[1] in cheats.COMPUTE:
            found += [(words[1], tuple(remote)) for remote in split_commands(" ".join(words[2:]))]
        else:
            found.append(("login01", tuple(words)))
    return found


def test_batching_keeps_each_nodes_order_and_the_login_nodes_place():
    commands = [
        "ssh compute-01 a 'b c'",
        "ssh compute-02 d",
        "ssh compute-01 e",
        "scontrol x",
        "ssh compute-01 f",
    ]
    assert cheats.batch_by_node(commands) == [
        "ssh compute-01 'a b c; e'",
        "ssh compute-02 d",
        "scontrol x",
        "ssh compute-01 f",
    ]


def test_blind_types_every_state_changing_gold_fix():
    fixes = set(cheats.blind_fixes())
    library = [load_scenario(scenario) for scenario in scenario_ids()]
    golds = {
        (scenario.id, command)
        for scenario in library
        for seed in cheats.COVER_SEEDS
        for command in gold_commands(scenario, seed)
    }
    for scenario, command in golds:
        assert (command in fixes) != cheats.is_read_only(command), (scenario, command)
    # Each fix is typed, in its node's order: alone, or in that node's batch behind one ssh.
    typed = [command for line in BlindPolicy().commands[:-2] for command in effects(line)]
    wanted = [command for fix in cheats.blind_fixes() for command in effects(fix)]
    for target in ("login01", *cheats.COMPUTE):
        assert [c for t, c in typed if t == target] == [c for t, c in wanted if t == target], target
    assert len(BlindPolicy().commands) <= cheats.MIN_STEPS


def test_blind_fits_what_an_agent_may_send() -> None:
    # Over OpenEnv a longer line is refused before any cluster sees it (the soak met 159 of them).
    from hpcgym.interfaces.openenv.models import MAX_COMMAND_CHARS, HpcAction

    assert cheats.MAX_LINE_CHARS == MAX_COMMAND_CHARS
    for line in BlindPolicy().commands:
        HpcAction(command=line)


def test_chain_packs_lines_that_an_even_split_would_make_too_long() -> None:
    long_x, long_z = "echo " + "x" * 40, "echo " + "z" * 40
    assert cheats.chain([long_x, "echo a", long_z, "echo b"], 2, max_chars=60) == (
        f"{long_x}; echo a",
        f"{long_z}; echo b",
    )
    # Two per line would put both long ones on one line of 92 characters.
    commands = [long_x, long_z, "echo a", "echo b"]
    assert cheats.chain(commands, 3, max_chars=60) == (long_x, f"{long_z}; echo a", "echo b")
    with pytest.raises(ValueError, match="do not fit"):
        cheats.chain(commands, 2, max_chars=60)


def test_read_only_gold_commands_are_told_apart():
    looks = [
        "sinfo -R",
        "ssh compute-01 journalctl -u slurmd --no-pager",
        "ssh compute-02 systemctl status munge",
        "ssh compute-03 nvidia-smi -q -d ECC",
        "ssh compute-04 mount -t nfs4",
        "httpd -t",
        "curl -s -o /dev/null -w '%{http_code}\\n' -u alice:alice http://login01/pun/sys/dashboard",
        "ssh compute-01 timedatectl",
        "scontrol show partition gpu",
    ]
    changes = [
        "ssh compute-01 nvidia-smi -r -i 0",
        'ssh compute-02 "ssh login01 cat /etc/slurm/slurm.conf > /etc/slurm/slurm.conf"',
        "ssh compute-03 mount /apps",
        "ssh compute-04 systemctl enable --now chronyd",
        "scontrol update partitionname=gpu state=up",
        "sed -i 's|a|b|' /etc/httpd/conf.d/ood-portal.conf",
    ]
    assert all(cheats.is_read_only(command) for command in looks)
    assert not any(cheats.is_read_only(command) for command in changes)


# ---- every cheat on every lite scenario -------------------------------------------------------------


@pytest.fixture(scope="module")
def noop_records(runtime):  # type: ignore[no-untyped-def]
    """noop's episode per lite scenario at its seed, played once for the module."""
    played: dict[str, EpisodeRecord] = {}

    def noop(scenario: str) -> EpisodeRecord:
        if scenario not in played:
            played[scenario] = run_episode(runtime, "noop", scenario, SEEDS[scenario])
        return played[scenario]

    return noop


def explain(record: EpisodeRecord, noop: EpisodeRecord) -> str:
    steps = "\n".join(
        f"  [{step.reward:+.3f}{' UNSAFE ' + ', '.join(step.unsafe) if step.unsafe else ''}] "
        f"{step.command[:160]}\n    -> {step.output.strip()[-240:]!r}"
        for step in record.transcript
    )
    return (
        f"{record.policy} on {record.scenario} seed {record.seed}: {record.outcome}, return "
        f"{record.total_reward:+.3f} (noop {noop.total_reward:+.3f}), components {record.components}, "
        f"unsafe {record.unsafe}\n{steps}"
    )


# Fixed scripts that still solve a scenario, with why; each is a strict xfail, so closing one fails
# the test until the entry goes. None is left: the generic scripts (those that read the cluster in
# their own commands and repair what looks broken) meet the site's decoys, which look the same.
KNOWN_GAPS: dict[tuple[str, str], str] = {}


def _gap(pair: tuple[str, str]):  # type: ignore[no-untyped-def]
    reason = KNOWN_GAPS.get(pair)
    return pytest.param(*pair, marks=pytest.mark.xfail(strict=True, reason=reason)) if reason else pair


@pytest.mark.parametrize(("policy", "scenario"), [_gap(pair) for pair in GRID])
def test_a_cheat_does_not_pay(runtime, noop_records, policy, scenario):
    noop = noop_records(scenario)
    record = run_episode(runtime, policy, scenario, SEEDS[scenario])
    assert not record.solved, explain(record, noop)
    assert record.total_reward <= noop.total_reward + 1e-9, explain(record, noop)
