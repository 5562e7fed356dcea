"""The `rollout_func` path: drive generation yourself, keep TRL's loss.

`make_rollout_func(settings, generate)` returns a function for `GRPOTrainer(rollout_func=...)` (used
without `environment_factory`). For each prompt it reads the row's task from the prompt
(`hpcgym_task`, see training.dataset), resets an `HpcToolEnv`, and alternates: `generate(ids)` gives
the model's next turn as token ids, the turn's `run` call goes to the cluster, and the tool message's
template tokens are appended. It returns the ids TRL trains on, with `env_mask` 0 on tool output and
1 on sampled tokens, and `env_reward`, which `env_reward` (the reward function) hands back.

    trainer = GRPOTrainer(model=..., args=config, train_dataset=build_dataset([...]),
                          reward_funcs=[env_reward], rollout_func=make_rollout_func(EnvSettings()))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from training.backends import EnvironmentUnavailable
from training.dataset import task_of
from training.env import EnvSettings, EpisodeOverError, HpcToolEnv, TokenCounter

# Token ids of the context so far -> the model's next turn (token ids, ending with end-of-turn).
Generate = Callable[[list[int]], list[int]]


def trainer_generate(trainer: Any, max_new_tokens: int) -> Generate:
    """Sample one turn with the trainer's own model (transformers `generate`, no vLLM)."""
    import torch

    def generate(ids: list[int]) -> list[int]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids], device=model.device),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=model.device),
                generation_config=trainer.generation_config,
                max_new_tokens=max_new_tokens,
            )
        turn = out[0, len(ids) :].tolist()
        eos = trainer.processing_class.eos_token_id
        return turn[: turn.index(eos) + 1] if eos in turn else turn

    return generate


def make_rollout_func(
    settings: EnvSettings, generate: Generate | None = None, max_turns: int = 12
) -> Callable[[list[Any], Any], dict[str, Any]]:
    """A `rollout_func` that plays each prompt's task through `HpcToolEnv`.

    Args:
        settings: where episodes run (its `max_completion_tokens` bounds each rollout).
        generate: the model's next turn from the ids so far (default: the trainer's model).
        max_turns: tool calls per rollout.
    """

    def rollout(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        from transformers.utils import get_json_schema
        from trl.chat_template_utils import add_response_schema, parse_response

        tokenizer = trainer.processing_class
        if (
            getattr(tokenizer, "response_template", None) is None
            and getattr(tokenizer, "response_schema", None) is None
        ):
            add_response_schema(tokenizer)  # TRL sets it only when it runs the tools itself
        budget = settings.max_completion_tokens or trainer.max_completion_length
        step = generate or trainer_generate(trainer, budget)
        result: dict[str, list[Any]] = {
            "prompt_ids": [],
            "completion_ids": [],
            "env_mask": [],
            "env_reward": [],
        }
        for prompt in prompts:
            env = HpcToolEnv(settings, TokenCounter(tokenizer))
            scenario, seed = task_of(prompt)
            messages = [dict(m) for m in prompt]
            messages[-1]["content"] += env.reset(scenario=scenario, seed=seed)
            tools = [get_json_schema(env.run)]
            prompt_ids = tokenizer.apply_chat_template(
                messages, tools=tools, add_generation_prompt=True, tokenize=True
            )
            if hasattr(prompt_ids, "keys"):
                prompt_ids = prompt_ids["input_ids"]
            prompt_ids = list(prompt_ids)
            completion: list[int] = []
            mask: list[int] = []
            for _ in range(max_turns):
                turn = step(prompt_ids + completion)[: max(0, budget - len(completion))]
                completion += turn
                mask += [1] * len(turn)
                message = parse_response(
                    tokenizer, turn, prefix=prompt_ids + completion[: -len(turn) or None]
                )
                calls = [c for c in message.get("tool_calls") or [] if c["function"]["name"] == "run"]
                if not calls or len(completion) >= budget:
                    break
                try:
                    output = env.run(str(calls[0]["function"]["arguments"].get("command", "")))
                except (EpisodeOverError, EnvironmentUnavailable) as e:
                    output = str({"error": str(e)})
                suffix = trainer._get_tool_suffix_ids([{"role": "tool", "name": "run", "content": output}])
                if len(completion) + len(suffix) >= budget:
                    break
                completion += suffix
                mask += [0] * len(suffix)
            result["prompt_ids"].append(prompt_ids)
            result["completion_ids"].append(completion)
            result["env_mask"].append(mask)
            result["env_reward"].append(env.get_reward())
        return {**result, "logprobs": None}

    return rollout


def env_reward(env_reward: list[float | None] | None = None, **_: Any) -> list[float | None]:
    """The reward function for the rollout_func path: the episode returns the rollout recorded."""
    return list(env_reward or [])
