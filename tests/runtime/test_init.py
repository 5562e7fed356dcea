"""The node's init (stubs/hpcgym-init.c) and its host end (runtime/init.py).

The binary is driven directly over a socket pair (it serves the same requests as any process, not
only as PID 1), then inside real episodes: PID 1 looks like systemd, daemons start through it, and a
daemon's real ending (SIGTERM, SIGKILL, an exit code) is what systemd reports and acts on.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcgym.imagebuild.client import INIT_BINARY, INIT_SOURCE, compile_client
from hpcgym.runtime.init import (
    _MESSAGE,
    EV_EXITED,
    FD_ENV,
    INIT_ARGV,
    IO_PIPE,
    MAGIC,
    REP_SPAWNED,
    InitError,
    InitTimeout,
    NodeInit,
    SpawnFailed,
    Stdio,
)
from tests.conftest import REPO, require_toolchain

ENV = {"PATH": "/usr/bin:/bin"}


@pytest.fixture(scope="module")
def init_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_toolchain()
    out = tmp_path_factory.mktemp("init") / INIT_BINARY
    compile_client(REPO / "stubs", out, source=INIT_SOURCE, what="node init")
    return out


@pytest.fixture
def init(init_binary: Path) -> Iterator[tuple[NodeInit, subprocess.Popen[bytes]]]:
    host, node = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen(
        [str(init_binary)],
        env={FD_ENV: str(node.fileno())},
        pass_fds=(node.fileno(),),
        stdin=subprocess.DEVNULL,
    )
    node.close()
    client = NodeInit(host, "test-node")
    yield client, proc
    client.close()  # init exits when the host's end closes
    assert proc.wait(timeout=5) == 1


def wait_status(client: NodeInit, pid: int) -> int:
    deadline = time.monotonic() + 5
    while (status := client.exit_status(pid)) is None:
        assert time.monotonic() < deadline, "init pushed no exit status"
        time.sleep(0.01)
    return status


def test_spawn_reports_pid_and_real_exit_status(init: tuple[NodeInit, subprocess.Popen[bytes]]) -> None:
    client, _ = init
    pid = client.spawn("/bin/sh", ["sh", "-c", "exit 3"], ENV)
    assert os.WEXITSTATUS(wait_status(client, pid)) == 3
    pid = client.spawn("sleep", ["sleeper", "30"], ENV)  # a bare name: looked up in the child's PATH
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleeper\x0030\x00"
    os.kill(pid, signal.SIGTERM)
    status = wait_status(client, pid)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_stand_in_daemon_reads_a_pipe_it_holds_itself(init: tuple[NodeInit, subprocess.Popen[bytes]]) -> None:
    client, _ = init
    pid = client.spawn("/bin/cat", ["munged"], ENV, stdio=Stdio(IO_PIPE))
    time.sleep(0.1)
    assert client.exit_status(pid) is None  # cat blocks: the write end is its own fd 3
    assert os.readlink(f"/proc/{pid}/fd/0").startswith("pipe:")
    assert os.readlink(f"/proc/{pid}/fd/3") == os.readlink(f"/proc/{pid}/fd/0")
    assert Path(f"/proc/{pid}/cwd").resolve() == Path("/")
    os.kill(pid, signal.SIGKILL)
    assert os.WTERMSIG(wait_status(client, pid)) == signal.SIGKILL


def test_a_program_that_cannot_run_is_its_errno(init: tuple[NodeInit, subprocess.Popen[bytes]]) -> None:
    client, _ = init
    with pytest.raises(SpawnFailed) as missing:
        client.spawn("/nonexistent/daemon", ["daemon"], ENV)
    assert missing.value.errno == errno.ENOENT
    with pytest.raises(SpawnFailed) as bad_dir:
        client.spawn("/bin/true", ["true"], ENV, cwd="/nonexistent")
    assert bad_dir.value.errno == errno.ENOENT
    # init goes on serving after each failure.
    pid = client.spawn("/bin/true", ["true"], ENV)
    assert os.WEXITSTATUS(wait_status(client, pid)) == 0


def test_malformed_request_is_refused_and_init_goes_on(
    init: tuple[NodeInit, subprocess.Popen[bytes]],
) -> None:
    client, _ = init
    client.sock.send(b"\x00" * 7)  # shorter than any header
    client.sock.send(struct.pack("<8I", MAGIC, 1, 77, 0, 0, 0, 100_000, 0) + b"\0" * 48)  # argc over the cap
    pid = client.spawn("/bin/true", ["true"], ENV)
    assert os.WEXITSTATUS(wait_status(client, pid)) == 0


def test_main_child_ends_init_with_its_status(init_binary: Path) -> None:
    host, node = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen([str(init_binary)], env={FD_ENV: str(node.fileno())}, pass_fds=(node.fileno(),))
    node.close()
    client = NodeInit(host, "test-node")
    client.spawn("/bin/sh", ["sh", "-c", "sleep 0.1; exit 7"], ENV, main=True)
    assert proc.wait(timeout=5) == 7
    client.close()


def hostile_peer() -> tuple[NodeInit, socket.socket]:
    host, node = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    return NodeInit(host, "test-node"), node


def test_host_end_takes_nothing_malformed_and_waits_a_bounded_time() -> None:
    # What the host hears is checked: a wrong size, a wrong magic, silence past the deadline, a
    # closed peer are each an InitError (infrastructure), and a broken init stays refused.
    for reply in (b"x" * 3, b"y" * (_MESSAGE.size + 40), _MESSAGE.pack(0xDEAD, REP_SPAWNED, 1, 5, 0)):
        client, peer = hostile_peer()
        peer.send(reply)
        with pytest.raises(InitError):
            client.spawn("/bin/true", ["true"], ENV, timeout_s=1)
        with pytest.raises(InitError, match="unusable"):
            client.spawn("/bin/true", ["true"], ENV, timeout_s=1)
    client, peer = hostile_peer()
    start = time.monotonic()
    with pytest.raises(InitError, match="in time"):
        client.spawn("/bin/true", ["true"], ENV, timeout_s=0.3)
    assert time.monotonic() - start < 1
    peer.close()
    client, peer = hostile_peer()
    peer.close()
    with pytest.raises(InitError):
        client.spawn("/bin/true", ["true"], ENV, timeout_s=1)


def test_host_keeps_a_bounded_number_of_statuses() -> None:
    client, peer = hostile_peer()
    for pid in range(1, 5001):
        peer.send(_MESSAGE.pack(MAGIC, EV_EXITED, 0, pid, 9))
        if pid % 100 == 0:
            client.exits()
    assert len(client.exits()) <= 4096 and client.exit_status(5000) == 9


# --- in real episodes -------------------------------------------------------------------------------


@pytest.fixture
def episode(runtime):  # type: ignore[no-untyped-def]
    from hpcgym.episode import Episode

    with Episode(runtime) as ep:
        yield ep


def test_pid_1_is_systemd_to_the_node_and_unkillable_from_inside(episode) -> None:  # type: ignore[no-untyped-def]
    assert episode.step("ps -o args= -p 1").output == " ".join(INIT_ARGV) + "\n"
    # /proc/1/exe, environ and mem need ptrace access, which a non-dumpable init refuses.
    assert episode.step("cat /proc/1/comm").output == "systemd\n"
    # Root in the node may not ptrace, signal away or read the memory of its init.
    result = episode.step(
        "kill -9 1; kill -TERM 1; sleep 0.2; cat /proc/1/mem 2>&1 | head -c 60; echo; echo up"
    )
    assert result.output.endswith("up\n")
    assert "Permission denied" in result.output
    assert episode.step("ps -o args= -p 1").output == " ".join(INIT_ARGV) + "\n"


def test_sigterm_ends_munged_cleanly_and_on_abort_leaves_it_down(episode) -> None:  # type: ignore[no-untyped-def]
    # munge.service has Restart=on-abort: SIGTERM is a clean ending (systemd.service(5)), so it
    # stays inactive; before the node's init reported statuses, every death read as SIGKILL and
    # systemd's on-abort brought munged back.
    assert episode.step("kill -TERM $(pidof munged); sleep 0.2; pidof munged; echo rc=$?").output == "rc=1\n"
    status = episode.step("systemctl status munge")
    assert "Active: inactive (dead)" in status.output
    assert "(code=killed, signal=TERM)" in status.output
    assert "munge.service: Deactivated successfully." in status.output
    assert "Scheduled restart job" not in status.output
    assert episode.step("systemctl is-active munge").output == "inactive\n"


def test_sigkill_fails_munged_and_on_abort_restarts_it(episode) -> None:  # type: ignore[no-untyped-def]
    old = episode.step("pidof munged").output.strip()
    episode.step("kill -KILL $(pidof munged); sleep 0.2")
    status = episode.step("systemctl status munge").output
    assert "munge.service: Main process exited, code=killed, status=9/KILL" in status
    assert "Scheduled restart job, restart counter is at 1." in status
    new = episode.step("pidof munged").output.strip()
    assert new and new != old


def test_daemon_start_needs_no_starter_process(episode) -> None:  # type: ignore[no-untyped-def]
    # A daemon is init's own child: no bwrap, bash or setpriv starts it (what issue 16 saw killed).
    result = episode.step("systemctl restart munge; ps -o ppid=,user=,args= -C munged")
    assert result.output.split() == ["1", "munge", "/usr/sbin/munged"]


def test_a_request_init_answers_late_is_a_timeout_and_the_next_goes_on(
    init: tuple[NodeInit, subprocess.Popen[bytes]],
) -> None:
    """A starved host: init stopped past the deadline of one start. That start fails as a timeout,
    init is not written off, and its late reply (another request's id) is passed over."""
    client, proc = init
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(InitTimeout):
            client.spawn("/bin/sh", ["sh", "-c", "exit 4"], ENV, timeout_s=0.2)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    pid = client.spawn("/bin/sh", ["sh", "-c", "exit 5"], ENV)
    assert os.WEXITSTATUS(wait_status(client, pid)) == 5
