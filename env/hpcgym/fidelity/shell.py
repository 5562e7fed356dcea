"""How a command line is typed on either side so that stdout, stderr and the exit status come apart.

Both sides type the same wrapper into a bash that lives for the whole state (cwd, variables and
background jobs carry over, as at a real prompt): the command's streams go to files named after its
number, its status to a third file, and the harness reads the three back.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hpcgym.errors import HpcgymError

OUT_DIR = "/tmp/.fidelity"


@dataclass(frozen=True)
class Output:
    """What one command printed, as read back from its files."""

    stdout: str
    stderr: str
    exit_code: int


def wrap(line: str, number: int, out_dir: str = OUT_DIR) -> str:
    """The wrapper typed for command `number`: streams and status into `out_dir`, stdin empty."""
    base = f"{out_dir}/{number}"
    return f"{{ {line}\n}} >{base}.o 2>{base}.e </dev/null; echo $? >{base}.rc"


def decode(stdout: bytes | None, stderr: bytes | None, rc: bytes | None) -> Output:
    code = rc.decode().strip() if rc else ""
    return Output(
        (stdout or b"").decode(errors="replace"),
        (stderr or b"").decode(errors="replace"),
        int(code) if code.isdigit() else -1,
    )


class RealShell:
    """A bash on this machine, with the private cluster's SLURM_CONF, typed into through a pipe."""

    def __init__(self, env: dict[str, str], cwd: Path, out_dir: Path) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.number = 0

    def run(self, line: str, timeout_s: float = 60) -> Output:
        self.number += 1
        marker = f"__fidelity_done_{self.number}__"
        typed = wrap(line, self.number, str(self.out_dir)) + f"\necho {marker}\n"
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(typed.encode())
        self.proc.stdin.flush()
        seen = b""
        deadline = time.monotonic() + timeout_s
        fd = self.proc.stdout.fileno()
        while marker.encode() not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise HpcgymError(f"the real cluster's shell did not finish {line!r} in {timeout_s:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise HpcgymError(f"the real cluster's shell exited during {line!r}")
                seen += chunk
        base = self.out_dir / str(self.number)
        return decode(
            _read(base.with_suffix(".o")), _read(base.with_suffix(".e")), _read(base.with_suffix(".rc"))
        )

    def close(self) -> None:
        # Background jobs the script left (`srun sleep 60 &`) share the shell's session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
