"""One-line errors with a hint where a user's input is wrong, before any cluster starts."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from hpcgym.errors import ConfigError, EndpointError
from hpcgym.interfaces import REPO_ROOT, cli, default_images_dir
from hpcgym.interfaces.chat import ChatEndpoint
from hpcgym.interfaces.openenv.server import app


def test_exec_missing_slurm_conf(tmp_path, capsys):
    # The images do not exist either: the conf is read first, so its error is the one shown.
    code = cli.main(["exec", "--images", str(tmp_path), "--slurm-conf", str(tmp_path / "nope.conf"), "true"])
    err = capsys.readouterr().err
    assert code == 1
    message, hint = err.rstrip("\n").split("\n")
    assert message.startswith("hpcgym: error: cannot read --slurm-conf") and "nope.conf" in message
    assert hint.startswith("  hint: ")


def test_default_images_do_not_depend_on_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.delenv("HPCGYM_IMAGES", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_images_dir() == REPO_ROOT / "build" / "images"
    assert (REPO_ROOT / "pyproject.toml").is_file()
    monkeypatch.setenv("HPCGYM_IMAGES", "rel/images")
    assert default_images_dir() == tmp_path / "rel" / "images"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("HPCGYM_MAX_SESSIONS", "abc", "is not a whole number"),
        ("HPCGYM_MAX_SESSIONS", "0", "at least 1"),
        ("HPCGYM_STEP_TIMEOUT_S", "fast", "is not a number"),
        ("HPCGYM_MAX_STEPS", "1.5", "is not a whole number"),
    ],
)
def test_bad_server_setting_is_a_config_error(name, value, words):
    with pytest.raises(ConfigError) as caught:
        app.ServerSettings.from_environ({name: value})
    assert name in str(caught.value) and words in str(caught.value)
    assert caught.value.hint


def test_bad_server_setting_exits_2_with_one_line(monkeypatch, capsys):
    monkeypatch.setenv("HPCGYM_MAX_SESSIONS", "many")
    with pytest.raises(SystemExit) as caught:
        app.main([])
    assert caught.value.code == 2
    lines = capsys.readouterr().err.rstrip("\n").split("\n")
    assert lines[0].startswith("hpcgym-server: error: HPCGYM_MAX_SESSIONS='many'") and "hint:" in lines[1]


def test_server_help_lists_every_setting_with_its_default(capsys):
    with pytest.raises(SystemExit):
        app.main(["--help"])
    shown = capsys.readouterr().out
    documented = set(re.findall(r"^\s+((?:HPCGYM|OPENENV)_[A-Z_]+)", app.__doc__ or "", re.MULTILINE))
    assert len(documented) >= 10
    for name in documented:
        line = next(line for line in shown.splitlines() if line.strip().startswith(name))
        assert "(default " in line
    assert "HPCGYM_MAX_SESSIONS       concurrent sessions (default 256)" in shown


def test_unreachable_model_endpoint_is_an_endpoint_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    endpoint = ChatEndpoint(f"http://127.0.0.1:{port}/v1", "m", timeout_s=5)
    with pytest.raises(EndpointError) as caught:
        endpoint.reply([{"role": "user", "content": "hi"}])
    assert f"127.0.0.1:{port}/v1/chat/completions" in caught.value.message
    assert "\n" not in caught.value.message and "--base-url" in (caught.value.hint or "")


def test_model_endpoint_http_error_is_an_endpoint_error():
    import httpx

    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(404, text="no model")))
    with pytest.raises(EndpointError, match="HTTP 404"):
        ChatEndpoint("http://x/v1", "m", client=client).reply([{"role": "user", "content": "hi"}])


def test_images_default_is_in_cli_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["exec", "--help"])
    assert str(Path(REPO_ROOT) / "build" / "images") in capsys.readouterr().out.replace("\n", "")


def test_health_names_the_container_flags_when_sandboxes_are_refused(monkeypatch):
    from types import SimpleNamespace

    from fastapi import FastAPI
    from starlette.testclient import TestClient

    from hpcgym.errors import SandboxError

    fastapi_app = FastAPI()
    app.replace_health(fastapi_app, SimpleNamespace(failure=None, ready=0))  # type: ignore[arg-type]
    client = TestClient(fastapi_app)
    assert client.get("/health").status_code == 200

    class Refusing:
        def new_cluster(self):  # type: ignore[no-untyped-def]
            raise SandboxError("bwrap: Creating new namespace failed: Operation not permitted")

    failure = app.probe_sandbox(Refusing())  # type: ignore[arg-type]
    assert isinstance(failure, SandboxError)
    fastapi_app.state.hpcgym_probe_failure = failure
    monkeypatch.setattr(app, "in_container", lambda: True)
    response = client.get("/health")
    assert response.status_code == 503 and "Operation not permitted" in response.json()["detail"]
    for flag in ("SYS_ADMIN", "SYS_PTRACE", "seccomp=unconfined", "apparmor=unconfined", "systempaths"):
        assert flag in response.json()["hint"]
    # The Containerfile documents the same flags.
    containerfile = (REPO_ROOT / "Containerfile").read_text()
    assert all(flag in containerfile for flag in app.CONTAINER_FLAGS.split() if flag.startswith("--"))


def test_probe_passes_where_a_cluster_starts():
    from contextlib import nullcontext

    class Starting:
        def new_cluster(self):  # type: ignore[no-untyped-def]
            return nullcontext()

    assert app.probe_sandbox(Starting()) is None  # type: ignore[arg-type]


def test_server_that_cannot_start_sandboxes_exits_2_naming_the_flags(monkeypatch, capsys):
    from hpcgym.errors import SandboxError

    def refuse(settings):  # type: ignore[no-untyped-def]
        raise SandboxError("command exited 1: /usr/bin/fuse-overlayfs -o lowerdir=...")

    monkeypatch.setattr(app, "build_app", refuse)
    monkeypatch.setattr(app, "in_container", lambda: True)
    with pytest.raises(SystemExit) as caught:
        app.main([])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("hpcgym-server: error: command exited 1") and "--cap-add SYS_ADMIN" in err
