"""API-key auth as ASGI middleware: HTTP routes and the WebSocket handshake, in-process."""

from __future__ import annotations

import base64

import pytest
from fastapi import FastAPI, WebSocket
from starlette.testclient import TestClient, WebSocketDenialResponse

from hpcgym.interfaces.openenv.server.auth import ApiKeyAuth, presented_key

KEY = "s3cret-key"


@pytest.fixture
def client():
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "healthy"}

    @app.get("/schema")
    def schema():
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    app.add_middleware(ApiKeyAuth, api_key=KEY)
    return TestClient(app)


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_health_needs_no_key(client):
    assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer nope"}, "wrong API key"),
        ({"X-API-Key": "x"}, "wrong"),
        (basic("openenv", "nope"), "wrong"),
        (basic(KEY, ""), "missing"),  # the key is the password, never the user name
        ({"Authorization": "Basic !!!"}, "missing"),
    ],
)
def test_other_routes_refuse_a_missing_or_wrong_key(client, headers, reason):
    response = client.get("/schema", headers=headers)
    assert response.status_code == 401
    assert reason in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, basic("openenv", KEY), basic("", KEY)],
)
def test_the_right_key_passes(client, headers):
    assert client.get("/schema", headers=headers).json() == {"ok": True}


def test_websocket_handshake_needs_the_key(client):
    with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect("/ws"):
        pass
    assert refused.value.status_code == 401
    with client.websocket_connect("/ws", headers={"Authorization": f"Bearer {KEY}"}) as ws:
        assert ws.receive_text() == "hello"


def test_header_parsing():
    assert presented_key([(b"authorization", b"Bearer  abc ")]) == "abc"
    assert presented_key([(b"authorization", b"Basic abc")]) is None
    assert presented_key([]) is None


def test_an_empty_key_is_refused_at_start():
    with pytest.raises(ValueError, match="empty API key"):
        ApiKeyAuth(FastAPI(), "")
