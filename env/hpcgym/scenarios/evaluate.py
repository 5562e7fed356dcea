"""Running policies over scenarios and seeds: gold checks, the leaderboard, plots and transcripts.

`run_episode` plays one policy on one (scenario, seed) through the agent's real shell and returns an
`EpisodeRecord` (every command, output and reward). `evaluate` does that for a grid, with a progress
bar, and `write_report` turns the records into `leaderboard.md`, `leaderboard.png`, `results.json`
and `transcripts.jsonl`. `check_gold` is what `invoke gold` runs: it fails unless every gold run is
solved with full reward. `render_transcript` shows one episode as a person wants to read it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpcgym.errors import ConfigError, ControllerError, SandboxError, ScenarioError
from hpcgym.interfaces import chat
from hpcgym.runtime import Runtime
from hpcgym.scenarios.difficulty import Difficulty
from hpcgym.scenarios.grade import DIAGNOSIS_CREDIT, PROGRESS_CREDIT, SUCCESS_CREDIT
from hpcgym.scenarios.incident import TOTAL_KEYS, Incident
from hpcgym.scenarios.policies import expand_policy_names, make_policy

MAX_OBSERVATION_CHARS = 8000
INFRA_RETRIES = 2
# What `invoke eval` plays by default: the leaderboard's reference points, blind among them.
DEFAULT_EVAL_POLICIES = ("gold", "noop", "random", "destructive", "expert", "blind")


@dataclass
class StepRecord:
    """One command and what it printed (the last `MAX_OBSERVATION_CHARS`; `digest`: sha256 of all)."""

    command: str
    output: str
    exit_code: int
    node: str
    reward: float
    unsafe: list[str] = field(default_factory=list)
    digest: str = ""


@dataclass
class EpisodeRecord:
    """One played episode: who played what, how it ended, and every step."""

    policy: str
    scenario: str
    tier: int
    seed: int
    alert: str
    outcome: str
    solved: bool
    unsafe: list[str]
    steps: int
    total_reward: float
    components: dict[str, float]
    transcript: list[StepRecord] = field(default_factory=list)

    @property
    def is_unsafe(self) -> bool:
        return bool(self.unsafe) or self.outcome == "catastrophic"


@dataclass(frozen=True)
class LlmOptions:
    """Where the `llm` policy finds its model."""

    base_url: str = ""
    model: str = ""
    api_key: str = "EMPTY"


def run_episode(
    runtime: Runtime,
    policy_name: str,
    scenario: str,
    seed: int,
    *,
    llm: LlmOptions = LlmOptions(),
    difficulty: Difficulty | None = None,
) -> EpisodeRecord:
    """Play one episode: the policy types commands into the agent's real shell until it ends."""
    with Incident(runtime, scenario, seed, difficulty=difficulty) as incident:
        policy = make_policy(
            policy_name, incident.gold, base_url=llm.base_url, model=llm.model, api_key=llm.api_key
        )
        policy.reset(incident.alert, seed)
        observation = incident.first_observation
        tool_results = getattr(policy, "reads_tool_results", False)
        transcript = []
        while not incident.done:
            command = policy.act(observation)
            if command is None:
                break
            step = incident.step(command)
            output = step.result.output
            observation = chat.tool_result(output, step.result.exit_code) if tool_results else output
            transcript.append(
                StepRecord(
                    command=command,
                    output=output[-MAX_OBSERVATION_CHARS:],
                    digest=hashlib.sha256(output.encode()).hexdigest(),
                    exit_code=step.result.exit_code,
                    node=step.result.node,
                    reward=step.reward,
                    unsafe=list(step.info["step_unsafe"]),
                )
            )
        incident.finish()
        info = incident.info()
        return EpisodeRecord(
            policy=policy_name,
            scenario=scenario,
            tier=incident.tier or 0,
            seed=seed,
            alert=incident.alert,
            outcome=info["outcome"],
            solved=info["solved"],
            unsafe=info["unsafe"],
            steps=incident.steps,
            total_reward=info["return"],
            components={k: v for k, v in info["reward_components"].items() if k not in TOTAL_KEYS},
            transcript=transcript,
        )


def evaluate(
    runtime: Runtime,
    policies: Sequence[str],
    scenarios: Sequence[str],
    seeds: Sequence[int],
    *,
    llm: LlmOptions = LlmOptions(),
    progress: bool = True,
) -> list[EpisodeRecord]:
    """Every policy on every (scenario, seed), with a progress bar on stderr."""
    grid = [(p, s, seed) for p in policies for s in scenarios for seed in seeds]
    return evaluate_grid(runtime, grid, llm=llm, progress=progress)


def evaluate_grid(
    runtime: Runtime,
    grid: Sequence[tuple[str, str, int]],
    *,
    llm: LlmOptions = LlmOptions(),
    progress: bool = True,
    workers: int = 1,
    difficulty: Difficulty | None = None,
) -> list[EpisodeRecord]:
    """Play each (policy, scenario, seed) of `grid`, with one progress bar (rich, on stderr).

    With `workers` > 1, that many episodes run at once on the one runtime (each its own cluster);
    the records come back in grid order either way, and each episode is the same bytes.
    """
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    records = []
    columns = (
        TextColumn("episodes"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        job = bar.add_task("", total=len(grid))

        def play(item: tuple[str, str, int]) -> EpisodeRecord:
            policy, scenario, seed = item
            record = _run_with_retries(runtime, policy, scenario, seed, llm, difficulty)
            bar.update(job, advance=1, description=f"{policy} {scenario} {seed}")
            return record

        if workers <= 1:
            records = [play(item) for item in grid]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                records = list(pool.map(play, grid))
    return records


def _run_with_retries(
    runtime: Runtime, policy: str, scenario: str, seed: int, llm: LlmOptions, difficulty: Difficulty | None
) -> EpisodeRecord:
    # An infrastructure failure (a sandbox that would not start a daemon) says nothing about the
    # policy: the episode is discarded and played again from scratch, never scored.
    for attempt in range(INFRA_RETRIES + 1):
        try:
            return run_episode(runtime, policy, scenario, seed, llm=llm, difficulty=difficulty)
        except (SandboxError, ControllerError):
            if attempt == INFRA_RETRIES:
                raise
    raise AssertionError("unreachable")


def full_reward(record: EpisodeRecord, has_diagnosis: bool) -> bool:
    """Solved, safe, every progress credit earned, and the diagnosis credit where the scenario has one."""
    c = record.components
    return (
        record.solved
        and not record.is_unsafe
        and abs(c.get("success", 0.0) - SUCCESS_CREDIT) < 1e-9
        and abs(c.get("progress", 0.0) - PROGRESS_CREDIT) < 1e-6
        and (not has_diagnosis or abs(c.get("diagnosis", 0.0) - DIAGNOSIS_CREDIT) < 1e-9)
    )


def check_gold(
    runtime: Runtime,
    grid: Sequence[tuple[str, int]],
    *,
    progress: bool = True,
    difficulty: Difficulty | None = None,
) -> list[EpisodeRecord]:
    """Run gold on each (scenario, seed); raise unless every run earns full reward.

    Raises:
        ScenarioError: lists each (scenario, seed) whose gold run fell short, and how.
    """
    from hpcgym.scenarios.schema import load_scenario

    records = evaluate_grid(
        runtime, [("gold", s, seed) for s, seed in grid], progress=progress, difficulty=difficulty
    )
    failures = [
        f"{r.scenario} seed {r.seed}: {r.outcome}, return {r.total_reward:.3f}, unsafe {r.unsafe}"
        for r in records
        if not full_reward(r, bool(load_scenario(r.scenario).diagnosis))
    ]
    if failures:
        raise ScenarioError("gold fell short:\n  " + "\n  ".join(failures), hint="see the transcripts")
    return records


# ---- reports ------------------------------------------------------------------------------------------


def summarize(records: Iterable[EpisodeRecord]) -> dict[tuple[str, str], dict[str, float]]:
    """(policy, scenario) -> solve rate, mean reward, mean steps, unsafe rate, episodes."""
    groups: dict[tuple[str, str], list[EpisodeRecord]] = {}
    for record in records:
        groups.setdefault((record.policy, record.scenario), []).append(record)
    table = {}
    for key, group in groups.items():
        n = len(group)
        table[key] = {
            "solve_rate": sum(r.solved for r in group) / n,
            "mean_reward": sum(r.total_reward for r in group) / n,
            "mean_steps": sum(r.steps for r in group) / n,
            "unsafe_rate": sum(r.is_unsafe for r in group) / n,
            "episodes": float(n),
        }
    return table


def leaderboard_markdown(records: Sequence[EpisodeRecord]) -> str:
    """Policy x scenario (solve rate, mean reward, mean steps, unsafe rate), then per-policy totals."""
    table = summarize(records)
    policies = list(dict.fromkeys(r.policy for r in records))
    scenarios = list(dict.fromkeys(r.scenario for r in records))
    tiers = {r.scenario: r.tier for r in records}
    lines = [
        "# hpcgym leaderboard",
        "",
        "Each cell: solve rate · mean reward · mean steps · unsafe rate.",
        "",
        "| scenario | tier | " + " | ".join(policies) + " |",
        "|---|---|" + "---|" * len(policies),
    ]
    for scenario in scenarios:
        cells = []
        for policy in policies:
            row = table.get((policy, scenario))
            cells.append(
                "-"
                if row is None
                else f"{row['solve_rate']:.0%} · {row['mean_reward']:+.2f} · {row['mean_steps']:.1f} · "
                f"{row['unsafe_rate']:.0%}"
            )
        lines.append(f"| {scenario} | {tiers[scenario]} | " + " | ".join(cells) + " |")
    lines += ["", "| policy | episodes | solve rate | mean reward | unsafe rate |", "|---|---|---|---|---|"]
    for policy in policies:
        mine = [r for r in records if r.policy == policy]
        n = len(mine)
        lines.append(
            f"| {policy} | {n} | {sum(r.solved for r in mine) / n:.0%} | "
            f"{sum(r.total_reward for r in mine) / n:+.3f} | {sum(r.is_unsafe for r in mine) / n:.0%} |"
        )
    return "\n".join(lines) + "\n"


def plot_leaderboard(records: Sequence[EpisodeRecord], path: Path) -> None:
    """Solve rate and mean reward per policy, one bar per tier, each bar labelled with its value and n."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = plot_cells(records)
    policies = list(dict.fromkeys(r.policy for r in records))
    tiers = sorted({r.tier for r in records})
    width = 0.8 / max(1, len(tiers))
    colors = [plt.get_cmap("tab10")(i) for i in range(10)]
    fig, axes = plt.subplots(2, 1, figsize=(max(7.0, 1.3 * len(policies) * max(1, len(tiers)) / 2 + 2), 7.5))
    panels = (("solve_rate", "solve rate", "{:.0%}"), ("mean_reward", "mean reward per episode", "{:+.2f}"))
    for ax, (key, label, fmt) in zip(axes, panels, strict=True):
        for j, tier in enumerate(tiers):
            xs, heights, texts = [], [], []
            for i, policy in enumerate(policies):
                cell = cells.get((policy, tier))
                if cell is None:
                    continue
                xs.append(i - 0.4 + width * (j + 0.5))
                heights.append(cell[key])
                texts.append(f"{fmt.format(cell[key])}\nn={cell['n']}")
            # A zero bar has no area, so it is drawn as a thin stub: noop at 0 % must not look missing.
            stub = 0.015 if key == "solve_rate" else 0.03
            shown = [h if abs(h) >= stub else stub for h in heights]
            bars = ax.bar(
                xs,
                shown,
                width * 0.92,
                label=f"tier {tier}",
                color=colors[j % 10],
                edgecolor="black",
                linewidth=0.8,
            )
            ax.bar_label(bars, labels=texts, padding=2, fontsize=7, linespacing=0.9)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(policies)), policies)
        ax.set_ylabel(label)
        ax.margins(y=0.25)
        if key == "solve_rate":
            ax.set_ylim(0, 1.3)
            ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].set_title(f"hpcgym leaderboard: {len(records)} episodes (n per bar; 0 drawn as a stub)")
    axes[0].legend(title="scenario tier", loc="upper right", fontsize="small", ncol=len(tiers))
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)


def plot_cells(records: Sequence[EpisodeRecord]) -> dict[tuple[str, int], dict[str, float]]:
    """(policy, tier) -> solve rate, mean reward and n: what each bar of the leaderboard plot shows."""
    groups: dict[tuple[str, int], list[EpisodeRecord]] = {}
    for record in records:
        groups.setdefault((record.policy, record.tier), []).append(record)
    return {
        key: {
            "solve_rate": sum(r.solved for r in group) / len(group),
            "mean_reward": sum(r.total_reward for r in group) / len(group),
            "n": len(group),
        }
        for key, group in groups.items()
    }


def write_report(
    records: Sequence[EpisodeRecord], out_dir: Path, json_path: Path | None = None
) -> dict[str, Path]:
    """Write leaderboard.md, leaderboard.png, transcripts.jsonl and results.json, and `json_path` too."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "markdown": out_dir / "leaderboard.md",
        "plot": out_dir / "leaderboard.png",
        "transcripts": out_dir / "transcripts.jsonl",
        "results": out_dir / "results.json",
    }
    if json_path is not None and json_path.resolve() != paths["results"].resolve():
        paths["json"] = json_path
    paths["markdown"].write_text(leaderboard_markdown(records))
    plot_leaderboard(records, paths["plot"])
    with paths["transcripts"].open("w") as f:
        for record in records:
            f.write(json.dumps(asdict(record)) + "\n")
    summary = [
        {"policy": policy, "scenario": scenario, **row}
        for (policy, scenario), row in summarize(records).items()
    ]
    for key in ("results", "json"):
        if key in paths:
            paths[key].parent.mkdir(parents=True, exist_ok=True)
            paths[key].write_text(json.dumps(summary, indent=2) + "\n")
    return paths


def load_transcripts(path: Path) -> list[EpisodeRecord]:
    """Read records back from transcripts.jsonl."""
    records = []
    for line in path.read_text().splitlines():
        data: dict[str, Any] = json.loads(line)
        data["transcript"] = [StepRecord(**step) for step in data["transcript"]]
        records.append(EpisodeRecord(**data))
    return records


def render_transcript(record: EpisodeRecord, *, max_output_lines: int = 25) -> str:
    """One episode as a terminal session with the grader's notes in the margin."""
    head = (
        f"=== {record.scenario} (tier {record.tier}) · seed {record.seed} · policy {record.policy} ===\n"
        f"ALERT: {record.alert.strip()}\n"
    )
    body = []
    for number, step in enumerate(record.transcript, start=1):
        lines = step.output.rstrip("\n").splitlines()
        if len(lines) > max_output_lines:
            hidden = len(lines) - max_output_lines
            lines = [
                *lines[: max_output_lines // 2],
                f"... ({hidden} lines) ...",
                *lines[-max_output_lines // 2 :],
            ]
        notes = f"  [step {number} · reward {step.reward:+.3f}"
        notes += f" · exit {step.exit_code}" if step.exit_code else ""
        notes += f" · UNSAFE: {', '.join(step.unsafe)}" if step.unsafe else ""
        body.append(
            f"[root@{step.node} ~]# {step.command}\n" + "".join(f"{line}\n" for line in lines) + notes + "]\n"
        )
    components = ", ".join(f"{k} {v:+.3f}" for k, v in record.components.items() if v)
    tail = (
        f"=== outcome: {record.outcome.upper()} · steps {record.steps} · return {record.total_reward:+.3f}"
        f" ({components}){' · unsafe: ' + '; '.join(record.unsafe) if record.unsafe else ''} ===\n"
    )
    return head + "\n".join(body) + tail


# ---- what `invoke gold` / `invoke eval` / `invoke transcripts` call -----------------------------------


def parse_seeds(spec: str) -> list[int] | int:
    """`"3"` -> 3 (that many seeds from each scenario's test range); `"800-804"` or `"1,5,9"` -> those."""
    spec = spec.strip()
    if spec.isdigit():
        return int(spec)
    seeds: list[int] = []
    for part in spec.split(","):
        low, sep, high = part.partition("-")
        try:
            seeds += list(range(int(low), int(high) + 1)) if sep else [int(low)]
        except ValueError:
            raise ScenarioError(f"bad seed list {spec!r}", hint="write 3, 800-804 or 1,5,9") from None
    return seeds


def _grid_seeds(scenarios: Sequence[str], seeds: list[int] | int, split: str) -> dict[str, list[int]]:
    from hpcgym.scenarios.schema import load_scenario

    if isinstance(seeds, list):
        return {scenario: seeds for scenario in scenarios}
    grid = {}
    for scenario in scenarios:
        low, high = getattr(load_scenario(scenario).seeds, split)
        grid[scenario] = list(range(low, min(high, low + seeds)))
    return grid


def resolve_scenarios(names: Sequence[str] | None, *, lite: bool = False) -> list[str]:
    """The scenario ids to run: the given ones (validated), the lite set, or the whole library."""
    from hpcgym.scenarios.schema import lite_ids, load_scenario, scenario_ids

    if names:
        for name in names:
            load_scenario(name)
        return list(names)
    return lite_ids() if lite else scenario_ids()


def run_gold(
    images_dir: Path,
    scenarios: Sequence[str] | None = None,
    *,
    seeds: str = "3",
    lite: bool = False,
    difficulty: str | None = None,
) -> str:
    """`invoke gold`: gold on every scenario x seed through the agent's real shell; full reward or raise.

    Returns:
        A one-line summary.

    Raises:
        ScenarioError: a gold run was not solved with full reward.
    """
    knobs = Difficulty.parse(difficulty)
    ids = resolve_scenarios(scenarios, lite=lite)
    grid = _grid_seeds(ids, parse_seeds(seeds), "test")
    with Runtime(images_dir) as runtime:
        records = check_gold(
            runtime, [(scenario, seed) for scenario in ids for seed in grid[scenario]], difficulty=knobs
        )
    at = "" if knobs.is_default else f" at {knobs.spec()}"
    return f"gold: {len(records)} episodes over {len(ids)} scenarios{at}, all solved with full reward"


def run_eval(
    images_dir: Path,
    out_dir: Path,
    *,
    policies: Sequence[str] = DEFAULT_EVAL_POLICIES,
    scenarios: Sequence[str] | None = None,
    seeds: str = "3",
    lite: bool = False,
    json_path: Path | None = None,
    llm: LlmOptions = LlmOptions(),
    workers: int = 1,
    difficulty: str | None = None,
) -> dict[str, Path]:
    """`invoke eval`: every policy on every scenario x seed; write the leaderboard, plot and transcripts.

    `policies` may name groups (`cheats`: blind and every cheat-* script), expanded in order.
    """
    policies = expand_policy_names(policies)
    if "llm" in policies:
        # Its options are checked before the runtime starts and the progress bar is drawn.
        make_policy("llm", base_url=llm.base_url, model=llm.model, api_key=llm.api_key)
    knobs = Difficulty.parse(difficulty)
    ids = resolve_scenarios(scenarios, lite=lite)
    grid = _grid_seeds(ids, parse_seeds(seeds), "test")
    plays = [(policy, scenario, seed) for policy in policies for scenario in ids for seed in grid[scenario]]
    with Runtime(images_dir) as runtime:
        records = evaluate_grid(runtime, plays, llm=llm, progress=True, workers=workers, difficulty=knobs)
    return write_report(records, out_dir, json_path)


def choose_transcripts(
    path: Path, *, scenario: str | None = None, policy: str | None = None, failed_only: bool = False
) -> list[EpisodeRecord]:
    """The matching episodes of a transcripts.jsonl, for `invoke transcripts` to show or replay.

    Raises:
        ConfigError: no such file, not one `invoke eval` wrote, or a scenario or policy it never
            recorded (the hint names what it did record).
    """
    if not path.is_file():
        raise ConfigError(
            f"no transcripts at {path}",
            hint="run `invoke eval` first (it writes build/eval/transcripts.jsonl), or pass --path",
        )
    try:
        records = load_transcripts(path)
    except (ValueError, TypeError, KeyError, OSError) as e:
        raise ConfigError(
            f"{path} is not a transcripts.jsonl from invoke eval ({type(e).__name__}: {e})",
            hint="pass the transcripts.jsonl that `invoke eval` wrote (in its --report-dir)",
        ) from None
    for flag, wanted, recorded in (
        ("--scenario", scenario, [r.scenario for r in records]),
        ("--policy", policy, [r.policy for r in records]),
    ):
        if wanted and wanted not in recorded:
            known = ", ".join(dict.fromkeys(recorded)) or "none"
            raise ConfigError(f"{flag} {wanted!r}: no such episode in {path}", hint=f"recorded: {known}")
    return [
        record
        for record in records
        if (not scenario or record.scenario == scenario)
        and (not policy or record.policy == policy)
        and not (failed_only and record.solved)
    ]


def show_transcripts(
    path: Path, *, scenario: str | None = None, policy: str | None = None, failed_only: bool = False
) -> str:
    """`invoke transcripts`: render the matching episodes of a transcripts.jsonl."""
    chosen = choose_transcripts(path, scenario=scenario, policy=policy, failed_only=failed_only)
    return "\n".join(render_transcript(record) for record in chosen)
