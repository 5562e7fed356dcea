"""The native node programs: `stubs/hpcgym-client.c` and `stubs/hpcgym-init.c` -> small static binaries.

Every simulated tool in a node is a hard link to one client, which starts once per agent command,
so its start-up is most of what a `sinfo` step costs. The Python client (`stubs/hpcgym-client.py`)
stays beside it in the image as the reference it must match and the baseline `invoke bench` compares
against. The node's init (`hpcgym-init`, PID 1 of every node, see `runtime/init.py`) is built the
same way. The compiler is pinned: zig's `cc` from the `ziglang` wheel on PyPI, which carries its own
clang and musl, so every machine with that wheel makes the same bytes for the same source. The flags
are fixed, the binary is stripped and has no build id, and the compiler only sees relative names, so
no path, time or host detail reaches the output. The result is kept in the store under the hash of
its inputs, so a no-op rebuild compiles nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from hpcgym.errors import BuildError, MissingTool
from hpcgym.imagebuild.spec import finalize_cache_key, hash_tree, sha256_file
from hpcgym.imagebuild.store import MANIFEST, Store, dump_manifest
from hpcgym.run import CommandFailed, run

SOURCE = "hpcgym-client.c"
PYTHON_CLIENT = "hpcgym-client.py"
BINARY = "hpcgym-client"
INIT_SOURCE = "hpcgym-init.c"
INIT_BINARY = "hpcgym-init"
ZIG_VERSION = "0.13.0"
ZIG_PACKAGE = f"ziglang=={ZIG_VERSION}"
# musl, statically linked, for the CPU every machine of that architecture has.
ZIG_TARGETS = {"x86_64": "x86_64-linux-musl", "aarch64": "aarch64-linux-musl"}
CLIENT_FLAGS = (
    "-std=c11",
    "-D_GNU_SOURCE",
    "-Os",
    "-static",
    "-s",
    "-fno-ident",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wl,--build-id=none",
)


def zig_cmd() -> list[str]:
    return [sys.executable, "-m", "ziglang"]


def toolchain_version() -> str:
    """The pinned zig's version, or a clear error when it is missing or another one."""
    missing = MissingTool(
        "the native tool client needs the zig compiler from PyPI, which is not installed",
        hint=f"{sys.executable} -m pip install '{ZIG_PACKAGE}' (or `pip install -e .`)",
    )
    try:
        done = subprocess.run(
            [*zig_cmd(), "version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except OSError:
        raise missing from None
    if done.returncode != 0:
        raise missing
    version = done.stdout.strip()
    if version != ZIG_VERSION:
        raise BuildError(
            f"the native tool client is pinned to zig {ZIG_VERSION}, but zig {version} is installed",
            hint=f"{sys.executable} -m pip install '{ZIG_PACKAGE}'",
        )
    return version


def zig_target(machine: str | None = None) -> str:
    machine = machine or platform.machine()
    if machine not in ZIG_TARGETS:
        raise BuildError(f"no static target known for {machine}", hint="add it to ZIG_TARGETS")
    return ZIG_TARGETS[machine]


def compile_client_cmd(target: str, out_name: str = BINARY, source: str = SOURCE) -> list[str]:
    return [*zig_cmd(), "cc", "-target", target, "-mcpu=baseline", *CLIENT_FLAGS, "-o", out_name, source]


def compile_client(
    stubs_dir: Path, out: Path, machine: str | None = None, source: str = SOURCE, what: str = "tool client"
) -> None:
    """Compile `source` (the client by default) from `stubs_dir` to `out`: pinned toolchain, fixed flags."""
    toolchain_version()
    product = BINARY if source == SOURCE else INIT_BINARY
    work = out.parent / f".{out.name}.build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        # The compiler sees only relative names in a folder of its own, so no host path can leak.
        shutil.copyfile(stubs_dir / source, work / source)
        try:
            run(compile_client_cmd(zig_target(machine), product, source), cwd=work, timeout_s=600)
        except CommandFailed as e:
            raise BuildError(f"compiling the native {what} failed:\n{e}") from None
        os.replace(work / product, out)
        out.chmod(0o755)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def stubs_inputs(stubs_dir: Path, machine: str | None = None) -> dict[str, object]:
    return {
        "step": "stubs",
        "tree": hash_tree(stubs_dir),
        "zig": ZIG_VERSION,
        "target": zig_target(machine),
        "flags": list(CLIENT_FLAGS),
    }


def ensure_stubs(stubs_dir: Path, store: Store, reporter: object | None = None) -> Path:
    """Return the stubs tree an image copies: the native client compiled, the rest as in the repo.

    A tree without `hpcgym-client.c` is returned as it is (a repository that ships only a script).
    """
    if not (stubs_dir / SOURCE).is_file():
        return stubs_dir
    inputs = stubs_inputs(stubs_dir)
    key = finalize_cache_key(inputs)
    with store.locked(key):
        entry = store.lookup(key)
        built = [BINARY] + ([INIT_BINARY] if (stubs_dir / INIT_SOURCE).is_file() else [])
        if entry is not None and all((entry.path / "stubs" / name).is_file() for name in built):
            return entry.path / "stubs"
        with store.staging() as staged:
            tree = staged / "stubs"
            ignored = shutil.ignore_patterns(SOURCE, BINARY, INIT_SOURCE, INIT_BINARY)
            shutil.copytree(stubs_dir, tree, ignore=ignored)
            stage = getattr(reporter, "stage", None)
            label = "stubs: native client and init (zig cc)"
            with stage(label) if stage is not None else contextlib.nullcontext():
                compile_client(stubs_dir, tree / BINARY)
                if INIT_BINARY in built:
                    compile_client(stubs_dir, tree / INIT_BINARY, source=INIT_SOURCE, what="node init")
            digest = hashlib.sha256(
                "".join(sha256_file(tree / name) for name in built).encode() + hash_tree(tree).encode()
            ).hexdigest()
            manifest = {
                "kind": "stubs",
                "digest": digest,
                "inputs": inputs,
                "cache_key": key,
                "client_sha256": sha256_file(tree / BINARY),
                "client_bytes": (tree / BINARY).stat().st_size,
                **({"init_sha256": sha256_file(tree / INIT_BINARY)} if INIT_BINARY in built else {}),
            }
            (staged / MANIFEST).write_text(dump_manifest(manifest))
            entry = store.commit(staged, f"stubs-{digest}", key)
    return entry.path / "stubs"
