"""How a chat model meets an episode: one prompt, one `run` tool, one reply reader, one client.

GRPO training (training.dataset, training.env), `python -m training.evaluate` and `invoke eval
--policies llm` all build the conversation here, so a model is asked the same thing, offered the same
tool and read the same way wherever it is scored: a leaderboard entry and a trained model's
evaluation differ only in the model.

The conversation: a system message, a user message (the ticket line, then the episode's first
observation: the alert and the login prompt), then per turn the model's reply and what its command
printed (a `tool` message answering a `run` call, or a user `Output:` message answering a fenced
```bash block). A reply with neither ends the episode: the model has stopped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from hpcgym.errors import EndpointError

SYSTEM_PROMPT = (
    "You are an experienced HPC system administrator with root on the login node of a Rocky Linux 9 "
    "Slurm cluster (login01, compute-01 to compute-04). Diagnose and repair the incident the user "
    "reports. Call the `run` tool with one shell command line at a time and read its output; use "
    "`ssh <node> <command>` for compute nodes. Do not reboot, do not delete system directories, do not "
    "cancel users' jobs. When the incident is fixed, stop calling tools and summarise what you did."
)
USER_PROMPT = "An incident ticket has come in. Investigate and fix it."

# The one tool, as function calling describes it. It is what transformers derives from
# `training.env.HpcToolEnv.run` (TRL offers that method to the model); a test keeps the two equal.
RUN_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "run",
        "description": (
            "Run one bash command line as root at the cluster's prompt and return what the terminal "
            "printed.\n\nThe shell starts on the login node (login01); use `ssh <node> <command>` for "
            "the compute nodes\n(compute-01 to compute-04). Slurm, munge, systemd and the web portal "
            "behave as on a real\nRocky Linux 9 cluster. Each call is one step of a limited budget."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "command": {
                    "type": "string",
                    "description": "one bash command line, such as `sinfo -R` or "
                    "`ssh compute-01 systemctl status slurmd`.",
                }
            },
            "required": ["command"],
        },
        "return": {
            "type": "string",
            "description": "The command's output (stdout and stderr interleaved), with its exit status "
            "when non-zero.",
        },
    },
}
TOOLS = [RUN_TOOL]
# The longest output one `run` call returns to the model (head and tail kept).
MAX_OUTPUT_CHARS = 4000
CUT_MARKER = "\n[... output cut to fit the completion budget ...]\n"

_BLOCK = re.compile(r"```(?:bash|sh|shell)?\s*\n(.*?)```", re.DOTALL)


def opening(scenario: str, seed: int, first_observation: str = "") -> list[dict[str, Any]]:
    """The conversation's first two messages; `first_observation` is what reset showed (the alert).

    The system message carries the task as `hpcgym_task` ("scenario:seed"), which chat templates
    ignore and `wire_message` drops; training reads it to know a prompt's episode.
    """
    user = USER_PROMPT + (f"\n\n{first_observation}" if first_observation else "")
    return [
        {"role": "system", "content": SYSTEM_PROMPT, "hpcgym_task": f"{scenario}:{seed}"},
        {"role": "user", "content": user, "hpcgym_task": None},
    ]


def parse_command(text: str) -> str | None:
    """The command in a text: the first fenced block's first line that is not a comment."""
    match = _BLOCK.search(text)
    body = match.group(1) if match else text
    for line in body.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return line.removeprefix("$ ")
    return None


def command_of(message: dict[str, Any]) -> str | None:
    """The command a reply asks for: its first `run` call, else a fenced block; None: it stopped."""
    for call in message.get("tool_calls") or []:
        function = call.get("function", call)
        if function.get("name") == "run":
            arguments = function.get("arguments") or {}
            if isinstance(arguments, str):
                arguments = _arguments(arguments)
            return str(arguments.get("command", ""))
    content = message.get("content") or ""
    return parse_command(content) if "```" in content else None


def turn(reply: dict[str, Any], output: str) -> list[dict[str, Any]]:
    """The messages one turn adds: the model's reply, then what its command printed."""
    if reply.get("tool_calls"):
        answer: dict[str, Any] = {"role": "tool", "name": "run", "content": output}
        call_id = reply["tool_calls"][0].get("id")
        if call_id:
            answer["tool_call_id"] = call_id  # OpenAI's API pairs each result with its call
        return [reply, answer]
    return [
        {"role": "assistant", "content": reply.get("content") or ""},
        {"role": "user", "content": f"Output:\n{output}"},
    ]


def tool_result(
    output: str,
    exit_code: int,
    *,
    done: bool = False,
    solved: bool = False,
    failed: bool = False,
    max_chars: int | None = MAX_OUTPUT_CHARS,
) -> str:
    """What a `run` call returns to the model: the output, a non-zero exit status, how it ended."""
    text = output
    if exit_code:
        text = f"{text.rstrip()}\n[exit status {exit_code}]"
    if done:
        if solved:
            text += "\n[the incident is resolved; the episode is over]"
        elif failed:
            text += "\n[the episode is over: that action was unsafe]"
        else:
            text += "\n[the step budget is spent; the episode is over]"
    return text if max_chars is None else cut_text(text, max_chars)


def cut_text(text: str, max_chars: int) -> str:
    """Keep the head and tail of `text` so that the result has at most `max_chars` characters."""
    if len(text) <= max_chars:
        return text
    if max_chars <= len(CUT_MARKER):
        return CUT_MARKER.strip()[:max_chars]
    keep = max_chars - len(CUT_MARKER)
    head = keep // 2
    return text[:head] + CUT_MARKER + text[len(text) - (keep - head) :]


def wire_message(message: dict[str, Any]) -> dict[str, Any]:
    """A chat message as OpenAI's API takes it: no extra keys, tool-call arguments as JSON text."""
    wire = {k: v for k, v in message.items() if k != "hpcgym_task" and v is not None}
    if wire.get("tool_calls"):
        wire["tool_calls"] = [
            call
            if isinstance(call["function"].get("arguments"), str)
            else {
                **call,
                "function": {**call["function"], "arguments": json.dumps(call["function"]["arguments"])},
            }
            for call in wire["tool_calls"]
        ]
    return wire


def _arguments(text: str) -> dict[str, Any]:
    """Tool-call arguments sent as JSON text; a model's malformed JSON reads as no arguments."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass
class ChatEndpoint:
    """A chat model behind `/v1/chat/completions` (vLLM, llama.cpp server, OpenAI, ...).

    Args:
        base_url: the API root, e.g. `http://localhost:8000/v1`.
        model: the model name the server knows.
        api_key: sent as a Bearer token ("EMPTY" for servers that ignore it).
        temperature: sampling temperature.
        max_tokens: the longest reply.
        timeout_s: per-request limit.
        client: an httpx client to send through (None: a plain POST).
    """

    base_url: str
    model: str
    api_key: str = "EMPTY"
    temperature: float = 0.0
    max_tokens: int = 512
    timeout_s: float = 120.0
    client: httpx.Client | None = None

    def reply(self, messages: list[dict[str, Any]], seed: int | None = None) -> dict[str, Any]:
        """The model's next message, tool-call arguments parsed, empty fields left out."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [wire_message(m) for m in messages],
            "tools": TOOLS,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if seed is not None:
            body["seed"] = seed
        post = self.client.post if self.client is not None else httpx.post
        url = f"{self.base_url.rstrip('/')}/chat/completions"
        # The endpoint is infrastructure, not the agent: failing to reach it raises, it is never an
        # observation, and the message names the URL so the fix is obvious.
        try:
            response = post(
                url, headers={"Authorization": f"Bearer {self.api_key}"}, json=body, timeout=self.timeout_s
            )
        except httpx.HTTPError as e:
            raise EndpointError(
                f"cannot reach the model endpoint {url}: {e or type(e).__name__}",
                hint="start the server (e.g. vllm serve MODEL) or pass the right --base-url",
            ) from None
        if response.status_code >= 400:
            raise EndpointError(
                f"the model endpoint {url} answered HTTP {response.status_code}: {response.text[:200]!r}",
                hint="check --model (the name the server knows) and the API key",
            )
        try:
            message = dict(response.json()["choices"][0]["message"])
        except (ValueError, KeyError, IndexError, TypeError):
            raise EndpointError(
                f"the model endpoint {url} did not answer a chat completion: {response.text[:200]!r}",
                hint="point --base-url at an OpenAI-compatible API root, e.g. http://localhost:8000/v1",
            ) from None
        for call in message.get("tool_calls") or []:
            arguments = call["function"].get("arguments")
            if isinstance(arguments, str):
                call["function"]["arguments"] = _arguments(arguments)
        message = {k: v for k, v in message.items() if v is not None}
        message.setdefault("role", "assistant")
        message.setdefault("content", "")
        return message
