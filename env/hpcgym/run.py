"""The one subprocess wrapper.

Every external program hpcgym starts goes through `run`: argv only (never a shell string), stdin from
/dev/null, a small explicit environment, a timeout, and on failure the exact command as a line you can
paste into a shell. A program that is not installed becomes `MissingTool` naming the package to install.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from hpcgym.errors import HpcgymError, MissingTool

log = logging.getLogger(__name__)

# Debian package that provides each host program hpcgym calls; used only for hints.
PACKAGE_OF = {
    "buildah": "buildah",
    "bwrap": "bubblewrap",
    "docker": "docker.io",
    "dockerd": "docker.io",
    "fuse-overlayfs": "fuse-overlayfs",
    "mmdebstrap": "mmdebstrap",
    "newuidmap": "uidmap",
    "tar": "tar",
    "zstd": "zstd",
}

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CommandFailed(HpcgymError):
    """A program exited non-zero (or timed out) where success was required."""

    def __init__(self, argv: Sequence[str], returncode: int | None, output: str) -> None:
        what = "timed out" if returncode is None else f"exited {returncode}"
        tail = "\n".join(output.strip().splitlines()[-25:])
        super().__init__(f"command {what}: {shlex.join(argv)}" + (f"\n{tail}" if tail else ""))
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output


def require_tool(name: str) -> str:
    """Return the absolute path of a host program, or raise `MissingTool` naming its package."""
    found = shutil.which(name, path=os.environ.get("PATH", DEFAULT_PATH) + ":" + DEFAULT_PATH)
    if found is None:
        package = PACKAGE_OF.get(name, name)
        raise MissingTool(f"{name} is not installed", hint=f"apt-get install {package}")
    return found


def finalize_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    env["HOME"] = os.environ.get("HOME", "/root")
    for passthrough in ("SOURCE_DATE_EPOCH", "TMPDIR", "DOCKER_HOST", "STORAGE_DRIVER"):
        if passthrough in os.environ:
            env[passthrough] = os.environ[passthrough]
    env.update(extra or {})
    return env


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    capture: bool = True,
    input_bytes: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one program to completion.

    Args:
        argv: program and arguments; the program is looked up on PATH and must exist.
        check: raise `CommandFailed` on a non-zero exit.
        timeout_s: kill the program after this many seconds (raises `CommandFailed`).
        env: variables added to the small default environment.
        cwd: working directory.
        capture: capture stdout and stderr together (else they go to the terminal).
        input_bytes: bytes for stdin; without them stdin is /dev/null.

    Returns:
        The completed process; `stdout` holds stdout and stderr interleaved when captured.
    """
    args = [os.fspath(a) for a in argv]
    args[0] = require_tool(args[0]) if "/" not in args[0] else args[0]
    log.debug("run: %s", shlex.join(args))
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
        env=finalize_env(env),
        cwd=cwd,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(input_bytes, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise CommandFailed(args, None, (out or b"").decode(errors="replace")) from None
    except BaseException:
        # Ctrl-C or any other interruption: never leave the child running behind us.
        proc.kill()
        proc.wait()
        raise
    text = (out or b"").decode(errors="replace")
    if check and proc.returncode != 0:
        log.error("command failed (exit %d): %s", proc.returncode, shlex.join(args))
        raise CommandFailed(args, proc.returncode, text)
    return subprocess.CompletedProcess(args, proc.returncode, text, None)
