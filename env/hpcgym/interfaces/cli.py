"""The `hpcgym` command line: a debugging window onto one episode.

`hpcgym exec -- CMD [CMD ...]` types each CMD as one agent step into one fresh episode and prints what
the agent would see. `hpcgym exec --scenario ID [--seed N] -- CMD ...` does that in an incident: it
prints the alert, types the commands through the same episode loop as `invoke eval`, gymnasium,
OpenEnv and TRL (`hpcgym.scenarios.incident.Incident`), and ends with the grade. Library errors
become exit codes here and nowhere else.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hpcgym.errors import ConfigError, HpcgymError
from hpcgym.interfaces import default_images_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpcgym", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "exec",
        help="run commands as agent steps in one fresh episode",
        description="Run each CMD as one agent step in one fresh episode; print each output and exit code.",
    )
    run.add_argument(
        "--images",
        type=Path,
        default=None,
        help=f"built images (default $HPCGYM_IMAGES or the checkout's build/images: {default_images_dir()})",
    )
    source = run.add_mutually_exclusive_group()
    source.add_argument("--slurm-conf", type=Path, help="a slurm.conf for the cluster instead of the image's")
    source.add_argument(
        "--scenario", help="play this incident (a scenario id, as `invoke eval --scenarios` takes it)"
    )
    run.add_argument(
        "--seed",
        type=int,
        help="the episode's seed, as gym's reset(seed=N) and `invoke eval` take it "
        "(default: the scenario's first test seed, 800)",
    )
    run.add_argument(
        "--difficulty",
        help="with --scenario, the knobs: red_herrings=0-3,chained=0-2,clue=shallow|normal|deep "
        "(default: the scenario as written)",
    )
    run.add_argument("--node", help="start the session on this node instead of the login node")
    run.add_argument(
        "--step-seconds", type=int, default=5, help="virtual seconds per step (default: %(default)s)"
    )
    run.add_argument("--timeout", type=float, default=30.0, help="seconds per command (default: %(default)s)")
    run.add_argument(
        "--json",
        action="store_true",
        help="print JSON: a list of {command, output, exit_code}; with --scenario, an object with the "
        "alert, those steps (each with its reward) and the grade",
    )
    run.add_argument("commands", nargs="*", metavar="CMD", help="command lines, one agent step each")
    return parser


def exec_commands(args: argparse.Namespace) -> int:
    from hpcgym.episode import Episode
    from hpcgym.runtime import Runtime

    if args.scenario is not None:
        return play_incident(args)
    if args.difficulty:
        raise HpcgymError("--difficulty needs --scenario", hint="difficulty knobs apply to library scenarios")
    if not args.commands:
        raise HpcgymError("no command to run", hint="name at least one CMD, or an incident with --scenario")
    conf_text = read_slurm_conf(args.slurm_conf) if args.slurm_conf else None
    records = []
    with (
        Runtime(args.images) as runtime,
        Episode(
            runtime, step_seconds=args.step_seconds, timeout_s=args.timeout, slurm_conf_text=conf_text
        ) as episode,
    ):
        if args.node and args.node != episode.current_node:
            moved = episode.step(f"ssh {args.node}")
            if moved.exit_code != 0:
                sys.stderr.write(moved.output)
                return moved.exit_code
        for command in args.commands:
            node = episode.current_node
            result = episode.step(command)
            records.append({"command": command, "output": result.output, "exit_code": result.exit_code})
            if not args.json:
                sys.stdout.write(f"[root@{node} ~]# {command}\n{result.output}")
                if result.exit_code != 0:
                    sys.stdout.write(f"(exit {result.exit_code})\n")
            if result.ended:
                break
    if args.json:
        json.dump(records, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


def read_slurm_conf(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"cannot read --slurm-conf {path}: {getattr(e, 'strerror', None) or e}",
            hint="give the path of a readable slurm.conf, e.g. images/common/files/etc/slurm/slurm.conf",
        ) from None


def play_incident(args: argparse.Namespace) -> int:
    from hpcgym.interfaces.task import default_registry
    from hpcgym.runtime import Runtime
    from hpcgym.scenarios.difficulty import Difficulty
    from hpcgym.scenarios.incident import Incident, ScenarioTask
    from hpcgym.scenarios.schema import Seeds

    if args.node:
        raise HpcgymError("--node does not apply to an incident", hint="type `ssh NODE` as the first CMD")
    task = default_registry().make(args.scenario)
    seeds = task.scenario.seeds if isinstance(task, ScenarioTask) else Seeds()
    seed = args.seed if args.seed is not None else seeds.test[0]
    knobs = Difficulty.parse(args.difficulty) if args.difficulty else None
    steps: list[dict[str, object]] = []
    with (
        Runtime(args.images) as runtime,
        Incident(
            runtime, task, seed, step_seconds=args.step_seconds, timeout_s=args.timeout, difficulty=knobs
        ) as incident,
    ):
        if not args.json:
            sys.stdout.write(f"{incident.alert.rstrip()}\n\n")
        for command in args.commands:
            if incident.done:
                sys.stdout.flush()
                sys.stderr.write(f"hpcgym: the episode is over; {command!r} and the rest were not typed\n")
                break
            node = incident.episode.current_node
            step = incident.step(command)
            result = step.result
            steps.append(
                {
                    "command": command,
                    "output": result.output,
                    "exit_code": result.exit_code,
                    "reward": step.reward,
                }
            )
            if not args.json:
                sys.stdout.write(f"[root@{node} ~]# {command}\n{result.output}")
                if result.exit_code != 0:
                    sys.stdout.write(f"(exit {result.exit_code})\n")
        info = incident.info()
        grade = {
            "solved": info["solved"],
            "outcome": info["outcome"],
            "reward": info["return"],
            "steps": info["step"],
            "components": info["reward_components"],
            "unsafe": info["unsafe"],
        }
        if args.json:
            record = {
                "scenario": info["scenario"],
                "seed": seed,
                "difficulty": info["difficulty"],
                "alert": incident.alert,
                "steps": steps,
            }
            json.dump({**record, "grade": grade}, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write(render_grade(info))
    return 0


def render_grade(info: dict[str, Any]) -> str:
    """The closing lines of `hpcgym exec --scenario`: solved or not, the reward and its components."""
    from hpcgym.scenarios.incident import TOTAL_KEYS

    verdict = "solved" if info["solved"] else f"not solved ({info['outcome']})"
    lines = [
        f"\n== {info['scenario']} seed {info['seed']}: {verdict}, "
        f"reward {info['return']:+.3f} after {info['step']} steps",
    ]
    components = ", ".join(
        f"{name} {value:+.3f}" for name, value in info["reward_components"].items() if name not in TOTAL_KEYS
    )
    if components:
        lines.append(f"   components: {components}")
    if info["unsafe"]:
        lines.append(f"   unsafe: {'; '.join(info['unsafe'])}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hpcgym` console script."""
    args = build_parser().parse_args(argv)
    if args.images is None:
        args.images = default_images_dir()
    try:
        return exec_commands(args)
    except HpcgymError as e:
        sys.stderr.write(f"hpcgym: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
