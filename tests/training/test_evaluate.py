"""training.evaluate over the test split: a saved model, and an OpenAI-compatible endpoint (a local mock)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

pytestmark = pytest.mark.slow


def test_a_saved_model_gets_invoke_evals_report(tmp_path, trl_stack, episode_images) -> None:
    from training.evaluate import main
    from training.tiny import DEFAULT_COMMANDS, build_tiny

    build_tiny(tmp_path / "model")
    out = tmp_path / "eval"
    argv = ["--model", str(tmp_path / "model"), "--scenarios", "hpc_munge", "--seeds-per-scenario", "2"]
    argv += ["--max-turns", "2", "--temperature", "1.0", "--images", str(episode_images), "--out", str(out)]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir()} >= {
        "leaderboard.md",
        "leaderboard.png",
        "results.json",
        "transcripts.jsonl",
    }
    records = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    assert [(r["scenario"], r["seed"]) for r in records] == [("hpc_munge", 800), ("hpc_munge", 801)]
    commands = {c for c, _ in DEFAULT_COMMANDS}
    assert all(step["command"] in commands for r in records for step in r["transcript"])
    assert "| hpc_munge | 3 |" in (out / "leaderboard.md").read_text()


class MockChat(BaseHTTPRequestHandler):
    """Calls `run("hostname")` once, then answers in text (and records what it was sent)."""

    requests: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        MockChat.requests.append(body)
        if body["messages"][-1]["role"] == "tool":
            message = {"role": "assistant", "content": "Done."}
        else:
            call = {
                "id": "c1",
                "type": "function",
                "function": {"name": "run", "arguments": '{"command": "hostname"}'},
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        data = json.dumps({"choices": [{"message": message}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_an_endpoint_with_function_calling(tmp_path, episode_images) -> None:
    pytest.importorskip("transformers", reason="tool schemas come from transformers")
    from training.evaluate import main

    server = ThreadingHTTPServer(("127.0.0.1", 0), MockChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        argv = [
            "--base-url",
            url,
            "--served-model",
            "mock",
            "--scenarios",
            "hpc_munge",
            "--seeds-per-scenario",
            "1",
        ]
        assert main([*argv, "--images", str(episode_images), "--out", str(tmp_path)]) == 0
    finally:
        server.shutdown()
    record = json.loads((tmp_path / "transcripts.jsonl").read_text())
    assert record["policy"] == "mock" and [s["command"] for s in record["transcript"]] == ["hostname"]
    assert record["transcript"][0]["output"].startswith("login01")
    first, second = MockChat.requests
    assert first["tools"][0]["function"]["name"] == "run"
    tool = {"role": "tool", "name": "run", "content": record["transcript"][0]["output"], "tool_call_id": "c1"}
    assert second["messages"][-1] == tool
    assert isinstance(second["messages"][-2]["tool_calls"][0]["function"]["arguments"], str)


def test_training_evaluate_and_invoke_eval_ask_a_model_the_same_things(
    tmp_path, runtime, episode_images
) -> None:
    """One client, one prompt, one tool, one parser: the same episode sends the same requests."""
    from hpcgym.scenarios.evaluate import LlmOptions, run_episode
    from training.evaluate import main

    server = ThreadingHTTPServer(("127.0.0.1", 0), MockChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        MockChat.requests = []
        argv = ["--base-url", url, "--served-model", "mock", "--scenarios", "hpc_munge"]
        argv += ["--seeds-per-scenario", "1", "--images", str(episode_images), "--out", str(tmp_path)]
        assert main(argv) == 0
        training_requests, MockChat.requests = MockChat.requests, []
        record = run_episode(runtime, "llm", "hpc_munge", 800, llm=LlmOptions(url, "mock"))
        eval_requests = MockChat.requests
    finally:
        server.shutdown()
    assert [s.command for s in record.transcript] == ["hostname"]
    assert len(training_requests) == 2 and eval_requests == training_requests
    assert training_requests[0]["seed"] == 800
    assert "Output:" not in json.dumps(eval_requests) and "hpcgym_task" not in json.dumps(eval_requests)


def test_the_run_tool_offered_is_the_one_trl_derives() -> None:
    pytest.importorskip("transformers", reason="TRL's tool schema comes from transformers")
    from transformers.utils import get_json_schema

    from hpcgym.interfaces.chat import RUN_TOOL, opening
    from training.dataset import make_row
    from training.env import HpcToolEnv

    assert get_json_schema(HpcToolEnv.run) == RUN_TOOL
    assert make_row("hpc_munge", 3, 1, "train")["prompt"] == opening("hpc_munge", 3)
