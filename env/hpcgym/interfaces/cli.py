"""The `hpcgym` command line: a debugging window onto one episode.

`hpcgym exec -- CMD [CMD ...]` types each CMD as one agent step into one fresh episode and prints what
the agent would see. Library errors become exit codes here and nowhere else.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hpcgym.errors import HpcgymError

DEFAULT_IMAGES = Path(os.environ.get("HPCGYM_IMAGES", "build/images"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hpcgym", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "exec",
        help="run commands as agent steps in one fresh episode",
        description="Run each CMD as one agent step in one fresh episode; print each output and exit code.",
    )
    run.add_argument(
        "--images", type=Path, default=DEFAULT_IMAGES, help="built images (default: %(default)s)"
    )
    source = run.add_mutually_exclusive_group()
    source.add_argument("--slurm-conf", type=Path, help="a slurm.conf for the cluster instead of the image's")
    source.add_argument("--scenario", help="an incident scenario id (see the scenarios issue)")
    run.add_argument("--seed", type=int, default=0, help="scenario seed (default: %(default)s)")
    run.add_argument("--node", help="start the session on this node instead of the login node")
    run.add_argument(
        "--step-seconds", type=int, default=5, help="virtual seconds per step (default: %(default)s)"
    )
    run.add_argument("--timeout", type=float, default=30.0, help="seconds per command (default: %(default)s)")
    run.add_argument("--json", action="store_true", help="print a JSON list of {command, output, exit_code}")
    run.add_argument("commands", nargs="+", metavar="CMD", help="command lines, one agent step each")
    return parser


def exec_commands(args: argparse.Namespace) -> int:
    from hpcgym.episode import Episode
    from hpcgym.runtime import Runtime

    if args.scenario is not None:
        raise HpcgymError("no scenario library yet", hint="use --slurm-conf FILE or the image's own cluster")
    conf_text = args.slurm_conf.read_text() if args.slurm_conf else None
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hpcgym` console script."""
    args = build_parser().parse_args(argv)
    try:
        return exec_commands(args)
    except HpcgymError as e:
        sys.stderr.write(f"hpcgym: error: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
