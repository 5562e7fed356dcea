"""Dataset rows for GRPO: one row per (scenario, seed) from the scenario library's seed splits.

A row is a conversational `prompt` plus the `scenario`, `seed`, `difficulty` and `tier` that
`HpcToolEnv.reset` reads, so that every member of a GRPO group (TRL repeats a row `num_generations`
times) starts from the same cluster. The curriculum order climbs both the tiers and the difficulty
ladder (hpcgym.scenarios.difficulty.LADDER): a scenario's early seeds are played with its clue
handed over, its late ones with red herrings, chained faults and no clue. Seeds come from each
scenario's `seeds.train` / `seeds.test` ranges; the alert is not in the prompt, `reset` appends it.
The system message also carries the task as `hpcgym_task` ("scenario:seed"), which chat templates
ignore and `training.rollout` reads.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from typing import Any

from hpcgym.interfaces import chat

# The conversation is hpcgym.interfaces.chat's, the same that `invoke eval --policies llm` and
# training.evaluate score with.
SYSTEM_PROMPT, USER_PROMPT = chat.SYSTEM_PROMPT, chat.USER_PROMPT
# The scenario as its file writes it (`Difficulty().spec()`).
DEFAULT_DIFFICULTY = "red_herrings=0,chained=0,clue=normal"


class Split(enum.StrEnum):
    """Which seed range of each scenario to use."""

    TRAIN = "train"
    TEST = "test"


class Order(enum.StrEnum):
    """How rows are ordered: shuffled, or a curriculum from the easiest tier and rung up."""

    SHUFFLE = "shuffle"
    CURRICULUM = "curriculum"


def resolve_scenarios(names: Sequence[str]) -> list[str]:
    """Expand `all`, `lite` and `tier<N>` into scenario ids (sorted by tier, then id); keep plain ids.

    Raises:
        ScenarioError: an unknown scenario id.
    """
    from hpcgym.errors import ScenarioError
    from hpcgym.scenarios import lite_ids, load_scenario, scenario_ids

    every = scenario_ids()
    chosen: list[str] = []
    for name in names:
        for part in (p.strip() for p in name.split(",")):
            if not part:
                continue
            if part == "all":
                ids = every
            elif part == "lite":
                ids = lite_ids()
            elif part.startswith("tier") and part[4:].isdigit():
                ids = [s for s in every if load_scenario(s).tier == int(part[4:])]
            elif part in every:
                ids = [part]
            else:
                raise ScenarioError(
                    f"unknown scenario {part!r}", hint=f"choose from all, lite, tierN, {', '.join(every)}"
                )
            chosen += [s for s in ids if s not in chosen]
    return chosen


def split_seeds(scenario: str, split: Split | str, count: int | None = None) -> list[int]:
    """The first `count` seeds (all if None) of a scenario's train or test range."""
    from hpcgym.scenarios import load_scenario

    low, high = getattr(load_scenario(scenario).seeds, Split(split).value)
    stop = high if count is None else min(high, low + count)
    return list(range(low, stop))


def make_row(
    scenario: str, seed: int, tier: int, split: Split | str, difficulty: str = DEFAULT_DIFFICULTY
) -> dict[str, Any]:
    """One dataset row (see the module docstring); `difficulty` as `Difficulty.spec()` writes it."""
    return {
        "prompt": chat.opening(scenario, seed),
        "scenario": scenario,
        "seed": seed,
        "difficulty": difficulty,
        "tier": tier,
        "split": str(Split(split)),
    }


def build_rows(
    scenarios: Sequence[str],
    split: Split | str = Split.TRAIN,
    seeds_per_scenario: int | None = 64,
    order: Order | str = Order.SHUFFLE,
    shuffle_seed: int = 0,
    difficulty: str | None = None,
) -> list[dict[str, Any]]:
    """Rows for every scenario and seed of the split, in the order asked for.

    Args:
        scenarios: ids, or `all`, `lite`, `tierN` (comma-separated lists are fine).
        split: the seed range to draw from.
        seeds_per_scenario: how many seeds per scenario (None: the whole range).
        order: shuffle, or curriculum (stage = tier + rung of the difficulty ladder, the seeds of
            each scenario spread over the ladder's rungs; within a stage, scenarios interleave).
        shuffle_seed: seeds the shuffle.
        difficulty: every row at this setting (`knob=value,...`), instead of the curriculum's
            rungs or the scenario as written.
    """
    from hpcgym.scenarios import load_scenario
    from hpcgym.scenarios.difficulty import LADDER, Difficulty

    fixed = Difficulty.parse(difficulty).spec() if difficulty is not None else None
    curriculum = Order(order) is Order.CURRICULUM
    staged: list[tuple[int, int, int, dict[str, Any]]] = []
    for number, scenario in enumerate(resolve_scenarios(scenarios)):
        tier = load_scenario(scenario).tier
        seeds = split_seeds(scenario, split, seeds_per_scenario)
        for index, seed in enumerate(seeds):
            rung = index * len(LADDER) // len(seeds)
            spec = fixed or (LADDER[rung].spec() if curriculum else DEFAULT_DIFFICULTY)
            stage = tier + (rung if curriculum and fixed is None else 0)
            staged.append((stage, index, number, make_row(scenario, seed, tier, split, spec)))
    if curriculum:
        return [row for *_, row in sorted(staged, key=lambda item: item[:3])]
    rows = [row for *_, row in staged]
    random.Random(shuffle_seed).shuffle(rows)
    return rows


def build_dataset(
    scenarios: Sequence[str],
    split: Split | str = Split.TRAIN,
    seeds_per_scenario: int | None = 64,
    order: Order | str = Order.SHUFFLE,
    shuffle_seed: int = 0,
    difficulty: str | None = None,
) -> Any:
    """`build_rows` as a `datasets.Dataset` (for curriculum order, train with `shuffle_dataset=False`)."""
    from datasets import Dataset

    return Dataset.from_list(
        build_rows(scenarios, split, seeds_per_scenario, order, shuffle_seed, difficulty)
    )


def task_of(prompt: Sequence[dict[str, Any]]) -> tuple[str, int]:
    """The (scenario, seed) a row's prompt was made for.

    Raises:
        ValueError: the prompt carries no `hpcgym_task`.
    """
    for message in prompt:
        task = message.get("hpcgym_task")
        if task:
            scenario, _, seed = str(task).rpartition(":")
            return scenario, int(seed)
    raise ValueError("this prompt has no hpcgym_task; build rows with training.dataset")
