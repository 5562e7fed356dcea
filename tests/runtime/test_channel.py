"""The control channel: framing, node identity, malformed messages, controller failures."""

from __future__ import annotations

import json
import socket
import struct
import threading
from pathlib import Path

import pytest

from hpcgym.errors import ControllerError
from hpcgym.runtime import Cluster, Runtime, WireReply
from hpcgym.runtime.channel import ControlChannel, Request


def call(path: Path, payload: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(payload)
        header = sock.recv(4, socket.MSG_WAITALL)
        (length,) = struct.unpack(">I", header)
        return json.loads(sock.recv(length, socket.MSG_WAITALL))


def frame(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


@pytest.fixture
def channel(tmp_path: Path):
    chan = ControlChannel()
    seen: list[Request] = []

    def dispatch(request: Request) -> WireReply:
        seen.append(request)
        return WireReply(stdout=" ".join(request.argv), exit_code=3)

    chan.bind(tmp_path / "a.sock", "node-a", dispatch, lambda e: None)
    chan.bind(tmp_path / "b.sock", "node-b", dispatch, lambda e: None)
    yield chan, seen, tmp_path
    chan.close()


def test_request_reply_and_identity_by_socket(channel) -> None:
    _, seen, tmp = channel
    reply = call(tmp / "b.sock", frame({"v": 1, "argv": ["sinfo", "-N", "--long"], "cwd": "/root"}))
    assert reply == {"stdout": "sinfo -N --long", "stderr": "", "exit_code": 3}
    assert seen[-1].node == "node-b"
    assert seen[-1].argv == ["sinfo", "-N", "--long"]
    # A request cannot claim another node: the "node" field is simply ignored.
    call(tmp / "a.sock", frame({"v": 1, "argv": ["x"], "cwd": "/", "node": "node-b"}))
    assert seen[-1].node == "node-a"


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x00\x00\x05nope!",
        frame({"v": 2, "argv": ["x"], "cwd": "/"}),
        frame({"v": 1, "argv": [], "cwd": "/"}),
        frame({"v": 1, "argv": [1, 2], "cwd": "/"}),
        frame(["not", "an", "object"]),
        b"\x7f\xff\xff\xff",
        b"\x00\x00\x00\x10\xff\xfe\xfd",
    ],
)
def test_malformed_requests_are_rejected_and_the_server_lives(channel, payload: bytes) -> None:
    _, seen, tmp = channel
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(tmp / "a.sock"))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        answer = sock.recv(1 << 16)
    assert b"malformed request" in answer
    assert not seen
    reply = call(tmp / "a.sock", frame({"v": 1, "argv": ["ok"], "cwd": "/"}))
    assert reply["stdout"] == "ok"


def test_many_concurrent_clients(channel) -> None:
    _, _, tmp = channel
    results: list[dict[str, object]] = []

    def one(i: int) -> None:
        results.append(call(tmp / "a.sock", frame({"v": 1, "argv": [f"c{i}"], "cwd": "/"})))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["stdout"] for r in results) == sorted(f"c{i}" for i in range(40))


def test_stub_reaches_the_handler_from_every_node(runtime: Runtime) -> None:
    calls: list[tuple[str, list[str], str]] = []

    def handler(node: str, argv: list[str], cwd: str, stdin: str | None, uid: int) -> WireReply:
        calls.append((node, argv, cwd))
        return WireReply(stdout=f"answer from {node}\n", stderr="warn\n", exit_code=2)

    with runtime.new_cluster(compute_nodes=["compute-01"], handler=handler) as cluster:
        result = cluster.execute("cd /etc && sinfo -N -l --partition 'gpu nodes'")
        assert result.output == "answer from login01\nwarn\n"
        assert result.exit_code == 2
        assert calls[-1] == ("login01", ["sinfo", "-N", "-l", "--partition", "gpu nodes"], "/etc")
        cluster.execute("ssh compute-01")
        assert cluster.execute("systemctl status slurmd").output.startswith("answer from compute-01")
        assert calls[-1][:2] == ("compute-01", ["systemctl", "status", "slurmd"])


def test_controller_failure_discards_the_episode(runtime: Runtime) -> None:
    def broken(node: str, argv: list[str], cwd: str, stdin: str | None, uid: int) -> WireReply:
        raise RuntimeError("controller bug")

    with runtime.new_cluster(handler=broken) as cluster, pytest.raises(ControllerError):
        cluster.execute("sinfo")


def test_sandbox_cannot_remove_or_replace_its_socket(cluster: Cluster) -> None:
    result = cluster.execute("rm -f /run/hpcgym/control.sock; mv /run/hpcgym /run/x; ls /run/hpcgym")
    assert "control.sock" in result.output
    assert cluster.execute("sinfo").exit_code == 0
