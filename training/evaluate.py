"""Evaluate a model on the test split: `python -m training.evaluate --model DIR` or `--base-url URL`.

The model works as in training: the alert arrives in the user turn and it calls the `run` tool of
`HpcToolEnv` once per command (in this process, or on `--env-urls` servers). A saved model runs with
transformers; any OpenAI-compatible endpoint (vLLM, llama.cpp, OpenAI) runs with function calling,
falling back to a ```bash block in the reply. The report is `invoke eval`'s: leaderboard.md,
leaderboard.png, results.json and transcripts.jsonl (`hpcgym.scenarios.evaluate.write_report`).
Seeds are the test split's, given to the env as reset seeds (as in training).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpcgym.errors import HpcgymError
from hpcgym.interfaces import chat
from training.backends import EnvironmentUnavailable, close_local_episodes
from training.dataset import DEFAULT_DIFFICULTY, build_rows, task_of
from training.env import EnvSettings, EpisodeOverError, HpcToolEnv
from training.models import model_name, resolve_model

# (messages, tool schemas) -> the assistant message, and the command it asks for (None: it stopped).
Act = Callable[[list[dict[str, Any]], list[dict[str, Any]]], tuple[dict[str, Any], str | None]]


def transformers_policy(model_dir: str, max_new_tokens: int = 512, temperature: float = 0.0) -> Act:
    """A saved model driven with transformers' `generate` and its tokenizer's tool-call parser."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.chat_template_utils import add_response_schema, parse_response

    tokenizer: Any = AutoTokenizer.from_pretrained(model_dir)
    if (
        getattr(tokenizer, "response_template", None) is None
        and getattr(tokenizer, "response_schema", None) is None
    ):
        add_response_schema(tokenizer)
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()

    def act(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
        prompt: Any = tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=True
        )
        if isinstance(prompt, dict) or hasattr(prompt, "keys"):
            prompt = prompt["input_ids"]
        with torch.no_grad():
            output = model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                pad_token_id=tokenizer.pad_token_id,
            )
        message = parse_response(tokenizer, output[0, len(prompt) :].tolist(), prefix=list(prompt))
        return message, chat.command_of(message)

    return act


def endpoint_policy(base_url: str, model: str, api_key: str = "EMPTY", temperature: float = 0.0) -> Act:
    """A model behind `/v1/chat/completions`: `invoke eval --policies llm`'s client."""
    endpoint = chat.ChatEndpoint(base_url, model, api_key, temperature=temperature)

    def act(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
        message = endpoint.reply(messages, seed=task_of(messages)[1])
        return message, chat.command_of(message)

    return act


def play(env: HpcToolEnv, row: dict[str, Any], act: Act, max_turns: int) -> Any:
    """One episode of `row`; returns its `EpisodeRecord` (policy name filled in by the caller)."""
    from hpcgym.scenarios.evaluate import EpisodeRecord, StepRecord

    tools = chat.TOOLS
    messages = [dict(m) for m in row["prompt"]]
    messages[-1]["content"] += env.reset(**row)
    for _ in range(max_turns):
        message, command = act(messages, tools)
        if command is None:
            break
        try:
            output = env.run(command)
        except (EpisodeOverError, EnvironmentUnavailable):
            break
        messages += chat.turn(message, output)
        if env._done:
            break
    env.get_reward()
    record = env._stats()
    assert record is not None
    outcome = "solved" if record.solved else "catastrophic" if record.failed else "truncated"
    return EpisodeRecord(
        policy="",
        scenario=record.scenario,
        tier=int(record.tier or 0),
        seed=record.seed,
        alert=record.alert,
        outcome=outcome if record.steps else "stopped",
        solved=record.solved,
        unsafe=[f"step {i + 1}: {s.command}" for i, s in enumerate(record.steps) if s.unsafe_count],
        steps=len(record.steps),
        total_reward=record.total_reward,
        components={"return": record.total_reward},
        transcript=[StepRecord(s.command, s.output, s.exit_code, s.node, s.reward) for s in record.steps],
    )


def evaluate(
    act: Act,
    policy: str,
    scenarios: list[str],
    seeds_per_scenario: int | None,
    settings: EnvSettings,
    max_turns: int,
) -> list[Any]:
    """Every test row of `scenarios`, played by `act`; infrastructure failures are left out, not scored."""
    env = HpcToolEnv(settings)
    records = []
    try:
        # Tier order, every scenario as written (the curriculum's rungs are for training).
        rows = build_rows(scenarios, "test", seeds_per_scenario, "curriculum", difficulty=DEFAULT_DIFFICULTY)
        for row in rows:
            record = play(env, row, act, max_turns)
            if env._stats() is not None and env._stats().infra_failed:  # type: ignore[union-attr]
                print(
                    f"skipped {row['scenario']} seed {row['seed']}: environment unavailable", file=sys.stderr
                )
                continue
            record.policy = policy
            records.append(record)
    finally:
        close_local_episodes()
    return records


def main(argv: list[str] | None = None) -> int:
    """Parse flags, evaluate, write the report; print the leaderboard."""
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a saved model directory (e.g. runs/grpo/final)")
    source.add_argument("--base-url", help="an OpenAI-compatible API root, e.g. http://localhost:8000/v1")
    parser.add_argument("--served-model", help="the model name the endpoint knows (with --base-url)")
    parser.add_argument("--api-key", default="EMPTY")
    parser.add_argument("--scenarios", nargs="+", default=["lite"])
    parser.add_argument(
        "--seeds-per-scenario", type=int, default=5, help="test seeds per scenario (default 5)"
    )
    parser.add_argument("--max-turns", type=int, default=30)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--env-urls", nargs="+", default=[])
    parser.add_argument("--images", help="built images for in-process episodes")
    parser.add_argument("--out", type=Path, default=Path("runs/eval"))
    parser.add_argument(
        "--name",
        help="the policy's name in the leaderboard (default: the hub id, or the model directory's last two "
        "folders, e.g. qwen0.5b/final)",
    )
    args = parser.parse_args(argv)
    from hpcgym.scenarios.evaluate import leaderboard_markdown, write_report

    if args.model:
        try:
            model = resolve_model(args.model)
        except HpcgymError as e:
            print(f"training.evaluate: error: {e}", file=sys.stderr)
            return 1
        act = transformers_policy(model, temperature=args.temperature)
        name = args.name or model_name(model)
    else:
        if not args.served_model:
            parser.error("--base-url needs --served-model")
        act = endpoint_policy(args.base_url, args.served_model, args.api_key, args.temperature)
        name = args.name or args.served_model
    settings = EnvSettings(images_dir=args.images, env_urls=tuple(args.env_urls), max_steps=args.max_turns)
    records = evaluate(act, name, args.scenarios, args.seeds_per_scenario, settings, args.max_turns)
    if not records:
        print("no episode could be played", file=sys.stderr)
        return 1
    write_report(records, args.out)
    print(leaderboard_markdown(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
