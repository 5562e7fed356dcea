"""Invoke tasks: each parses its flags and calls one hpcgym function.

`invoke --list` shows them; `invoke --help TASK` shows a task's flags.
"""

from __future__ import annotations

import json as json_module
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "env"))  # so `invoke` works even before `pip install -e .`

DEFAULT_STORE = REPO / ".hpcgym" / "store"
DEFAULT_OUT = REPO / "build" / "images"


def _console():  # type: ignore[no-untyped-def]
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@task(
    help={
        "backend": "builder: buildah (default) or docker (needs a running Docker engine)",
        "no_cache": "rebuild every step, base included, even when the store has it",
        "only": "build just this role: rocky-login or rocky-compute",
        "out": "where DIR/<role>/rootfs.tar.zst and manifest.json go "
        f"(default {DEFAULT_OUT.relative_to(REPO)})",
        "store": f"the content-addressed store (default {DEFAULT_STORE.relative_to(REPO)})",
        "base": "mmdebstrap (default), tarball:/path/rootfs.tar, or oci:REF@sha256:DIGEST",
        "mirror": "an apt source line for mmdebstrap, e.g. 'deb http://deb.debian.org/debian bookworm main' "
        "(repeat for several; default: Debian's bookworm, -updates and -security)",
    },
    iterable=["mirror"],
)
def build_images(
    c: Context,
    backend: str = "buildah",
    no_cache: bool = False,
    only: str = "",
    out: str = "",
    store: str = "",
    base: str = "mmdebstrap",
    mirror: list[str] | None = None,
) -> None:
    """Build the rocky-login and rocky-compute root filesystem images, reproducibly.

    A rebuild with unchanged inputs only looks up the store. Prints each step's time and a summary table.
    """
    from rich.table import Table

    from hpcgym.errors import HpcgymError
    from hpcgym.imagebuild import BaseSpec, BuildBackend, BuildOptions, Reporter, Role, build_images

    console = _console()
    try:
        options = BuildOptions(
            repo_root=REPO,
            store_dir=Path(store or DEFAULT_STORE).resolve(),
            out_dir=Path(out or DEFAULT_OUT).resolve(),
            backend=_choice(BuildBackend, backend, "--backend"),
            roles=(_choice(Role, only, "--only"),) if only else tuple(Role),
            base=BaseSpec.parse(base, tuple(mirror or ())),
            no_cache=no_cache,
            source_date_epoch=int(os.environ.get("SOURCE_DATE_EPOCH", BuildOptions.source_date_epoch)),
        )
        console.print(f"[bold]build-images[/] backend={options.backend} base={options.base.kind}")
        results = build_images(options, Reporter(console))
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None
    except KeyboardInterrupt:
        raise Exit("interrupted: the store keeps only whole entries; run the build again", code=130) from None

    table = Table(title=f"images in {options.out_dir}")
    for column in ("role", "digest", "tar", "zstd", "entries", "cache", "time"):
        table.add_column(
            column, justify="right" if column in ("tar", "zstd", "entries", "time") else "left", no_wrap=True
        )
    for result in results:
        manifest = result.manifest
        table.add_row(
            str(result.role),
            manifest["digest"][:12],
            f"{manifest['tar_bytes'] / 1e6:.1f} MB",
            f"{manifest['artifact_bytes'] / 1e6:.1f} MB",
            str(manifest["entries"]),
            "[green]hit[/]" if result.cache_hit else "[yellow]built[/]",
            f"{result.seconds:.1f} s",
        )
    _console().print(table)


@task(help={"images": f"the images to check (default {DEFAULT_OUT.relative_to(REPO)})"})
def test_images(c: Context, images: str = "") -> None:
    """Run the testinfra invariants against the built images (each unpacked in a bwrap sandbox)."""
    images_dir = _images(images)
    c.run(f"{sys.executable} -m pytest tests/images -q", env={"HPCGYM_IMAGES": str(images_dir)}, pty=False)


@task(
    help={
        "pytest_args": "extra arguments for pytest, e.g. '-k munge -x'",
        "skip_build": "do not run build-images first (the suite needs built images)",
    }
)
def test(c: Context, pytest_args: str = "", skip_build: bool = False) -> None:
    """Run the whole test suite: build (or find) the images, then pytest over tests/."""
    if not skip_build:
        build_images(c)
    c.run(f"{sys.executable} -m pytest {pytest_args}", pty=False)


@task(
    help={
        "json": "also write the figures to this JSON file",
        "images": f"the images to run (default {DEFAULT_OUT.relative_to(REPO)})",
        "quick": "fewer samples and 64 idle episodes instead of 256 (a smoke run)",
        "density": "full episodes to hold alive at once (default 1000, --quick 16; 0 skips)",
        "sessions": "sessions stepping at once, in-process and over the WebSocket (default 1,8,64,256)",
    }
)
def bench(
    c: Context, json: str = "", images: str = "", quick: bool = False, density: int = -1, sessions: str = ""
) -> None:
    """Measure resets, steps, idle capacity, the controller and OpenEnv load, beside a copy-mode baseline.

    The Python and the native tool client run side by side on the same episodes (steps, steps/s, boot,
    density). Needs root and the built images. Prints markdown tables; every figure is also a ratio.
    """
    from rich.console import Console

    from hpcgym.bench import check_targets, print_targets, run_bench, run_loadtest
    from hpcgym.errors import HpcgymError

    images_dir = _images(images)
    concurrencies = (
        tuple(int(n) for n in sessions.split(",")) if sessions else ((1, 8) if quick else (1, 8, 64, 256))
    )
    clients: dict[str, Any] = {
        "client_steps": 30 if quick else 100,
        "client_concurrencies": concurrencies,
        "density": density if density >= 0 else (16 if quick else 1000),
    }
    console = _console()
    loads = {}
    try:
        if quick:
            figures = run_bench(images_dir, None, resets=10, steps=60, idle=64, **clients)
        else:
            figures = run_bench(images_dir, None, **clients)
        # Sessions over the OpenEnv server's WebSocket, all at once, as trainers hold them: the mix
        # of commands an agent types, then `sinfo` alone at each number of sessions.
        load = run_loadtest(images_dir, sessions=8 if quick else 64, steps=20 if quick else 100)
        console.print("mixed commands: " + load.summary())
        for n in concurrencies:
            loads[n] = run_loadtest(images_dir, sessions=n, steps=20 if quick else 100, commands=("sinfo",))
            console.print("`sinfo` only: " + loads[n].summary())
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None
    targets = check_targets(figures, loads)
    print_targets(Console(width=160), targets)
    if json:
        figures["websocket"] = {"mixed": asdict(load), "sinfo": {n: asdict(r) for n, r in loads.items()}}
        figures["targets"] = [{**asdict(t), "met": t.met} for t in targets]
        Path(json).write_text(json_module.dumps(figures, indent=2) + "\n")
    if load.errors or any(r.errors for r in loads.values()):
        raise Exit("error: some load-test sessions failed", code=1)


@task(
    help={
        "sessions": "simultaneous resets, each its own session (default 256)",
        "json": "also write the figures to this JSON file",
        "images": f"the built images (default {DEFAULT_OUT.relative_to(REPO)})",
    }
)
def burst(c: Context, sessions: int = 256, json: str = "", images: str = "") -> None:
    """Send `sessions` resets to a fresh OpenEnv server at once: queued in order, none timing out.

    Reports reset latency p50/p99 and how far the answers strayed from the order sent; every session
    then steps once. Exits 1 if any reset or step failed.
    """
    import dataclasses
    import json as jsonlib

    from hpcgym.bench import run_bursttest
    from hpcgym.errors import HpcgymError

    if sessions < 1:
        raise Exit("error: --sessions must be at least 1", code=2)
    try:
        report = run_bursttest(_images(images), sessions)
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None
    _console().print(report.summary())
    out = _json(json)
    if out is not None:
        out.write_text(jsonlib.dumps(dataclasses.asdict(report), indent=2, sort_keys=True) + "\n")
    if report.errors:
        raise Exit(f"error: {report.errors} of {sessions} sessions failed", code=1)


@task(
    help={
        "episodes": "how many episodes to run (default 200)",
        "sessions": "sessions open at once (default 4)",
        "out": "where soak.json, soak.md and server.log go (default build/soak)",
        "images": f"the built images (default {DEFAULT_OUT.relative_to(REPO)})",
        "rss_every": "sample the server's RSS every this many episodes (default 1000)",
    }
)
def soak(
    c: Context, episodes: int = 200, sessions: int = 4, out: str = "", images: str = "", rss_every: int = 1000
) -> None:
    """Run many short episodes through a real OpenEnv server, then check the host for anything left.

    Mixed scenarios and policies (gold, noop, random, destructive, red-team cheats), several sessions at
    once. Counts mounts (host table and every mount namespace), processes, cgroups, /dev/shm dirs, and
    the server's descriptors, threads and unix sockets before and after, and after the server exits;
    fits the server's RSS over episodes. Exits 1 on any leak or failed episode.
    """
    from hpcgym.errors import HpcgymError
    from hpcgym.soak import Plan, run_soak

    if episodes < 1 or sessions < 1 or rss_every < 1:
        raise Exit("error: --episodes, --sessions and --rss-every must be at least 1", code=2)
    out_dir = Path(out) if out else REPO / "build" / "soak"
    try:
        report = run_soak(_images(images), Plan(episodes, sessions, rss_every=rss_every), out_dir)
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None
    _console().print(report.markdown())
    if not report.ok:
        raise Exit(
            f"error: {len(report.leaks)} leaks, {report.errors} failed episodes (see {out_dir})", code=1
        )


@task(help={"all": "also remove the store (every cached base and image)"})
def clean(c: Context, all: bool = False) -> None:
    """Remove built images from build/ (and with --all the store), and the builders' hpcgym images."""
    shutil.rmtree(DEFAULT_OUT, ignore_errors=True)
    if all:
        shutil.rmtree(DEFAULT_STORE, ignore_errors=True)
    if shutil.which("buildah"):
        c.run(
            "buildah images --format '{{.Name}}:{{.Tag}}' | grep hpcgym- | xargs -r buildah rmi -f",
            warn=True,
            hide=True,
        )
    if shutil.which("docker"):
        c.run("docker images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null"
              " | grep hpcgym- | xargs -r docker rmi -f", warn=True, hide=True)  # fmt: skip


@task(
    help={
        "scenarios": "scenario ids, comma-separated (default: the whole library)",
        "seeds": "N seeds from each scenario's test range (default 3), or a list: 800-804 / 1,5,9",
        "lite": "only the lite set (the quick CI check)",
        "images": f"the images to run (default {DEFAULT_OUT.relative_to(REPO)})",
        "difficulty": "the knobs, e.g. red_herrings=2,chained=1,clue=deep (default: as each file is written)",
    }
)
def gold(
    c: Context,
    scenarios: str = "",
    seeds: str = "3",
    lite: bool = False,
    images: str = "",
    difficulty: str = "",
) -> None:
    """Type every scenario's gold commands into the agent's real shell; fail unless all earn full reward."""
    from hpcgym.errors import HpcgymError
    from hpcgym.scenarios.evaluate import run_gold

    try:
        summary = run_gold(
            _images(images), _ids(scenarios), seeds=seeds, lite=lite, difficulty=difficulty or None
        )
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None
    _console().print(summary)


@task(
    help={
        "policies": "comma-separated: gold,noop,random,destructive,expert,blind,llm, any cheat-* name, or"
        " the group cheats (blind and every cheat-* script); default: all but llm and the cheat-* scripts",
        "scenarios": "scenario ids, comma-separated (default: the whole library)",
        "seeds": "N seeds from each scenario's test range (default 3), or a list: 800-804 / 1,5,9",
        "lite": "only the lite set",
        "json": "also write the summary to this JSON file (results.json in the report dir is written too)",
        "report_dir": "where leaderboard.md, leaderboard.png, results.json and transcripts.jsonl go "
        "(default build/eval)",
        "base_url": "the llm policy's OpenAI-compatible endpoint, e.g. http://localhost:8000/v1",
        "model": "the llm policy's model name",
        "api_key": "the llm policy's key (default: $OPENAI_API_KEY or EMPTY)",
        "images": f"the images to run (default {DEFAULT_OUT.relative_to(REPO)})",
        "workers": "episodes played at once (default 1; each is the same bytes however many run)",
        "difficulty": "the knobs, e.g. red_herrings=2,chained=1,clue=deep (default: as each file is written)",
    }
)
def eval(  # `invoke eval` is what users type, so it shadows the builtin here
    c: Context,
    policies: str = "gold,noop,random,destructive,expert,blind",
    scenarios: str = "",
    seeds: str = "3",
    lite: bool = False,
    json: str = "",
    report_dir: str = "",
    base_url: str = "",
    model: str = "",
    api_key: str = "",
    images: str = "",
    workers: int = 1,
    difficulty: str = "",
) -> None:
    """Play policies on scenarios x seeds; write a markdown leaderboard, a PNG plot and JSONL transcripts."""
    from hpcgym.errors import HpcgymError
    from hpcgym.scenarios.evaluate import LlmOptions, run_eval

    try:
        paths = run_eval(
            _images(images),
            Path(report_dir).resolve() if report_dir else REPO / "build" / "eval",
            policies=_ids(policies) or [],
            scenarios=_ids(scenarios),
            seeds=seeds,
            lite=lite,
            json_path=_json(json),
            llm=LlmOptions(base_url, model, api_key or os.environ.get("OPENAI_API_KEY", "EMPTY")),
            workers=workers,
            difficulty=difficulty or None,
        )
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None
    print(paths["markdown"].read_text())
    for kind, path in paths.items():
        _console().print(f"{kind}: {path}")


@task
def scenario_table(c: Context) -> None:
    """Write the scenarios README's table (id, tier, what breaks, teaches, source) from the library."""
    from hpcgym.scenarios import README, write_readme

    changed = write_readme()
    _console().print(f"{README.relative_to(REPO)}: {'updated' if changed else 'already up to date'}")


@task(
    help={
        "path": "a transcripts.jsonl from invoke eval (default build/eval/transcripts.jsonl)",
        "scenario": "only this scenario",
        "policy": "only this policy",
        "failed": "only unsolved episodes",
        "replay": "re-type each episode's commands on a fresh cluster and report whether every "
        "observation, exit status and reward is byte-identical (exit 1 if not)",
        "via": "with --replay: the entry points, comma-separated, of eval,gym,openenv,exec (default all)",
        "url": "with --replay via openenv: a running server (default: one started in this process)",
        "images": f"with --replay: the images to run (default {DEFAULT_OUT.relative_to(REPO)})",
    }
)
def transcripts(
    c: Context,
    path: str = "",
    scenario: str = "",
    policy: str = "",
    failed: bool = False,
    replay: bool = False,
    via: str = "eval,gym,openenv,exec",
    url: str = "",
    images: str = "",
) -> None:
    """Show recorded episodes the way a person reads them, or replay them through every entry point."""
    from hpcgym.errors import HpcgymError
    from hpcgym.interfaces import replay as replaying
    from hpcgym.scenarios.evaluate import choose_transcripts, show_transcripts

    source = Path(path).resolve() if path else REPO / "build" / "eval" / "transcripts.jsonl"
    picked = {"scenario": scenario or None, "policy": policy or None}
    try:
        if not replay:
            print(show_transcripts(source, **picked, failed_only=failed))
            return
        records = choose_transcripts(source, **picked, failed_only=failed)
        results = replaying.replay(records, _ids(via) or [], _images(images), url=url or None)
    except (HpcgymError, OSError, ValueError) as e:  # as before: a --url that is no server, a bad --via
        raise Exit(f"error: {e}", code=1) from None
    print(replaying.render(results))
    if not all(r.identical for r in results):
        raise Exit(code=1)


@task(
    help={
        "host": "listen address (default 0.0.0.0)",
        "port": "port (default $PORT or 8000)",
        "images": f"the images (default {DEFAULT_OUT.relative_to(REPO)})",
    },
    # An automatic -h for --host would hide `invoke serve -h` (help).
    auto_shortflags=False,
)
def serve(c: Context, host: str = "0.0.0.0", port: int = 0, images: str = "") -> None:
    """Serve EnterpriseHPC over OpenEnv (HTTP + WebSocket); needs root and the built images.

    Settings come from the environment: OPENENV_API_KEY, HPCGYM_MAX_SESSIONS, HPCGYM_POOL_SIZE, ...
    (`.venv/bin/hpcgym-server --help` lists each with its default).
    """
    from hpcgym.errors import HpcgymError
    from hpcgym.interfaces.openenv.server.app import main

    argv = ["--host", host, "--images", str(_images(images))]
    try:
        main(argv + (["--port", str(port)] if port else []))
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None


SERVER_BASE = "hpcgym"  # our mmdebstrap Debian 12 base, from the store, imported into Docker


@task(
    help={
        "tag": "image tag (default hpcgym-server)",
        "base": "the base: hpcgym (default: our reproducible Debian 12 base from the store) or a registry "
        "image pinned by digest, e.g. debian:bookworm-slim@sha256:<digest>",
    }
)
def build_server_image(c: Context, tag: str = "hpcgym-server", base: str = SERVER_BASE) -> None:
    """Build the deployable server image (Containerfile) with Docker; from a clean clone, this one command.

    Builds the rocky images first if build/images lacks them. The base is a build argument: by default
    our own mmdebstrap base (no registry needed), imported into Docker as hpcgym-base; Python packages
    come from a wheelhouse built here, so the image build needs Debian's mirror only.
    """
    import json as json_module

    if base != SERVER_BASE and "@sha256:" not in base:
        raise Exit(
            f"error: --base {base!r} is not pinned by digest\n"
            "  hint: give REF@sha256:DIGEST (docker pull REF prints the digest), or leave --base out",
            code=2,
        )
    if shutil.which("docker") is None:
        raise Exit(
            "error: docker is not installed\n  hint: run ./bootstrap.sh main (it installs docker.io)", code=1
        )
    manifests = [DEFAULT_OUT / str(role) / "manifest.json" for role in ("rocky-login", "rocky-compute")]
    if not all(path.is_file() for path in manifests):
        build_images(c)
    base_ref = base
    if base == SERVER_BASE:
        digest = json_module.loads(manifests[0].read_text())["base"]["digest"]
        c.run(f"zstd -dc {DEFAULT_STORE}/{digest}/rootfs.tar.zst | docker import - hpcgym-base", pty=False)
        base_ref = "hpcgym-base"
    wheels = REPO / "build" / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    c.run(f"{sys.executable} -m pip wheel -q --wheel-dir {wheels} . 'setuptools>=68' wheel", pty=False)
    for wheel in wheels.glob("openenv_hpcgym-*.whl"):
        wheel.unlink()
    c.run(
        f"DOCKER_BUILDKIT=0 docker build --network host --build-arg BASE={base_ref} "
        f"-f Containerfile -t {tag} .",
        pty=False,
    )


def _images(flag: str) -> Path:
    return Path(flag).resolve() if flag else DEFAULT_OUT


def _json(flag: str) -> Path | None:
    return Path(flag).resolve() if flag else None


def _ids(text: str) -> list[str] | None:
    return [item for item in text.split(",") if item] or None


def _choice(enum_type, value: str, flag: str):  # type: ignore[no-untyped-def]
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(str(v) for v in enum_type)
        raise Exit(f"error: {flag} {value!r} is not one of: {allowed}", code=2) from None


# ---- Slurm fleets: env servers as a job array, a training job that depends on them ---------------------

DEFAULT_FLEETS = REPO / ".hpcgym" / "fleet"
_COORD_HELP = f"the launch's coordination dir (default: the newest under {DEFAULT_FLEETS.relative_to(REPO)})"


@task(
    help={
        "servers": "how many env servers (array tasks) to submit",
        "partition": "Slurm partition for the servers (default: the config's)",
        "sessions_per_server": "concurrent sessions per server, HPCGYM_MAX_SESSIONS (default: the config's)",
        "time": "time limit per server, e.g. 04:00:00 or 1-00:00:00 (default: the config's)",
        "config": "fleet config: dev, production, or a path to a .yaml file (default dev)",
        "coord_dir": f"the launch's coordination dir (default {DEFAULT_FLEETS.relative_to(REPO)}/<id>)",
        "images": f"built images the servers use (default {DEFAULT_OUT.relative_to(REPO)})",
        "dry_run": "print the sbatch script and command line; create and submit nothing",
    }
)
def fleet_up(
    c: Context,
    servers: int = 0,
    partition: str = "",
    sessions_per_server: int = 0,
    time: str = "",
    config: str = "dev",
    coord_dir: str = "",
    images: str = "",
    dry_run: bool = False,
) -> None:
    """Submit N OpenEnv env servers to Slurm as one job array, each announcing itself once healthy."""
    from hpcgym import fleet
    from hpcgym.errors import HpcgymError

    try:
        fleet_config = fleet.with_overrides(
            fleet.load_config(config),
            partition=partition,
            sessions_per_server=sessions_per_server,
            time_limit=time,
        )
        root = Path(coord_dir) if coord_dir else DEFAULT_FLEETS / fleet.new_launch_id()
        paths = fleet.Paths.for_repo(REPO, Path(images) if images else None)
        plan = fleet.plan_up(fleet_config, servers, root, paths)
        if dry_run:
            print(plan.describe(), end="")
            return
        launch = fleet.up(plan)
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None
    _console().print(
        f"fleet {launch.launch_id}: array job {launch.server_job} with {launch.servers} servers; "
        f"coordination dir {plan.coord.root}\nnext: invoke fleet-status, fleet-train, fleet-down"
    )


@task(
    help={
        "coord_dir": _COORD_HELP,
        "config": "fleet config for the trainer's resources (default: the one the fleet was launched with)",
        "partition": "Slurm partition for the trainer (default: the config's)",
        "gpus": "GPUs for the trainer (default: the config's; 0 for none)",
        "time": "the trainer's time limit (default: the config's)",
        "dry_run": "print the sbatch script and command line; submit nothing",
    }
)
def fleet_train(
    c: Context,
    coord_dir: str = "",
    config: str = "",
    partition: str = "",
    gpus: int = -1,
    time: str = "",
    dry_run: bool = False,
) -> None:
    """Submit GRPO training that starts after the fleet and trains on its ready servers' URLs."""
    from hpcgym import fleet
    from hpcgym.errors import HpcgymError

    try:
        coord = fleet.find_coord(coord_dir, DEFAULT_FLEETS)
        fleet_config = fleet.with_overrides(
            fleet.load_config(config or coord.config_file),
            trainer_partition=partition,
            trainer_time=time,
            gpus=gpus if gpus >= 0 else None,
        )
        plan = fleet.plan_train(coord, fleet.Paths.for_repo(REPO), fleet_config)
        if dry_run:
            print(plan.describe(), end="")
            return
        launch = fleet.train(plan)
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None
    _console().print(
        f"fleet {launch.launch_id}: training job {launch.train_job} after array job {launch.server_job}"
    )


@task(help={"coord_dir": _COORD_HELP})
def fleet_status(c: Context, coord_dir: str = "") -> None:
    """Show a fleet's array tasks, their Slurm states, which servers are ready and their URLs."""
    from rich.console import Console

    from hpcgym import fleet
    from hpcgym.errors import HpcgymError

    try:
        state = fleet.status(fleet.find_coord(coord_dir, DEFAULT_FLEETS))
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None
    Console(highlight=False).print(fleet.status_table(state))


@task(
    help={
        "coord_dir": _COORD_HELP,
        "drain_timeout_s": "seconds servers may drain after SIGTERM before they are cancelled (default 120)",
    }
)
def fleet_down(c: Context, coord_dir: str = "", drain_timeout_s: float = 120.0) -> None:
    """Stop a fleet and its trainer, wait until Slurm has no job of it left, delete its coordination dir."""
    from hpcgym import fleet
    from hpcgym.errors import HpcgymError

    try:
        report = fleet.down(fleet.find_coord(coord_dir, DEFAULT_FLEETS), drain_timeout_s)
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None
    how = "drained" if report.graceful else "cancelled after the drain timeout"
    _console().print(
        f"fleet {report.launch.launch_id}: {how} in {report.seconds:.1f} s; removed {report.removed}"
    )


@task(
    help={
        "servers": "servers in the private fleet (--local-slurm only; default 4)",
        "sessions": "concurrent sessions, all open before the first step (default 64)",
        "steps": "commands per session; with a kill, half run before it and half after (default 8)",
        "sessions_per_server": "HPCGYM_MAX_SESSIONS of the private fleet (--local-slurm only; default 22)",
        "kill_one": "scancel one server halfway and measure the failover (default on; --no-kill-one)",
        "local_slurm": "start a private Slurm cluster here, fleet-up, benchmark, fleet-down, stop it",
        "coord_dir": _COORD_HELP + "; without --local-slurm",
        "json": "also write the figures to this JSON file",
    }
)
def fleet_bench(
    c: Context,
    servers: int = 4,
    sessions: int = 64,
    steps: int = 8,
    sessions_per_server: int = 22,
    kill_one: bool = True,
    local_slurm: bool = False,
    coord_dir: str = "",
    json: str = "",
) -> None:
    """Benchmark a fleet: many concurrent sessions, step latency, one server killed, failover counts.

    With --local-slurm everything runs on this machine (root, slurm-wlm and munge needed) and is torn
    down at the end, even on error; without it, the newest (or --coord-dir) running fleet is measured.
    """
    from rich.console import Console

    from hpcgym import fleet
    from hpcgym.bench import FleetBenchOptions, bench_launched_fleet, bench_local_fleet, fleet_report_tables
    from hpcgym.errors import HpcgymError
    from training.fleet_bench import run_fleet_bench

    console = _console()
    try:
        options = FleetBenchOptions(sessions=sessions, steps=steps)
        if local_slurm:
            paths = fleet.Paths.for_repo(REPO)
            report = bench_local_fleet(
                run_fleet_bench, paths, servers, sessions_per_server, options, kill_one, console.print
            )
        else:
            coord = fleet.find_coord(coord_dir, DEFAULT_FLEETS)
            report = bench_launched_fleet(run_fleet_bench, coord, options, kill_one, console.print)
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None
    for table in fleet_report_tables(report):
        Console(highlight=False).print(table)
    if json:
        Path(json).write_text(report.to_json())
        console.print(f"wrote {json}")
    if report.errors:
        raise Exit(f"error: {len(report.errors)} session(s) failed: {report.errors[0]}", code=1)


@task(
    help={
        "states": "comma-separated state names (default: every state)",
        "ci": "only the quick CI-sized set of states",
        "out": "directory for fidelity.md and fidelity.json (default build/fidelity)",
        "images": f"built images (default {DEFAULT_OUT.relative_to(REPO)})",
        "min_ratio": "fail below this share of identical outputs (0 to 1; default 0: only report)",
    }
)
def fidelity(
    c: Context, states: str = "", ci: bool = False, out: str = "", images: str = "", min_ratio: float = 0.0
) -> None:
    """Play operator scripts on a real Slurm 22.05 cluster here and on the simulator; report the diffs.

    Needs root, Debian's slurm-wlm and munge, and built images. Writes a markdown and a JSON report,
    one section per cluster state, every difference as a diff.
    """
    from hpcgym.errors import HpcgymError
    from hpcgym.fidelity import choose_states, run_fidelity, write_report

    console = _console()
    try:
        chosen = choose_states(states, ci=ci)
        out_dir = Path(out) if out else REPO / "build" / "fidelity"
        images_dir = Path(images) if images else DEFAULT_OUT
        report = run_fidelity(chosen, images_dir, console.print, out=out_dir)
        md, js = write_report(report, out_dir)
    except HpcgymError as e:
        raise Exit(f"error: {e}", code=1) from None
    console.print(report.summary())
    console.print(f"wrote {md} and {js}")
    if report.ratio < min_ratio:
        raise Exit(f"error: {100 * report.ratio:.1f} % identical, below {100 * min_ratio:.1f} %", code=1)
