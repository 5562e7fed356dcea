"""The native tool client against the Python one, byte for byte: requests, output, exit codes, errors.

Both run under the same tool names against one fake controller bound at /run/hpcgym/control.sock
(a bwrap mount namespace puts it there), which records each request and answers what a case says.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpcgym.errors import BuildError, MissingTool
from hpcgym.imagebuild.client import (
    BINARY,
    INIT_SOURCE,
    PYTHON_CLIENT,
    SOURCE,
    compile_client,
    compile_client_cmd,
    toolchain_version,
    zig_target,
)
from tests.conftest import REPO, require_toolchain

STUBS = REPO / "stubs"
TOOLS = ("sinfo", "scontrol", "munge", "ssh", "sbatch", "systemctl")


def python_client() -> Path:
    # The script under its name in the repository, whichever of the two layouts it has.
    for name in (PYTHON_CLIENT, BINARY):
        path = STUBS / name
        if path.is_file() and path.read_bytes().startswith(b"#!"):
            return path
    raise AssertionError("stubs/ has no Python client")


@pytest.fixture(scope="module")
def native_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_toolchain()
    out = tmp_path_factory.mktemp("native") / BINARY
    compile_client(STUBS, out)
    return out


class FakeController:
    """Answers each connection with `self.reply` (raw bytes: header included) and records the request."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[bytes] = []
        self.reply = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(directory / "control.sock"))
        os.chmod(directory / "control.sock", 0o666)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                data = b""
                try:
                    while len(data) < 4 or len(data) < 4 + struct.unpack(">I", data[:4])[0]:
                        chunk = conn.recv(1 << 16)
                        if not chunk:
                            break
                        data += chunk
                    self.requests.append(data)
                    conn.sendall(self.reply)
                except OSError:
                    pass


@pytest.fixture(scope="module")
def bench_dirs(
    tmp_path_factory: pytest.TempPathFactory, native_binary: Path
) -> Iterator[tuple[Path, FakeController]]:
    if os.geteuid() != 0 or shutil.which("bwrap") is None:
        pytest.skip("needs root and bwrap to put a socket at /run/hpcgym/control.sock")
    root = tmp_path_factory.mktemp("clients")
    root.chmod(0o755)
    for flavour, client in (("native", native_binary), ("python", python_client())):
        (root / flavour).mkdir()
        shutil.copyfile(client, root / flavour / "client")
        (root / flavour / "client").chmod(0o755)
        for tool in TOOLS:
            os.link(root / flavour / "client", root / flavour / tool)
    (root / "run").mkdir()
    controller = FakeController(root / "run")
    yield root, controller
    controller.sock.close()


def reply_of(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def framed(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@dataclass(frozen=True)
class Case:
    argv: tuple[bytes, ...] = (b"sinfo",)
    reply: bytes = reply_of({"stdout": "ok\n", "stderr": "", "exit_code": 0})
    stdin: bytes | None = None  # None: /dev/null
    script: bytes = b""  # shell lines run first (cd somewhere, close stdin, ...)
    cwd: bytes = b"/"


CASES = {
    "plain": Case(),
    "args": Case((b"sinfo", b"-N", b"-o", b'%N "%t" \\ \t\n\x01\x7f')),
    "unicode args": Case((b"scontrol", b"caf\xc3\xa9", b"\xf0\x9f\x98\x80", b"\xe2\x82\xac")),
    "undecodable args": Case(
        (b"sinfo", b"\xff", b"a\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80")
    ),
    "unicode output": Case(
        reply=reply_of({"stdout": "caf\u00e9 \U0001f600\n", "stderr": "\u2013\n", "exit_code": 3})
    ),
    "escaped bytes in output": Case(
        reply=reply_of({"stdout": "a\udcff\udc80b\n", "stderr": "e\udcffe\n", "exit_code": 1})
    ),
    "exit codes wrap": Case(reply=reply_of({"stdout": "", "stderr": "", "exit_code": 257})),
    "negative exit": Case(reply=reply_of({"stdout": "", "stderr": "", "exit_code": -1})),
    "no exit code": Case(reply=reply_of({"stdout": "x", "stderr": "y"})),
    "true exit code": Case(reply=reply_of({"stdout": "", "exit_code": True})),
    "float exit code": Case(reply=reply_of({"stdout": "", "exit_code": 2.7})),
    "repeated keys": Case(reply=framed(b'{"stdout": "a", "stdout": "b", "exit_code": 4, "exit_code": 5}')),
    "extra fields": Case(
        reply=framed(b' {"x": [1, {"y": null}, -2.5e3, true, "\\u00e9"], "stdout": "\\/ok\\n"} ')
    ),
    "surrogate pair": Case(reply=framed(b'{"stdout": "\\ud83d\\ude00\\n", "exit_code": 0}')),
    "not json": Case(reply=framed(b"{not json")),
    "extra data": Case(reply=framed(b'{"stdout": "a"} {}')),
    "control char in string": Case(reply=framed(b'{"stdout": "a\nb"}')),
    "reply too large": Case(reply=struct.pack(">I", 16 * 1024 * 1024 + 1)),
    "short reply": Case(reply=struct.pack(">I", 100) + b'{"stdout"'),
    "no reply": Case(reply=b""),
    "munge reads stdin": Case(
        (b"munge", b"-n"), stdin=b"payload \xff\xe2\x82A \xed\xa0\x80 \xf0\x9f\x98\x80 end\xe2"
    ),
    "ssh reads empty stdin": Case((b"ssh", b"compute-01", b"hostname"), stdin=b""),
    "sbatch stdin closed": Case((b"sbatch",), script=b"exec 0<&-\n"),
    "sinfo leaves stdin alone": Case((b"sinfo",), stdin=b"never read"),
    # The cap falls inside a character: its first byte is an invalid subpart of its own.
    "stdin capped": Case((b"munge",), stdin=b"a" + b"\xc3\xa9" * (600 * 1024)),
    "unicode cwd": Case(cwd="/run/w/caf\u00e9".encode()),
    "undecodable cwd": Case(cwd=b"/run/w/x\xff"),
    "deleted cwd": Case(script=b"mkdir -p /run/gone && cd /run/gone && rmdir /run/gone\n"),
    "exec -a": Case(script=b"exec -a fakename sinfo -N\n"),
}


def run_client(
    root: Path, flavour: str, case: Case, controller: FakeController
) -> tuple[bytes, bytes, bytes, int]:
    controller.requests.clear()
    controller.reply = case.reply
    argv = " ".join("'" + a.decode("latin-1").replace("'", "'\\''") + "'" for a in case.argv)
    script = (
        b"mkdir -p "
        + case.cwd
        + b" 2>/dev/null; cd "
        + case.cwd
        + b"\n"
        + case.script
        + argv.encode("latin-1")
        + b"\n"
    )
    stdin_file = root / "stdin"
    stdin_file.write_bytes(case.stdin or b"")
    sandbox = [
        *("bwrap", "--dev-bind", "/", "/", "--tmpfs", "/run", "--bind", str(root / "run"), "/run/hpcgym"),
        *("--setenv", "PATH", f"{root / flavour}:/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8"),
        *("--unsetenv", "LC_ALL", "--"),
    ]
    with open(stdin_file if case.stdin is not None else os.devnull, "rb") as stdin:
        done = subprocess.run([*sandbox, "bash", "-c", script], stdin=stdin, capture_output=True, timeout=30)
    request = controller.requests[0] if controller.requests else b""
    return request, done.stdout, done.stderr, done.returncode


@pytest.mark.parametrize("name", list(CASES))
def test_native_client_matches_the_python_client(bench_dirs: tuple[Path, FakeController], name: str) -> None:
    root, controller = bench_dirs
    case = CASES[name]
    native = run_client(root, "native", case, controller)
    python = run_client(root, "python", case, controller)
    assert native == python
    # Every case reaches the controller, so the comparison covers the request too.
    assert native[0].startswith(b"\x00")


def test_unreachable_controller_text(bench_dirs: tuple[Path, FakeController]) -> None:
    root, _ = bench_dirs
    results = []
    for flavour in ("native", "python"):
        done = subprocess.run(
            [
                "bwrap",
                "--dev-bind",
                "/",
                "/",
                "--tmpfs",
                "/run",
                "--",
                str(root / flavour / "systemctl"),
                "status",
            ],
            capture_output=True,
            timeout=30,
        )
        results.append((done.stdout, done.stderr, done.returncode))
    assert results[0] == results[1]
    assert results[0] == (
        b"",
        b"systemctl: error: cannot reach the cluster controller at /run/hpcgym/control.sock\n",
        1,
    )


def test_the_build_is_reproducible_and_carries_no_path(native_binary: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "some" / "other" / "place"
    elsewhere.mkdir(parents=True)
    shutil.copyfile(STUBS / SOURCE, elsewhere / SOURCE)
    again = tmp_path / "again"
    compile_client(elsewhere, again)
    assert again.read_bytes() == native_binary.read_bytes()
    data = native_binary.read_bytes()
    assert data.startswith(b"\x7fELF")
    for leak in (str(REPO).encode(), str(tmp_path).encode(), b"/tmp/", b"/root/"):
        assert leak not in data
    assert len(data) < 256 * 1024
    done = subprocess.run(["file", str(native_binary)], capture_output=True, text=True)
    assert "statically linked" in done.stdout


def test_flags_are_fixed_and_relative() -> None:
    cmd = compile_client_cmd(zig_target("x86_64"))
    assert cmd[-1] == SOURCE and "/" not in cmd[-1]
    assert "-static" in cmd and "-Wl,--build-id=none" in cmd
    with pytest.raises(BuildError, match="no static target"):
        zig_target("sparc")


def test_a_missing_toolchain_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(
        "hpcgym.imagebuild.client.zig_cmd", lambda: [str(tmp_path / "no-such-python"), "-m", "ziglang"]
    )
    with pytest.raises(MissingTool, match="zig compiler") as caught:
        compile_client(STUBS, tmp_path / "out")
    assert "pip install" in str(caught.value)
    monkeypatch.setattr("hpcgym.imagebuild.client.zig_cmd", lambda: ["/bin/echo"])
    with pytest.raises(BuildError, match="pinned to zig"):
        toolchain_version()


def test_the_node_init_builds_reproducibly_with_the_same_toolchain(tmp_path: Path) -> None:
    require_toolchain()
    first, elsewhere = tmp_path / "first", tmp_path / "some" / "other" / "place"
    elsewhere.mkdir(parents=True)
    shutil.copyfile(STUBS / INIT_SOURCE, elsewhere / INIT_SOURCE)
    compile_client(STUBS, first, source=INIT_SOURCE, what="node init")
    compile_client(elsewhere, tmp_path / "again", source=INIT_SOURCE, what="node init")
    data = first.read_bytes()
    assert (tmp_path / "again").read_bytes() == data
    for leak in (str(REPO).encode(), str(tmp_path).encode(), b"/tmp/", b"/root/"):
        assert leak not in data
    done = subprocess.run(["file", str(first)], capture_output=True, text=True)
    assert "statically linked" in done.stdout


def test_a_missing_toolchain_fails_the_init_build_clearly(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(
        "hpcgym.imagebuild.client.zig_cmd", lambda: [str(tmp_path / "no-such-python"), "-m", "ziglang"]
    )
    with pytest.raises(MissingTool, match="zig compiler"):
        compile_client(STUBS, tmp_path / "out", source=INIT_SOURCE, what="node init")
