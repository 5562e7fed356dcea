"""The OpenEnv server for real: validation, sessions over the WebSocket, isolation, capacity, auth."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import requests
from fastapi import FastAPI
from openenv.cli._validation import validate_running_environment
from starlette.testclient import TestClient

from hpcgym.interfaces.openenv.client import HpcEnvClient
from hpcgym.interfaces.openenv.models import HpcAction
from hpcgym.interfaces.openenv.server.app import ServerSettings, build_app, replace_health
from hpcgym.interfaces.openenv.server.local import serve
from hpcgym.interfaces.task import EXPLORE

CAPACITY = 3
KEY = "test-key-123"


@pytest.fixture(scope="module")
def url(runtime):
    settings = ServerSettings(max_sessions=CAPACITY, pool_size=2, session_timeout_s=120.0)
    with serve(build_app(settings, runtime=runtime)) as url:
        yield url


@pytest.fixture(scope="module")
def reaping_url(runtime):
    settings = ServerSettings(max_sessions=2, pool_size=0, session_timeout_s=1.0)
    with serve(build_app(settings, runtime=runtime)) as url:
        yield url


@pytest.fixture(scope="module")
def auth_url(runtime):
    settings = ServerSettings(max_sessions=2, pool_size=0, api_key=KEY)
    with serve(build_app(settings, runtime=runtime)) as url:
        yield url


def session(url, **kwargs):
    client = HpcEnvClient(url, **kwargs).sync()
    client.connect()
    return client


def test_openenv_validate_passes(url):
    report = validate_running_environment(url, timeout_s=10)
    failed = [c["id"] for c in report["criteria"] if not c["passed"]]
    assert report["passed"] and not failed, failed
    assert report["mode"] == "simulation"


def test_openenv_validate_passes_against_a_keyed_server_with_netrc(auth_url, tmp_path, monkeypatch):
    # The validator sends no headers; requests, which it uses, reads credentials from $NETRC (the
    # README's route). Without them most of its checks get 401.
    monkeypatch.delenv("NETRC", raising=False)
    assert not validate_running_environment(auth_url, timeout_s=10)["passed"]
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login openenv password {KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    report = validate_running_environment(auth_url, timeout_s=10)
    failed = [c["id"] for c in report["criteria"] if not c["passed"]]
    assert report["passed"] and not failed, failed


@pytest.mark.parametrize(("method", "path"), [("post", "/reset"), ("post", "/step"), ("get", "/state")])
def test_stateless_http_routes_name_the_websocket_and_boot_nothing(auth_url, monkeypatch, method, path):
    from hpcgym.interfaces.openenv.server.environment import HpcEnvironment

    def no_cluster(*args, **kwargs):
        raise AssertionError("an HTTP call reached the environment")

    monkeypatch.setattr(HpcEnvironment, "reset", no_cluster)
    monkeypatch.setattr(HpcEnvironment, "step", no_cluster)
    body = {"action": {"command": "sinfo"}} if path == "/step" else {}
    response = requests.request(
        method, f"{auth_url}{path}", json=body, headers={"X-API-Key": KEY}, timeout=10
    )
    assert response.status_code == 409
    answer = response.json()
    assert answer["websocket"] == "/ws" and answer["code"] == "USE_WEBSOCKET"
    assert f"HTTP {method.upper()} {path}" in answer["detail"] and "/ws" in answer["detail"]
    # The routes stay in the OpenAPI paths, as OpenEnv's simulation mode lists them.
    paths = requests.get(f"{auth_url}/openapi.json", headers={"X-API-Key": KEY}, timeout=10).json()["paths"]
    assert method in paths[path]


def test_step_counts_increase_and_sessions_are_isolated(url):
    a, b = session(url), session(url)
    try:
        start = a.reset(scenario=EXPLORE, seed=1)
        assert start.observation.output.endswith("[root@login01 ~]# ") and start.reward is None
        b.reset(scenario=EXPLORE, seed=1)
        steps = [
            a.step(HpcAction(command=c)).observation.step for c in ("touch /root/a-only", "true", "true")
        ]
        assert steps == [1, 2, 3]
        seen = b.step(HpcAction(command="ls /root/a-only")).observation
        assert seen.exit_code == 2 and "No such file" in seen.output and seen.step == 1
        assert (a.state().step_count, b.state().step_count) == (3, 1)
    finally:
        a.close()
        b.close()


def test_same_scenario_and_seed_give_one_start_state(url):
    # A GRPO group: every member resets to the same scenario and seed.
    a, b = session(url), session(url)
    try:
        starts = [c.reset(scenario=EXPLORE, seed=42).observation for c in (a, b)]
        states = [c.state() for c in (a, b)]
        assert starts[0].output == starts[1].output
        assert (states[0].seed, states[0].now_s) == (states[1].seed, states[1].now_s)
        assert states[0].episode_id != states[1].episode_id
    finally:
        a.close()
        b.close()


def test_capacity_plus_one_is_refused_and_a_closed_session_frees_its_slot(url):
    held = [session(url) for _ in range(CAPACITY)]
    try:
        for client in held:
            client.reset(scenario=EXPLORE)
        with pytest.raises(RuntimeError, match=r"at capacity: 3/3.*CAPACITY_REACHED"):
            session(url).reset()
        held.pop().close()
        time.sleep(0.2)
        late = session(url)
        held.append(late)
        assert late.reset(scenario=EXPLORE).observation.step == 0
    finally:
        for client in held:
            client.close()


def test_agent_mistakes_are_observations_and_misuse_is_a_clear_error(url):
    client = session(url)
    try:
        with pytest.raises(RuntimeError, match="step before reset"):
            client.step(HpcAction(command="true"))
        with pytest.raises(RuntimeError, match="unknown scenario 'hpc_nope'"):
            client.reset(scenario="hpc_nope")
        client.reset(scenario=EXPLORE)
        result = client.step(HpcAction(command="no-such-tool --help"))
        assert result.observation.exit_code == 127 and "command not found" in result.observation.output
        assert not result.done
    finally:
        client.close()


def test_idle_sessions_are_reaped(reaping_url):
    # The reaper wakes every 5 s at most; a session idle past its 1 s timeout is gone by then.
    idle = [session(reaping_url) for _ in range(2)]
    for client in idle:
        client.reset(scenario=EXPLORE)
    time.sleep(6.5)  # both slots were taken; a new session gets one only if an idle one was reaped
    fresh = session(reaping_url)
    try:
        assert fresh.reset(scenario=EXPLORE).observation.step == 0
    finally:
        fresh.close()
        for client in idle:
            client.close()


def test_auth_guards_every_route_but_health(auth_url):
    assert requests.get(f"{auth_url}/health", timeout=10).status_code == 200
    for method, path in (("get", "/schema"), ("get", "/metadata"), ("post", "/reset"), ("get", "/docs")):
        response = requests.request(method, f"{auth_url}{path}", timeout=10)
        assert response.status_code == 401, path
        assert "missing API key" in response.json()["detail"]
    assert requests.get(f"{auth_url}/schema", headers={"X-API-Key": "nope"}, timeout=10).status_code == 401
    assert requests.get(f"{auth_url}/schema", headers={"X-API-Key": KEY}, timeout=10).status_code == 200


def test_auth_on_the_websocket(auth_url):
    with pytest.raises(ConnectionError, match="HTTP 401"):
        session(auth_url, api_key="wrong")
    with pytest.raises(ConnectionError, match="HTTP 401"):
        session(auth_url, api_key="")
    client = session(auth_url, api_key=KEY)
    try:
        assert client.reset(scenario=EXPLORE).observation.node == "login01"
    finally:
        client.close()


def test_health_turns_unhealthy_when_episodes_cannot_be_made():
    app = FastAPI()
    pool = SimpleNamespace(failure=None, ready=2)
    replace_health(app, pool)  # type: ignore[arg-type]
    client = TestClient(app)
    assert client.get("/health").json() == {"status": "healthy", "episodes_ready": 2}
    pool.failure = RuntimeError("bwrap: Can't mount proc")
    response = client.get("/health")
    assert response.status_code == 503 and "mount proc" in response.json()["detail"]


def test_settings_come_from_the_environment():
    settings = ServerSettings.from_environ(
        {"HPCGYM_MAX_SESSIONS": "8", "HPCGYM_SCENARIOS": "explore, hpc_outage", "OPENENV_API_KEY": "k"}
    )
    assert (settings.max_sessions, settings.scenarios, settings.api_key) == (
        8,
        ("explore", "hpc_outage"),
        "k",
    )
    with pytest.raises(ValueError, match="below 50"):
        ServerSettings(step_timeout_s=55)


def test_openenv_discovery_finds_the_installed_environment(auth_url):
    from openenv.auto import AutoAction, AutoEnv
    from openenv.auto._discovery import get_discovery

    found = get_discovery().discover(use_cache=False)
    assert found["hpcgym"].package_name == "openenv-hpcgym", found
    assert AutoAction.from_env("hpcgym") is HpcAction
    client = AutoEnv.from_env("hpcgym", base_url=auth_url, api_key=KEY).sync()
    client.connect()
    try:
        result = client.reset(scenario="hpc_drain_forgotten", seed=800)
        assert result.observation.node == "login01"
        step = client.step(HpcAction(command="sinfo -h -o %P | sort -u | head -1"))
        assert step.observation.exit_code == 0 and step.observation.output.strip(), step.observation
    finally:
        client.close()
