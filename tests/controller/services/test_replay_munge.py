"""Replay the munge and daemon captures (reference/slurm-22.05: 00, 01, 02, 90) byte for byte.

Host- and moment-specific values are normalised: ENCODE_HOST, the times in ENCODE_TIME/DECODE_TIME
and remunge's lines, munged's pid and origin address. Pipelines (`munge -n | unmunge`) are run as the
shell would: the first tool's stdout becomes the next one's stdin. 01's captures ran munged as the
munge user (`runuser -u munge -- munged -F`), which is how the service layer runs it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hpcgym.controller import Controller
from hpcgym.controller.services import MemoryNodeAccess

from .conftest import Env, make_env

REFERENCE = Path(__file__).resolve().parents[4] / "shared" / "reference" / "slurm-22.05"
pytestmark = pytest.mark.skipif(not REFERENCE.exists(), reason=f"reference captures not found at {REFERENCE}")
NODE = "compute-01"
KEY = "/etc/munge/munge.key"


def capture(directory: str, command: str) -> tuple[str, str, int]:
    for entry in json.loads((REFERENCE / directory / "index.json").read_text()):
        if entry["command"] == command:
            stdout = (REFERENCE / directory / entry["file"]).read_text()
            return stdout, entry["stderr"], entry["exit_code"]
    raise KeyError(command)


def normalise(text: str) -> str:
    text = re.sub(r"(ENCODE_HOST: +).*", r"\1HOST", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d( \+0000 \(\d+\))?", "TIME", text)
    text = re.sub(r"\(pid \d+\)", "(pid N)", text)
    text = re.sub(r"pid \d+ bound", "pid N bound", text)
    return re.sub(r"Set origin address to .*", "Set origin address to ADDR", text)


def pipeline(env: Env, commands: list[list[str]], stdin: str | None = None) -> tuple[str, str, int]:
    """Run `a | b | c` on NODE: stdout feeds the next stdin; stderr adds up; the last exit code wins."""
    stdout, stderr, code = "", "", 0
    for argv in commands:
        reply = env.run(NODE, *argv, stdin=stdin)
        stdin = stdout = reply.stdout
        stderr, code = stderr + reply.stderr, reply.exit_code
    return stdout, stderr, code


def test_00_no_config_munge_and_versions() -> None:
    # No daemons at all: a controller whose nodes have no unit files.
    controller = Controller.from_slurm_conf(REFERENCE / "config" / "slurm.conf", nodes=MemoryNodeAccess())
    for command in ("munge -n", "munged --version", "munge --version", "unmunge --version", "remunge --version",
                    "slurmd -V", "slurmctld -V"):  # fmt: skip
        reply = controller.handle("vm", command.split(), "/root")
        assert (reply.stdout, reply.stderr, reply.exit_code) == capture("00-no-config", command), command


@pytest.mark.parametrize("command", ["unmunge -h", "remunge -h", "munged -h", "slurmd -h", "slurmctld -h"])
def test_90_help(env: Env, command: str) -> None:
    reply = env.run(NODE, *command.split())
    assert (reply.stdout, reply.stderr, reply.exit_code) == capture("90-help-usage", command)


SIMPLE_02 = ["munge -C", "munge -M", "munge -Z", "munge -h", "munge --bogus", "unmunge --bogus",
             "munge -n -S /tmp/nonexistent.socket"]  # fmt: skip
PIPES_02 = {
    "munge -n | unmunge": [["munge", "-n"], ["unmunge"]],
    "munge -s hello | unmunge": [["munge", "-s", "hello"], ["unmunge"]],
    "munge -n -t 10 | unmunge": [["munge", "-n", "-t", "10"], ["unmunge"]],
    "munge -n | unmunge -m": [["munge", "-n"], ["unmunge", "-m"]],
    "munge -n | unmunge -k": [["munge", "-n"], ["unmunge", "-k"]],
    "munge -n -u 12345 | unmunge": [["munge", "-n", "-u", "12345"], ["unmunge"]],
    "munge -n -U 65534 | unmunge": [["munge", "-n", "-U", "65534"], ["unmunge"]],
    "echo garbage | unmunge": [["unmunge"]],
    'echo "MUNGE:AwQFAAA=:" | unmunge': [["unmunge"]],
}
STDIN_02 = {"echo garbage | unmunge": "garbage\n", 'echo "MUNGE:AwQFAAA=:" | unmunge': "MUNGE:AwQFAAA=:\n"}


@pytest.mark.parametrize("command", SIMPLE_02)
def test_02_munge_flags(env: Env, command: str) -> None:
    reply = env.run(NODE, *command.split())
    assert (reply.stdout, reply.stderr, reply.exit_code) == capture("02-munge", command)


@pytest.mark.parametrize("command", sorted(PIPES_02))
def test_02_munge_pipelines(env: Env, command: str) -> None:
    stdout, stderr, code = capture("02-munge", command)
    out, err, exit_code = pipeline(env, PIPES_02[command], STDIN_02.get(command))
    assert (normalise(out), err, exit_code) == (normalise(stdout), stderr, code)


def test_02_replayed_and_expired(env: Env) -> None:
    cred = env.run(NODE, "munge", "-n").stdout
    env.run(NODE, "unmunge", stdin=cred)
    again = env.run(NODE, "unmunge", stdin=cred)
    stdout, _, code = capture(
        "02-munge", 'C=$(munge -n); echo "$C" | unmunge >/dev/null; echo "$C" | unmunge'
    )
    assert (normalise(again.stdout), again.exit_code) == (normalise(stdout), code)
    short = env.run(NODE, "munge", "-n", "-t", "1").stdout
    env.tick(3)
    expired = env.run(NODE, "unmunge", stdin=short)
    stdout, _, code = capture("02-munge", "munge -n -t 1 | (sleep 3; unmunge)")
    assert (normalise(expired.stdout), expired.exit_code) == (normalise(stdout), code)


def test_02_remunge(env: Env) -> None:
    for command in ("remunge", "remunge -N 4 -c 2"):
        reply = env.run(NODE, *command.split())
        stdout, stderr, code = capture("02-munge", command)
        assert (normalise(reply.stdout), reply.stderr, reply.exit_code) == (normalise(stdout), stderr, code)


def test_02_munged_while_running(env: Env) -> None:
    reply = env.run(NODE, "munged", "-F")
    _, stderr, _ = capture("02-munge", 'timeout 5 runuser -u munge -- munged -F; echo "munged exit=$?"')
    assert normalise(reply.stderr) == normalise(stderr)


KEY_CASES = {
    'chmod 0644 /etc/munge/munge.key && ls -l /etc/munge/munge.key && timeout 5 runuser -u munge -- munged -F; echo "munged exit=$?"': (0o644, 981, True),
    'chmod 0640 /etc/munge/munge.key && timeout 5 runuser -u munge -- munged -F; echo "munged exit=$?"': (0o640, 981, True),
    'chmod 0604 /etc/munge/munge.key && timeout 5 runuser -u munge -- munged -F; echo "munged exit=$?"': (0o604, 981, True),
    'chmod 0644 /etc/munge/munge.key && timeout 5 runuser -u munge -- munged; echo "munged exit=$?"': (0o644, 981, False),
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(KEY_CASES))
def test_01_munged_refuses_the_key(command: str) -> None:
    mode, uid, foreground = KEY_CASES[command]
    env = make_env()
    env.run(NODE, "systemctl", "stop", "munge")
    env.access.chmod(NODE, KEY, mode)
    env.access.chown(NODE, KEY, uid, uid)
    reply = env.run(NODE, "munged", *(["-F"] if foreground else []))
    _, stderr, _ = capture("01-munged-behaviour", command)
    assert (normalise(reply.stderr), reply.exit_code) == (normalise(stderr), 1)


def test_01_owner_and_missing_key() -> None:
    # The capture host's munge uid was 102; ours is 981 (images/common/setup-node.sh).
    env = make_env()
    env.run(NODE, "systemctl", "stop", "munge")
    env.access.chown(NODE, KEY, 0, 0)
    cmd = ('chmod 0600 /etc/munge/munge.key && chown root:root /etc/munge/munge.key && '
           'timeout 5 runuser -u munge -- munged -F; echo "munged exit=$?"')  # fmt: skip
    _, stderr, _ = capture("01-munged-behaviour", cmd)
    assert env.run(NODE, "munged", "-F").stderr == normalise(stderr).replace("UID 102", "UID 981").replace(
        "(pid N)", "(pid 103)"
    ).replace("Set origin address to ADDR", "Set origin address to 10.10.1.11 (eth0)")
    env.access.remove(NODE, KEY)
    cmd = ('chown munge:munge /etc/munge/munge.key && mv /etc/munge/munge.key /home/ops/munge.key.moved && '
           'timeout 5 runuser -u munge -- munged -F; echo "munged exit=$?"; '
           'mv /home/ops/munge.key.moved /etc/munge/munge.key')  # fmt: skip
    _, stderr, _ = capture("01-munged-behaviour", cmd)
    assert normalise(env.run(NODE, "munged", "-F").stderr) == normalise(stderr)
