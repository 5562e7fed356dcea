"""Hostile input on the WebSocket and through the gym env: every frame gets a clear answer, the server
stays up, and a session beside the fuzzed one goes on unaffected.

Plain seeded generators (hypothesis is not installed): the same seed sends the same frames. Each
frame is answered by one JSON frame, an observation or an error naming what was wrong; only frames
the WebSocket protocol itself forbids (a text frame that is not UTF-8, a frame over the size limit)
end the connection, with the protocol's close code.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import gymnasium
import pytest
import requests
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

import hpcgym  # noqa: F401 - registers EnterpriseHPC-v0
from hpcgym.interfaces.openenv.client import HpcEnvClient
from hpcgym.interfaces.openenv.models import HpcAction
from hpcgym.interfaces.openenv.server.admission import MAX_MESSAGE_CHARS
from hpcgym.interfaces.openenv.server.app import ServerSettings, build_app
from hpcgym.interfaces.openenv.server.local import serve
from hpcgym.interfaces.task import EXPLORE

SEED = 20261207
REPLY_TIMEOUT_S = 30.0
# Commands an agent (or an attacker behind it) may type: NUL, terminal control, escapes, bells,
# carriage returns, a lone surrogate, very long lines, a heredoc left open, a shell bomb's text.
HOSTILE_COMMANDS = (
    "\x00",
    "echo a\x00b",
    "\x03",
    "\x04",
    "\x1a",
    "\x1b[2J\x1b[H\x1bc",
    "\x1b]0;title\x07",
    "printf '\\033[6n'",
    "echo one\recho two",
    "echo one\necho two",
    "cat <<EOF",
    "'",
    '"',
    "`",
    "\\",
    "\ud800",
    "\u202eevil",
    "é" * 4000,
    "x" * 16 * 1024,
    "stty raw -echo",
    "exec 1>&-",
    "exit",
)
# Commands after which the shell rightly cannot print (bash: echo: write error): answered all the same.
SELF_HARM = frozenset({"exec 1>&-"})
# Not text at all (no UTF-8 form): the server refuses it in the frame; the gym env should too.
NOT_TEXT = ("\ud800",)


def frames(rng: random.Random) -> list[tuple[str, str | bytes]]:
    """(what it is, the frame) for the shapes OpenEnv's handler must meet; all but the last few seeded."""
    wrong = [
        "[]",
        "1",
        '"reset"',
        "null",
        "true",
        "{}",
        '{"type": 5}',
        '{"type": ["reset"]}',
        '{"type": "nope"}',
        '{"type": "step"}',
        '{"type": "step", "data": []}',
        '{"type": "step", "data": {"command": 5}}',
        '{"type": "step", "data": {"command": "ls", "bogus": 1}}',
        '{"type": "step", "data": {"command": "' + "y" * 20000 + '"}}',
        '{"type": "reset", "data": {"seed": "seven"}}',
        '{"type": "reset", "data": [1, 2]}',
        '{"type": "reset", "data": {"bogus": 1}}',
        '{"type": "reset", "data": {"max_steps": -3}}',
        '{"type": "reset", "data": {"scenario": "../../etc/passwd"}}',
        '{"type": "state", "data": 5}',
        '{"type": "mcp", "data": {}}',
        '{"type": "mcp", "data": {"jsonrpc": "2.0", "method": "tools/call", "id": 1}}',
        '{"type": "reset", "type": "step"}',
        "{",
        "\x00",
        "",
        " ",
        '{"type": "step", "data": {"command": "' + "\\u0000" * 100 + '"}}',
        "[" * 5000 + "]" * 5000,
        '{"a":' * 3000 + "1" + "}" * 3000,
    ]
    out: list[tuple[str, str | bytes]] = [(f"wrong shape {text[:40]!r}", text) for text in wrong]
    for n in range(40):
        out.append((f"random json {n}", json.dumps(random_json(rng, 4))))
        out.append(
            (f"random text {n}", "".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(rng.randrange(60))))
        )
        out.append((f"random bytes {n}", rng.randbytes(rng.randrange(1, 200))))
    out.append(("huge text", "z" * (MAX_MESSAGE_CHARS + 1)))
    out.append(("huge json", json.dumps({"type": "step", "data": {"command": "q" * 2 * MAX_MESSAGE_CHARS}})))
    return out


def random_json(rng: random.Random, depth: int) -> Any:
    kinds = ["int", "str", "null", "bool", "float"] + (["list", "dict", "msg"] if depth else [])
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.randrange(-(2**70), 2**70)
    if kind == "str":
        return "".join(chr(rng.randrange(0, 0x2FFF)) for _ in range(rng.randrange(12)))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "float":
        return rng.uniform(-1e300, 1e300)
    if kind == "list":
        return [random_json(rng, depth - 1) for _ in range(rng.randrange(4))]
    if kind == "dict":
        return {f"k{rng.randrange(9)}": random_json(rng, depth - 1) for _ in range(rng.randrange(4))}
    if kind == "msg":
        return {
            "type": rng.choice(["reset", "step", "state", "mcp", "x"]),
            "data": random_json(rng, depth - 1),
        }
    return None


async def reply(ws: ClientConnection) -> dict[str, Any]:
    frame = await asyncio.wait_for(ws.recv(), timeout=REPLY_TIMEOUT_S)
    assert isinstance(frame, str), f"the server answered with a binary frame: {frame!r:.80}"
    data = json.loads(frame)
    assert isinstance(data, dict) and data.get("type") in ("observation", "state", "error", "mcp"), frame[
        :200
    ]
    return data


def is_clear_error(data: dict[str, Any]) -> bool:
    error = data.get("data") or {}
    return data["type"] == "error" and bool(error.get("code")) and len(str(error.get("message", ""))) > 3


@pytest.fixture(scope="module")
def url(runtime):
    settings = ServerSettings(max_sessions=4, max_resets=2, pool_size=1, session_timeout_s=120.0)
    with serve(build_app(settings, runtime=runtime)) as url:
        yield url


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/ws"


async def fuzz_session(url: str) -> list[str]:
    """Send every frame on one socket; return what went wrong (a frame that ended it is one)."""
    problems: list[str] = []
    rng = random.Random(SEED)
    ws = await connect(ws_url(url), max_size=None)
    try:
        for what, frame in frames(rng):
            try:
                await ws.send(frame)
                data = await reply(ws)
            except ConnectionClosed as e:
                problems.append(f"{what}: the server ended the session ({e})")
                ws = await connect(ws_url(url), max_size=None)
                continue
            if data["type"] == "error" and not is_clear_error(data):
                problems.append(f"{what}: an unclear error {data}")
        reset = json.dumps({"type": "reset", "data": {"scenario": EXPLORE, "seed": 3}})
        await ws.send(reset)
        assert (await reply(ws))["type"] == "observation"
        for command in HOSTILE_COMMANDS:
            try:
                await ws.send(json.dumps({"type": "step", "data": {"command": command}}))
                data = await reply(ws)
                if data["type"] == "error" and not is_clear_error(data):
                    problems.append(f"command {command[:20]!r}: an unclear error {data}")
                if data.get("data", {}).get("done"):
                    await ws.send(reset)  # `exit` from the login shell ends the episode: fine
                    assert (await reply(ws))["type"] == "observation"
                    continue
                # The episode still answers after it, on its own prompt.
                await ws.send(json.dumps({"type": "step", "data": {"command": "echo still-here"}}))
                after = await reply(ws)
            except ConnectionClosed as e:
                problems.append(f"command {command[:20]!r}: the server ended the session ({e})")
                ws = await connect(ws_url(url), max_size=None)
                await ws.send(reset)
                await reply(ws)
                continue
            output = after.get("data", {}).get("observation", {}).get("output", "")
            if after["type"] != "observation" or ("still-here" not in output and command not in SELF_HARM):
                problems.append(f"command {command[:20]!r}: then {data!r:.200} and {after!r:.300}")
        # A flood: thousands of frames as fast as they go, answered one for one and in order.
        flood = 3000
        for n in range(flood):
            await ws.send(json.dumps({"type": "state"}) if n % 3 else f"garbage {n}")
        for n in range(flood):
            data = await reply(ws)
            expected = "state" if n % 3 else "error"
            if data["type"] != expected:
                problems.append(f"flood frame {n}: answered {data['type']}, not {expected}")
                break
    finally:
        await ws.close()
    return problems


async def protocol_violations(url: str) -> list[str]:
    """Frames the WebSocket protocol forbids end the connection with its close code; nothing else."""
    problems: list[str] = []
    for what, frame, code in (
        ("a text frame that is not UTF-8", b"\xff\xfe{\x80", 1007),
        ("a frame over the server's size limit", "w" * (17 * 1024 * 1024), 1009),
    ):
        async with connect(ws_url(url), max_size=None) as ws:
            if isinstance(frame, bytes):
                await ws.send(frame, text=True)
            else:
                await ws.send(frame)
            try:
                await asyncio.wait_for(ws.recv(), timeout=REPLY_TIMEOUT_S)
                problems.append(f"{what}: answered instead of closing")
            except ConnectionClosed as e:
                if e.rcvd is None or e.rcvd.code != code:
                    problems.append(f"{what}: closed with {e.rcvd}, not {code}")
    return problems


def test_hostile_frames_get_clear_answers_and_the_server_and_its_other_sessions_go_on(url) -> None:
    bystander = HpcEnvClient(url).sync()
    bystander.connect()
    try:
        bystander.reset(scenario=EXPLORE, seed=9)
        assert bystander.step(HpcAction(command="echo before")).observation.step == 1

        problems = asyncio.run(fuzz_session(url)) + asyncio.run(protocol_violations(url))
        assert not problems, "\n".join(problems)

        health = requests.get(f"{url}/health", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "healthy"
        after = bystander.step(HpcAction(command="echo after"))
        assert after.observation.step == 2 and "after" in after.observation.output
    finally:
        bystander.close()


def test_many_hostile_sessions_at_once(url) -> None:
    # Three fuzzers at once (the fourth slot is left free): no cross-talk, the server answers each.
    async def three() -> list[list[str]]:
        return await asyncio.gather(*(fuzz_frames_only(url, seed) for seed in range(3)))

    assert all(not p for p in asyncio.run(three()))
    # A closed WebSocket's session is released by the server once its episode has closed.
    deadline = time.monotonic() + 15
    while (
        requests.get(f"{url}/capacity", timeout=10).json()["active_sessions"] and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert requests.get(f"{url}/capacity", timeout=10).json()["active_sessions"] == 0


async def fuzz_frames_only(url: str, seed: int) -> list[str]:
    problems = []
    async with connect(ws_url(url), max_size=None) as ws:
        for what, frame in frames(random.Random(seed)):
            await ws.send(frame)
            data = await reply(ws)
            if data["type"] != "error" and not what.startswith(("random json", "wrong shape")):
                problems.append(f"{what}: {data['type']}")
    return problems


def test_the_gym_env_answers_hostile_commands_as_observations(runtime) -> None:
    env = gymnasium.make("EnterpriseHPC-v0", runtime=runtime, scenarios=[EXPLORE])
    try:
        env.reset(seed=5)
        for command in HOSTILE_COMMANDS:
            if command in NOT_TEXT:
                continue  # the next test
            observation, _, terminated, truncated, info = env.step(command)
            assert isinstance(observation, str) and isinstance(info["exit_code"], int)
            if terminated or truncated:
                env.reset(seed=5)
                continue
            observation, *_ = env.step("echo still-here")
            if command not in SELF_HARM:
                assert "still-here" in observation, f"after {command[:20]!r}: {observation!r:.300}"
    finally:
        env.close()


def test_the_gym_env_refuses_a_command_that_is_not_text_clearly(runtime) -> None:
    from hpcgym.errors import HpcgymError

    env = gymnasium.make("EnterpriseHPC-v0", runtime=runtime, scenarios=[EXPLORE])
    try:
        env.reset(seed=5)
        for command in NOT_TEXT:
            with pytest.raises(HpcgymError, match="surrogate"):
                env.step(command)
            observation, *_ = env.step("echo still-here")
            assert "still-here" in observation
    finally:
        env.close()
