"""Re-typing recorded episodes through an entry point, to show an episode is the same everywhere.

A record of `invoke eval` (transcripts.jsonl) names a scenario, a seed and the commands typed, with
what each printed (`digest`: the sha256 of the whole output), its exit status and its reward. A
replay plays the same commands on a fresh cluster through one entry point: the one loop as `invoke
eval` drives it (`eval`), gymnasium's `EnterpriseHPC-v0` (`gym`), an OpenEnv server over its
WebSocket (`openenv`: the one at `url`, or one started in this process) or the `hpcgym exec
--scenario` command (`exec`, a child process), and reports every place where what the agent would
have seen differs. `invoke transcripts --replay FILE` is the command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpcgym.errors import HpcgymError
from hpcgym.runtime import Runtime
from hpcgym.scenarios.evaluate import EpisodeRecord
from hpcgym.scenarios.incident import Incident, first_observation

VIAS = ("eval", "gym", "openenv", "exec")


@dataclass(frozen=True)
class Seen:
    """What one step showed the agent, and what it earned."""

    output: str
    exit_code: int
    reward: float


@dataclass(frozen=True)
class Played:
    """An episode as one entry point played it: the first observation, then each step."""

    first: str
    steps: list[Seen]


@dataclass
class Replayed:
    """One record replayed through one entry point, and where it differed."""

    policy: str
    scenario: str
    seed: int
    via: str
    steps: int
    differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


# (scenario, seed, commands) -> what the entry point showed.
Player = Callable[[str, int, Sequence[str]], Played]


def compare(record: EpisodeRecord, played: Played, via: str) -> Replayed:
    """Where `played` differs from `record`: the first observation, each step's bytes, status, reward."""
    result = Replayed(record.policy, record.scenario, record.seed, via, len(record.transcript))
    if played.first != first_observation(record.alert):
        result.differences.append("the first observation (alert and prompt) differs")
    if len(played.steps) != len(record.transcript):
        result.differences.append(f"{len(played.steps)} steps played, {len(record.transcript)} recorded")
    for number, (want, got) in enumerate(zip(record.transcript, played.steps, strict=False), start=1):
        same_bytes = (
            hashlib.sha256(got.output.encode()).hexdigest() == want.digest
            if want.digest
            else got.output.endswith(want.output)
        )
        if not same_bytes:
            result.differences.append(f"step {number} ({want.command!r}): the output differs")
        if got.exit_code != want.exit_code:
            result.differences.append(
                f"step {number}: exit status {got.exit_code}, recorded {want.exit_code}"
            )
        if got.reward != want.reward:
            result.differences.append(f"step {number}: reward {got.reward!r}, recorded {want.reward!r}")
    return result


def incident_player(runtime: Runtime) -> Player:
    """The one loop, as `invoke eval` drives it."""

    def play(scenario: str, seed: int, commands: Sequence[str]) -> Played:
        with Incident(runtime, scenario, seed) as incident:
            first, steps = incident.first_observation, []
            for command in commands:
                if incident.done:
                    break
                step = incident.step(command)
                steps.append(Seen(step.result.output, step.result.exit_code, step.reward))
            return Played(first, steps)

    return play


@contextlib.contextmanager
def gym_player(runtime: Runtime) -> Iterator[Player]:
    """Gymnasium's `EnterpriseHPC-v0`, one env for every record."""
    import gymnasium

    import hpcgym  # noqa: F401 - registers EnterpriseHPC-v0

    env = gymnasium.make("EnterpriseHPC-v0", runtime=runtime, pool_size=0)

    def play(scenario: str, seed: int, commands: Sequence[str]) -> Played:
        first, _ = env.reset(seed=seed, options={"scenario": scenario})
        steps = []
        for command in commands:
            output, reward, terminated, truncated, info = env.step(command)
            steps.append(Seen(str(output), int(info["exit_code"]), float(reward)))
            if terminated or truncated:
                break
        return Played(str(first), steps)

    try:
        yield play
    finally:
        env.close()


@contextlib.contextmanager
def openenv_player(runtime: Runtime, url: str | None = None, api_key: str | None = None) -> Iterator[Player]:
    """An OpenEnv session over the WebSocket: the server at `url`, else one started here."""
    from hpcgym.interfaces.openenv.client import HpcEnvClient
    from hpcgym.interfaces.openenv.models import HpcAction
    from hpcgym.interfaces.openenv.server.app import ServerSettings, build_app
    from hpcgym.interfaces.openenv.server.local import serve

    with contextlib.ExitStack() as stack:
        if url is None:
            settings = ServerSettings(max_sessions=2, pool_size=0, api_key=None)
            url = stack.enter_context(serve(build_app(settings, runtime=runtime)))
            api_key = ""
        client = HpcEnvClient(url, api_key=api_key).sync()
        client.connect()
        stack.callback(client.close)

        def play(scenario: str, seed: int, commands: Sequence[str]) -> Played:
            start = client.reset(seed=seed, scenario=scenario)
            steps = []
            for command in commands:
                result = client.step(HpcAction(command=command))
                seen = result.observation
                steps.append(Seen(seen.output, seen.exit_code, float(result.reward or 0.0)))
                if result.done:
                    break
            return Played(start.observation.output, steps)

        yield play


def exec_player(images: Path) -> Player:
    """`hpcgym exec --scenario ID --seed N --json -- COMMANDS...` in a child process."""

    def play(scenario: str, seed: int, commands: Sequence[str]) -> Played:
        argv = [sys.executable, "-m", "hpcgym.interfaces.cli", "exec", "--images", str(images)]
        argv += ["--scenario", scenario, "--seed", str(seed), "--json", "--", *commands]
        done = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy(), check=False)
        if done.returncode != 0:
            raise HpcgymError(f"hpcgym exec failed: {done.stderr.strip().splitlines()[-1:]}")
        record = json.loads(done.stdout)
        steps = [Seen(s["output"], int(s["exit_code"]), float(s["reward"])) for s in record["steps"]]
        return Played(first_observation(record["alert"]), steps)

    return play


def replay(
    records: Sequence[EpisodeRecord],
    vias: Sequence[str],
    images: Path,
    *,
    url: str | None = None,
    api_key: str | None = None,
) -> list[Replayed]:
    """Every record through every entry point of `vias`, each on a fresh cluster.

    Raises:
        HpcgymError: an unknown entry point, or one that could not be started.
    """
    unknown = [via for via in vias if via not in VIAS]
    if unknown:
        raise HpcgymError(f"no entry point {unknown[0]!r}", hint=f"choose from {', '.join(VIAS)}")
    results = []
    with Runtime(images) as runtime, contextlib.ExitStack() as stack:
        players: dict[str, Player] = {}
        for via in vias:
            if via == "eval":
                players[via] = incident_player(runtime)
            elif via == "gym":
                players[via] = stack.enter_context(gym_player(runtime))
            elif via == "openenv":
                players[via] = stack.enter_context(openenv_player(runtime, url, api_key))
            else:
                players[via] = exec_player(images)
        for record in records:
            commands = [step.command for step in record.transcript]
            for via, play in players.items():
                results.append(compare(record, play(record.scenario, record.seed, commands), via))
    return results


def render(results: Sequence[Replayed]) -> str:
    """A markdown table, one row per record and entry point, then every difference."""
    lines = ["| policy | scenario | seed | via | steps | identical |", "|---|---|---|---|---|---|"]
    lines += [
        f"| {r.policy} | {r.scenario} | {r.seed} | {r.via} | {r.steps} | {'yes' if r.identical else 'NO'} |"
        for r in results
    ]
    same = sum(r.identical for r in results)
    lines += ["", f"{same} of {len(results)} replays byte-identical."]
    for r in results:
        lines += [f"- {r.policy} {r.scenario} seed {r.seed} via {r.via}: {d}" for d in r.differences]
    return "\n".join(lines) + "\n"
