"""Attacks on the control socket: what a node does must cost the host a bounded amount.

Each test is an attack a node can make through its socket (from inside the node, or on the host path
of the same socket), and each checks the host side: threads and descriptors of this process, log
records, CPU time, and that other clusters and nodes still get their answers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from hpcgym.runtime import Cluster, Runtime, WireReply
from hpcgym.runtime import channel as channel_module
from hpcgym.runtime.channel import (
    LOG_BURST,
    MAX_ACTIVE_PER_NODE,
    MAX_WAITING_PER_NODE,
    READ_DEADLINE_S,
    ControlChannel,
    Request,
)

CHANNEL_LOGGER = channel_module.log.name


def frame(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def read_reply(sock: socket.socket) -> dict[str, object]:
    header = sock.recv(4, socket.MSG_WAITALL)
    (length,) = struct.unpack(">I", header)
    return json.loads(sock.recv(length, socket.MSG_WAITALL))


def call(path: Path, payload: bytes, timeout_s: float = 10) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        # A blocking connect, as the stub's, waits while the listen queue is full (a non-blocking
        # one fails with EAGAIN); SO_SNDTIMEO bounds that wait.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(timeout_s), 0))
        sock.connect(str(path))
        sock.settimeout(timeout_s)
        sock.sendall(payload)
        return read_reply(sock)


def socket_of(cluster: Cluster, node: str) -> Path:
    """The node's control socket, reached through its init's root (a path short enough for AF_UNIX)."""
    shell = cluster.nodes[node].ensure_started()
    return Path(f"/proc/{shell.pid1}/root/run/hpcgym/control.sock")


def host_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def host_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def host_sockets_on(path: Path) -> int:
    """Descriptors of this process that are the socket at `path` or connections accepted on it."""
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                ours.add(int(target[8:-1]))
    count = 0
    with open("/proc/net/unix") as table:
        for line in list(table)[1:]:
            fields = line.split()
            if len(fields) == 8 and fields[7] == str(path) and int(fields[6]) in ours:
                count += 1
    return count


# Runs in its own process, so that its descriptors are not counted as the server's: tries to open N
# connections to one socket without ever sending, and holds those it got until its stdin closes.
# Once the server stops accepting from this node, the kernel's listen queue fills and connect()
# fails with EAGAIN: that wait is the node's cost, not the host's.
FLOOD = textwrap.dedent(
    """
    import json, socket, sys, time
    path, count = sys.argv[1], int(sys.argv[2])
    socks, patience_s, kernel_full = [], 0.5, 0
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        give_up = time.monotonic() + patience_s
        while True:
            try:
                sock.connect(path)
                socks.append(sock)
                break
            except BlockingIOError:
                if time.monotonic() > give_up:
                    kernel_full += 1
                    patience_s = 0.0
                    sock.close()
                    break
                time.sleep(0.001)
    print(json.dumps({"connected": len(socks), "kernel_full": kernel_full}), flush=True)
    sys.stdin.read()
    """
)


def test_a_connection_flood_costs_bounded_threads_and_fds(
    runtime: Runtime, cluster: Cluster, other_cluster: Cluster
) -> None:
    attacked = socket_of(cluster, "login01")
    neighbour = socket_of(cluster, "compute-01")
    assert other_cluster.execute("true").exit_code == 0
    threads0, fds0 = host_threads(), host_fds()
    flood = subprocess.Popen(
        [sys.executable, "-c", FLOOD, str(attacked), "2000"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert flood.stdout is not None
        report = json.loads(flood.stdout.readline())
        threads1, fds1, held = host_threads(), host_fds(), host_sockets_on(attacked)
        print(f"flood {report}: threads {threads0} -> {threads1}, fds {fds0} -> {fds1}, {held} on the socket")
        assert report["connected"] + report["kernel_full"] == 2000
        # The server took its fill, and the kernel queue behind it filled too.
        assert report["connected"] >= MAX_ACTIVE_PER_NODE + MAX_WAITING_PER_NODE
        assert report["kernel_full"] > 0
        # The listener and what it accepted, exactly; the totals leave room for the warm pool,
        # which may be making a cluster in the background meanwhile.
        assert held <= 1 + MAX_ACTIVE_PER_NODE + MAX_WAITING_PER_NODE
        assert threads1 - threads0 <= MAX_ACTIVE_PER_NODE + 8
        assert fds1 - fds0 <= MAX_ACTIVE_PER_NODE + MAX_WAITING_PER_NODE + 24
        # Other nodes, of this cluster and of another one, are not counted against the flooded one.
        start = time.monotonic()
        result = other_cluster.execute("sinfo -N")
        assert result.exit_code == 0
        assert result.output.startswith("login01 ")
        reply = call(neighbour, frame({"v": 1, "argv": ["sinfo"], "cwd": "/"}))
        assert reply["exit_code"] == 0 and str(reply["stdout"]).startswith("compute-01 ")
        assert time.monotonic() - start < READ_DEADLINE_S
    finally:
        flood.kill()
        flood.wait()
    # And the flooded node itself answers once its flood has gone.
    reply = call(attacked, frame({"v": 1, "argv": ["sinfo"], "cwd": "/"}), timeout_s=30)
    assert str(reply["stdout"]).startswith("login01 ")


SLOW_LORIS = textwrap.dedent(
    """
    import select, socket, struct, time
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect("/run/hpcgym/control.sock")
    start = time.monotonic()
    message = struct.pack(">I", 64) + b"x" * 64
    answer = b""
    for byte in message[:5]:  # a byte every 4 s: never idle as long as the old per-recv timeout
        try:
            sock.send(bytes([byte]))
        except OSError:
            break
        if select.select([sock], [], [], 4.0)[0]:
            answer = sock.recv(4096)
            break
    print(f"after {time.monotonic() - start:.1f} s: {answer[4:]!r}")
    """
)


def test_b_slow_loris_is_cut_off_at_the_request_deadline(cluster: Cluster) -> None:
    result = cluster.execute(f"python3 - <<'EOF'\n{SLOW_LORIS}EOF", timeout_s=40)
    print(result.output)
    assert "malformed request" in result.output and "not complete within" in result.output
    elapsed_s = float(result.output.split("after ", 1)[1].split(" s:")[0])
    assert READ_DEADLINE_S - 0.5 <= elapsed_s <= READ_DEADLINE_S + 2


def test_c_deeply_nested_json_gets_an_error_reply(cluster: Cluster) -> None:
    path = socket_of(cluster, "login01")
    body = b"[" * 200_000
    reply = call(path, struct.pack(">I", len(body)) + body)
    assert reply["exit_code"] == 1
    assert "malformed request" in str(reply["stderr"]) and "nested too deeply" in str(reply["stderr"])
    body = b'{"v": 1, "argv": ["sinfo"], "cwd": "/", "x": ' + b'{"a": ' * 100_000
    reply = call(path, struct.pack(">I", len(body)) + body)
    assert "nested too deeply" in str(reply["stderr"])
    assert cluster.execute("sinfo").exit_code == 0


MALFORMED = [
    b"\x00\x00\x00\x05nope!",
    frame({"v": 2, "argv": ["x"], "cwd": "/"}),
    frame({"v": 1, "argv": [], "cwd": "/"}),
    b"\x7f\xff\xff\xff",
    b"\x00\x00\x00\x03[[[",
]


def test_d_malformed_frames_give_a_bounded_number_of_log_records(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=CHANNEL_LOGGER)
    with runtime.new_cluster(compute_nodes=[]) as cluster:
        path = socket_of(cluster, "login01")
        start = time.monotonic()
        for i in range(10_000):
            reply = call(path, MALFORMED[i % len(MALFORMED)])
            assert "malformed request" in str(reply["stderr"])
        elapsed_s = time.monotonic() - start
        during = [r for r in caplog.records if r.name == CHANNEL_LOGGER]
        print(f"10000 malformed frames in {elapsed_s:.1f} s: {len(during)} log records")
        assert len(during) <= LOG_BURST
        assert cluster.execute("sinfo").exit_code == 0
    # Closing the node's socket reports what was not logged, in one line.
    records = [r.getMessage() for r in caplog.records if r.name == CHANNEL_LOGGER]
    assert len(records) <= LOG_BURST + 1
    assert any(f"{10_000 - LOG_BURST} more warnings" in message for message in records)


# --- the channel alone, on a socket of its own ------------------------------------------------------


@pytest.fixture
def slow_channel(tmp_path: Path):
    chan = ControlChannel()
    delay_s = [0.2]

    def dispatch(request: Request) -> WireReply:
        time.sleep(delay_s[0])
        return WireReply(stdout=request.argv[0])

    chan.bind(tmp_path / "n.sock", "node-n", dispatch, lambda e: None)
    yield tmp_path / "n.sock", delay_s
    chan.close()


def burst(path: Path, count: int) -> list[tuple[float, dict[str, object]]]:
    replies: list[tuple[float, dict[str, object]]] = []
    lock = threading.Lock()
    start = time.monotonic()

    def one(i: int) -> None:
        reply = call(path, frame({"v": 1, "argv": [f"c{i}"], "cwd": "/"}), timeout_s=30)
        with lock:
            replies.append((time.monotonic() - start, reply))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return replies


def test_a_burst_past_every_cap_is_queued_and_served(slow_channel) -> None:
    path, _ = slow_channel
    count = MAX_ACTIVE_PER_NODE + MAX_WAITING_PER_NODE + 30
    replies = burst(path, count)
    assert sorted(str(r["stdout"]) for _, r in replies) == sorted(f"c{i}" for i in range(count))


def test_a_request_that_waits_too_long_is_told_so(slow_channel, monkeypatch: pytest.MonkeyPatch) -> None:
    path, delay_s = slow_channel
    monkeypatch.setattr(channel_module, "WAIT_DEADLINE_S", 0.5)
    delay_s[0] = 3.0
    replies = burst(path, MAX_ACTIVE_PER_NODE + 8)
    served = [(t, r) for t, r in replies if r["exit_code"] == 0]
    refused = [(t, r) for t, r in replies if r["exit_code"] != 0]
    assert len(served) == MAX_ACTIVE_PER_NODE
    assert len(refused) == 8
    # Refused by the wait deadline, with the one-line reply (not a reset), long before a slot freed.
    assert all(r["stderr"] == "hpcgym: too many requests in flight\n" for _, r in refused)
    assert all(t < 2.0 for t, _ in refused)


EMFILE = textwrap.dedent(
    """
    import json, os, resource, socket, struct, sys, time
    from hpcgym.runtime.channel import ControlChannel, WireReply
    path = sys.argv[1]
    chan = ControlChannel()
    chan.bind(path, "node-e", lambda request: WireReply(stdout="ok"), lambda e: None)
    time.sleep(0.2)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 16, hard))
    fillers = []
    try:
        while True:
            fillers.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    os.close(fillers.pop())
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # the last descriptor
    client.connect(path)  # the server's accept() now fails with EMFILE
    body = json.dumps({"v": 1, "argv": ["x"], "cwd": "/"}).encode()
    client.sendall(struct.pack(">I", len(body)) + body)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(2.0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    for fd in fillers:
        os.close(fd)
    client.settimeout(10)
    (length,) = struct.unpack(">I", client.recv(4, socket.MSG_WAITALL))
    reply = json.loads(client.recv(length, socket.MSG_WAITALL))
    print(json.dumps({"cpu_s": cpu_s, "reply": reply}))
    """
)


def test_accept_out_of_descriptors_does_not_spin(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EMFILE, str(tmp_path / "e.sock")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout.splitlines()[-1])
    print(f"2 s of EMFILE on accept: {result['cpu_s']:.2f} s of CPU")
    assert result["cpu_s"] < 0.3
    # Once descriptors are back, the waiting connection is served.
    assert result["reply"]["stdout"] == "ok"


def test_is_cancelled_works_past_descriptor_1023(tmp_path: Path) -> None:
    # select() refuses descriptors >= FD_SETSIZE; a busy runtime has them.
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] <= 1500:
        pytest.skip("needs a descriptor limit above 1500")
    a, b = socket.socketpair()
    high = socket.socket(fileno=os.dup2(a.fileno(), 1500))
    a.close()
    try:
        request = Request("n", ["x"], "/", high)
        assert not request.is_cancelled()
        b.close()
        assert request.is_cancelled()
    finally:
        high.close()


def test_lone_surrogates_in_a_request_are_malformed() -> None:
    from hpcgym.runtime.channel import MalformedRequest, parse_request

    with pytest.raises(MalformedRequest):
        parse_request(b'{"v": 1, "argv": ["munge", "-o", "/root/a\\ud800b"]}')
    with pytest.raises(MalformedRequest):
        parse_request(b'{"v": 1, "argv": ["ssh", "login01", "cat"], "stdin": "\\ud800"}')
    assert parse_request(b'{"v": 1, "argv": ["sinfo"]}') == (["sinfo"], "/", None)
