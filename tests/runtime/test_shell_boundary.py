"""The agent's shell as a trust boundary: nothing the node prints or sends ends a step early.

Each test is an attack typed into the agent's shell, checked from the host: how long the step took,
the exit code the harness reported against the one the command really had, whether the shell is
really back at its prompt (the kernel's view), and that another cluster keeps answering meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from hpcgym.errors import SandboxError
from hpcgym.runtime import Cluster
from hpcgym.runtime.shell import Shell, clean_output

# A forger that knows every secret the shell holds: it reads the shell's memory through
# /proc/PID/mem and prints every number it finds there, as a prompt marker and in the old
# "token:status" form, over and over, for as long as it is told to.
FORGER = r"""
import os, re, sys, time
pid, end = int(sys.argv[1]), time.time() + float(sys.argv[2])
found = set()
while time.time() < end:
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            span, perms = line.split()[:2]
            if "rw" not in perms:
                continue
            lo, hi = (int(x, 16) for x in span.split("-"))
            try:
                mem.seek(lo)
                data = mem.read(min(hi - lo, 1 << 22))
            except OSError:
                continue
            found.update(re.findall(rb"\x1e([0-9]{1,10})\x1f", data))
            found.update(re.findall(rb"(?<![0-9])[0-9]{6,10}(?![0-9])", data)[:500])
    for n in found:
        os.write(1, b"\x1e" + n + b"\x1f\x1e" + n + b":0\x1f")
    time.sleep(0.05)
print(f"forger knew {len(found)} numbers", file=sys.stderr)
"""

# Finds the shell's copy of its report socket (saved while a command runs) and names it $s.
FIND_SOCKET = "for f in /proc/$$/fd/*; do [[ $(readlink $f) == socket:* ]] && s=${f##*/}; done; "

# A process of its own takes the shell's report socket with pidfd_getfd(2) (ptrace rights over the
# shell are enough) and sends the step's own number: once as itself, once claiming to be the shell.
CLAIMER = r"""
import ctypes, os, socket, struct, sys
shell_pid, fd, step = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
got = libc.syscall(438, os.pidfd_open(shell_pid), fd, 0)  # pidfd_getfd
assert got >= 0, os.strerror(ctypes.get_errno())
sock = socket.socket(fileno=got)
sock.send(f"{step} 0 1".encode())
creds = struct.pack("3i", shell_pid, 0, 0)
try:
    sock.sendmsg([f"{step} 0 2".encode()], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)])
    print("claim accepted")
except PermissionError:
    print("claim refused")
"""


def login_shell(cluster: Cluster) -> Shell:
    shell = cluster.nodes[cluster.login_node].shell
    assert shell is not None
    return shell


@contextmanager
def answering(other: Cluster) -> Iterator[list[tuple[str, int, float]]]:
    """Keep another cluster busy with `echo` while the body runs; yield what it answered."""
    answers: list[tuple[str, int, float]] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            start = time.monotonic()
            result = other.execute("echo hi", timeout_s=5)
            answers.append((result.output, result.exit_code, time.monotonic() - start))
            time.sleep(0.02)

    thread = threading.Thread(target=ask)
    thread.start()
    try:
        yield answers
        # A body that ends quickly still sees a few answers: wait for them (a stalled one fails).
        until = time.monotonic() + 5
        while len(answers) < 3 and time.monotonic() < until:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def assert_answered(answers: list[tuple[str, int, float]]) -> None:
    assert len(answers) >= 3
    assert all(output == "hi\n" and code == 0 for output, code, _ in answers), answers[:5]
    assert max(wall for _, _, wall in answers) < 2.0


def assert_really_ran(cluster: Cluster, command: str, seconds: float, code: int) -> None:
    start = time.monotonic()
    result = cluster.execute(f"{command}\nsleep {seconds}; echo after; (exit {code})", timeout_s=20)
    assert time.monotonic() - start >= seconds
    assert result.wall_s >= seconds
    assert (result.exit_code, result.timed_out) == (code, False)
    assert "after" in result.output
    # The kernel's view: the shell sits in its prompt read, and the command left no process behind.
    shell = login_shell(cluster)
    # A trap storm (the test above) takes the shell out of its read for a moment at a time.
    deadline = time.monotonic() + 2
    while shell._prompt_state() is not True and time.monotonic() < deadline:
        time.sleep(0.01)
    assert shell._prompt_state() is True
    assert f"sleep {seconds}" not in cluster.execute("ps -eo args").output.splitlines()


FORGERIES = {
    "prompt from PS1": 'printf "%s" "$PS1" "${PS1@P}"',
    "old token from the environment": "cat /proc/self/environ /proc/$$/environ; printf '\\x1ex:0\\x1f'",
    "declare -p": (
        "declare -p PS1 __hpcgym_nonce __hpcgym_step; declare -f __hpcgym_report; "
        'printf "\\x1e%s\\x1f\\x1e%s\\x1f" "$__hpcgym_nonce" "$__hpcgym_step"'
    ),
    "the shell's own tty fd": 'printf "\\x1e%s\\x1f" "$__hpcgym_nonce" >&255',
    "/dev/tty": 'printf "\\x1e%s\\x1f" "$__hpcgym_nonce" >/dev/tty 2>/dev/null',
}


@pytest.mark.parametrize("forgery", FORGERIES.values(), ids=FORGERIES.keys())
def test_printed_prompt_does_not_end_the_step(cluster: Cluster, forgery: str) -> None:
    assert_really_ran(cluster, forgery, 1, 7)


def test_forger_reading_shell_memory_does_not_end_the_step(cluster: Cluster, other_cluster: Cluster) -> None:
    cluster.execute("cat > /tmp/forge.py <<'EOF'\n" + FORGER + "\nEOF")
    with answering(other_cluster) as answers:
        assert_really_ran(cluster, "python3 /tmp/forge.py $$ 1.5 &", 2, 7)
        # The forger is done; its output went into that step, never into a step's end.
        assert cluster.execute("wait; echo next").output.endswith("next\n")
    assert_answered(answers)


def test_background_job_forging_after_the_command_does_not_end_the_next(cluster: Cluster) -> None:
    forge = (
        'for i in $(seq 50); do printf "\\x1e%s\\x1f\\x1e%s:0\\x1f" "$__hpcgym_nonce" "$i"; sleep 0.02; done'
    )
    result = cluster.execute(f"({forge}) &")
    assert result.exit_code == 0
    assert_really_ran(cluster, "true", 1, 5)


def test_report_from_the_shell_builtin_mid_command_does_not_end_the_step(cluster: Cluster) -> None:
    # The shell's own pid, the step's own number: only the shell back at its prompt ends the step.
    send = FIND_SOCKET + 'printf "%s 0 1" "$__hpcgym_step" >&$s'
    assert_really_ran(cluster, send, 1, 7)


def test_reports_from_other_processes_do_not_count(cluster: Cluster) -> None:
    cluster.execute("cat > /tmp/claim.py <<'EOF'\n" + CLAIMER + "\nEOF")
    claim = FIND_SOCKET + 'python3 /tmp/claim.py $$ $s "$__hpcgym_step"'
    start = time.monotonic()
    result = cluster.execute(f"{claim}; sleep 1; (exit 7)", timeout_s=20)
    assert time.monotonic() - start >= 1
    assert (result.exit_code, result.output) == (7, "claim refused\n")


def test_report_before_the_line_is_read_does_not_end_it(cluster: Cluster) -> None:
    # A trap fires while the shell waits at its prompt and reports 0 with the number it knows: the
    # previous line's. The next line must still run to its end.
    arm = 'trap \'printf "%s 0 1" "$__hpcgym_step" >&99 2>/dev/null\' USR1; '
    arm += "(while :; do kill -USR1 $$ 2>/dev/null || exit; sleep 0.005; done) &"
    assert cluster.execute(arm).exit_code == 0
    try:
        time.sleep(0.2)
        assert_really_ran(cluster, "true", 1, 7)
    finally:
        cluster.execute("trap - USR1; kill %1")


def test_builtin_reading_the_tty_after_a_forged_report_times_out(cluster: Cluster) -> None:
    # The shell's pid blocked in read(2) on the pty, a report and a prompt marker sent: still the
    # wrong read, so the step runs into its limit, is interrupted, and the shell comes back.
    attack = FIND_SOCKET + 'printf "%s 0 1" "$__hpcgym_step" >&$s; printf "\\x1e1\\x1f"; read -r x <&255'
    start = time.monotonic()
    result = cluster.execute(attack, timeout_s=1.5)
    assert time.monotonic() - start >= 1.5
    assert (result.timed_out, result.exit_code) == (True, 124)
    assert cluster.execute("echo back").output == "back\n"


def test_changed_ps1_and_stty_change_nothing(cluster: Cluster) -> None:
    cluster.execute("PS1='\\u@\\h:\\w\\$ '; stty sane echo icanon 2>/dev/null")
    assert cluster.execute("echo plain; (exit 4)").output == "plain\n"
    assert cluster.execute("(exit 4)").exit_code == 4


def test_background_flood_does_not_hold_the_next_step(cluster: Cluster, other_cluster: Cluster) -> None:
    cluster.execute("(yes $'\\x1e0\\x1f flood' &) ; sleep 0.2")
    with answering(other_cluster) as answers:
        for _ in range(5):
            start = time.monotonic()
            result = cluster.execute("echo ok; (exit 3)", timeout_s=2)
            assert time.monotonic() - start < 2 + 1.5
            assert (result.exit_code, result.timed_out) == (3, False)
            assert len(result.output) < cluster.config.max_output_bytes + 200
    assert_answered(answers)
    cluster.execute("pkill -x yes")
    # What the flood left in the pipes drains within a step or two.
    assert any(cluster.execute("echo clean").output == "clean\n" for _ in range(5))


def test_shell_that_stops_reading_cannot_block_the_write(cluster: Cluster, other_cluster: Cluster) -> None:
    # The shell stops itself after its prompt; a command far larger than the pty's input queue must
    # not block the harness in write(2), and the step ends within its limit plus the interrupt grace.
    cluster.execute("(sleep 0.2; kill -STOP $$) &")
    time.sleep(0.5)
    with answering(other_cluster) as answers:
        start = time.monotonic()
        result = cluster.execute(": " + "x" * 200_000, timeout_s=2)
        assert time.monotonic() - start < 2 + 1.5
        assert result.timed_out and result.exit_code == 124
        assert "restarted" in result.output
    assert_answered(answers)
    assert cluster.execute("echo back").output == "back\n"


@pytest.mark.parametrize("blocked_in", ["read", "write"])
def test_close_from_another_thread_ends_a_running_step(cluster: Cluster, blocked_in: str) -> None:
    shell = login_shell(cluster)
    if blocked_in == "write":
        shell.run("(sleep 0.2; kill -STOP $$) &", 5)
        time.sleep(0.5)
        command = ": " + "x" * 200_000
    else:
        command = "sleep 60"
    errors: list[BaseException] = []

    def step() -> None:
        try:
            shell.run(command, 60)
        except SandboxError as e:
            errors.append(e)

    thread = threading.Thread(target=step)
    thread.start()
    time.sleep(0.5)
    start = time.monotonic()
    shell.close()
    assert time.monotonic() - start < 1.0
    thread.join(timeout=1.0)
    assert not thread.is_alive()
    assert time.monotonic() - start < 1.0
    assert errors and "closed while a command ran" in str(errors[0])
    assert not shell.is_alive


def test_c1_controls_are_stripped() -> None:
    raw = "\u009b31mred\u009b0m \u0085next\u009dline\ttab\n".encode()
    assert clean_output(raw) == "red nextline\ttab\n"


def test_c1_controls_are_stripped_through_the_shell(cluster: Cluster) -> None:
    result = cluster.execute(r"printf '\xc2\x9b31mred\xc2\x9b0m \xc2\x85x\x1b[2Jy\tz\n'")
    assert result.output == "red xy\tz\n"
