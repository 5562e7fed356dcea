"""GRPO on EnterpriseHPC with TRL: `python -m training.grpo --model ... --scenarios ...`.

Each dataset row fixes (scenario, seed); TRL repeats it `--group-size` times, so a group's members
start from the same cluster. The model works through the `run` tool of `HpcToolEnv`, for up to
`--max-turns` tool calls; TRL trains every sampled turn (the tokens it generated, concatenated
without re-tokenising) and masks the tool output. The reward is the grader's episode return.
Episodes run in this process over the built images, or on OpenEnv servers given with `--env-urls`.

Writes under `--output-dir`: `metrics.jsonl` (one line per logged step: reward mean/std, solve
rate, steps, unsafe rate, tokens, ...), `transcripts.jsonl` (rollouts), `config.json` (the settings)
and the trained model (`final/`).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from hpcgym.errors import HpcgymError
from training.backends import close_local_episodes
from training.dataset import Order, build_dataset
from training.env import EnvSettings, HpcToolEnv, TokenCounter, episode_metrics
from training.models import resolve_model


@dataclass
class TrainSettings:
    """Everything one training run needs; flags and `--config FILE` (JSON) fill it."""

    model: str = "Qwen/Qwen2.5-0.5B-Instruct"
    scenarios: list[str] = field(default_factory=lambda: ["lite"])
    group_size: int = 8
    prompts_per_step: int = 1
    max_turns: int = 12
    num_train_steps: int = 100
    max_completion_length: int = 4096
    max_output_chars: int = 4000
    seeds_per_scenario: int | None = 64
    order: str = "shuffle"
    difficulty: str | None = None
    learning_rate: float = 1e-6
    temperature: float = 1.0
    beta: float = 0.0
    env_urls: list[str] = field(default_factory=list)
    images_dir: str | None = None
    pool_size: int = 2
    lora: bool = False
    qlora: bool = False
    lora_rank: int = 16
    vllm_mode: str | None = None
    output_dir: str = "runs/grpo"
    report_to: list[str] = field(default_factory=list)
    transcript_every: int = 8
    save_model: bool = True
    gradient_checkpointing: bool = True
    seed: int = 0


def parse_args(argv: list[str] | None = None) -> TrainSettings:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(prog="python -m training.grpo", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, help="a JSON file of settings (see training/configs/); flags override it"
    )
    parser.add_argument("--model", help=f"a hub id or a local directory (default {defaults.model})")
    parser.add_argument("--scenarios", nargs="+", help="scenario ids, or all, lite, tierN (default lite)")
    parser.add_argument("--group-size", type=int, help="GRPO group: completions per row (default 8)")
    parser.add_argument("--prompts-per-step", type=int, help="rows (groups) per optimizer step (default 1)")
    parser.add_argument(
        "--max-turns", type=int, help="tool calls per rollout, also the episode's step budget"
    )
    parser.add_argument("--num-train-steps", type=int, help="optimizer steps")
    parser.add_argument("--max-completion-length", type=int, help="tokens per rollout, tool output included")
    parser.add_argument("--max-output-chars", type=int, help="characters one tool call may return")
    parser.add_argument("--seeds-per-scenario", type=int, help="train seeds per scenario (default 64)")
    parser.add_argument(
        "--order",
        choices=[str(o) for o in Order],
        help="shuffle rows or a curriculum over tiers and difficulty",
    )
    parser.add_argument(
        "--difficulty",
        help="every row at these knobs, e.g. red_herrings=1,chained=0,clue=deep (default: as written)",
    )
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--beta", type=float, help="KL coefficient (0: no reference model)")
    parser.add_argument("--env-urls", nargs="+", help="OpenEnv servers; sessions spread over them")
    parser.add_argument("--images", dest="images_dir", help="built images for in-process episodes")
    parser.add_argument("--pool-size", type=int, help="in-process episodes kept ready")
    adapters = parser.add_mutually_exclusive_group()
    adapters.add_argument("--lora", action="store_true", default=None, help="train a LoRA adapter")
    adapters.add_argument("--qlora", action="store_true", default=None, help="LoRA over a 4-bit model (CUDA)")
    parser.add_argument("--lora-rank", type=int)
    parser.add_argument(
        "--vllm-mode", choices=["colocate", "server"], help="generate with vLLM (CUDA, vllm installed)"
    )
    parser.add_argument("--output-dir")
    parser.add_argument("--report-to", nargs="+", help="tensorboard, wandb, ... (default: JSONL only)")
    parser.add_argument("--transcript-every", type=int, help="write every n-th rollout of each env slot")
    parser.add_argument("--no-save", dest="save_model", action="store_false", default=None)
    parser.add_argument(
        "--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false", default=None
    )
    parser.add_argument("--seed", type=int)
    args = vars(parser.parse_args(argv))
    settings: dict[str, Any] = {}
    config = args.pop("config")
    if config is not None:
        settings.update(json.loads(config.read_text()))
    settings.update({k: v for k, v in args.items() if v is not None})
    known = {f.name for f in fields(TrainSettings)}
    unknown = set(settings) - known
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}")
    return TrainSettings(**settings)


def make_callback(metrics_path: Path) -> Any:
    """A `TrainerCallback` that appends every log record to `metrics_path` as one JSON line."""
    from transformers import TrainerCallback

    class JsonlMetrics(TrainerCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
        ) -> None:
            if logs is None:
                return
            with metrics_path.open("a") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return JsonlMetrics()


def peft_config(settings: TrainSettings) -> Any:
    if not (settings.lora or settings.qlora):
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora_rank,
        lora_alpha=2 * settings.lora_rank,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def model_init_kwargs(settings: TrainSettings, cuda: bool) -> dict[str, Any]:
    import torch

    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if cuda else torch.float32}
    if settings.qlora:
        if not cuda or importlib.util.find_spec("bitsandbytes") is None:
            raise SystemExit("--qlora needs CUDA and bitsandbytes (pip install bitsandbytes)")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    return kwargs


def load_model(settings: TrainSettings, cuda: bool) -> tuple[Any, Any]:
    """The model (a path for TRL to load, or an Unsloth model) and its tokenizer."""
    from transformers import AutoTokenizer

    if (settings.lora or settings.qlora) and cuda and importlib.util.find_spec("unsloth") is not None:
        # Unsloth only when installed, and only for adapters on CUDA, where it pays.
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(
            settings.model, max_seq_length=settings.max_completion_length + 2048, load_in_4bit=settings.qlora
        )
        model = FastLanguageModel.get_peft_model(
            model, r=settings.lora_rank, lora_alpha=2 * settings.lora_rank
        )
        return model, tokenizer
    model = resolve_model(settings.model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"
    return model, tokenizer


def build_trainer(
    settings: TrainSettings, *, model: Any = None, tokenizer: Any = None, callbacks: Sequence[Any] = ()
) -> Any:
    """A ready `GRPOTrainer` for `settings` (pass `model` and `tokenizer` to skip loading them)."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    cuda = torch.cuda.is_available()
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        model, tokenizer = load_model(settings, cuda)
    use_vllm = settings.vllm_mode is not None
    if use_vllm and (not cuda or importlib.util.find_spec("vllm") is None):
        raise SystemExit(f"--vllm-mode {settings.vllm_mode} needs CUDA and vllm (pip install vllm)")
    config = GRPOConfig(
        output_dir=str(out),
        num_generations=settings.group_size,
        per_device_train_batch_size=settings.group_size * settings.prompts_per_step,
        max_completion_length=settings.max_completion_length,
        max_tool_calling_iterations=settings.max_turns,
        max_steps=settings.num_train_steps,
        learning_rate=settings.learning_rate,
        temperature=settings.temperature,
        beta=settings.beta,
        shuffle_dataset=Order(settings.order) is Order.SHUFFLE,
        logging_steps=1,
        save_strategy="no",
        report_to=settings.report_to or "none",
        use_cpu=not cuda,
        bf16=cuda,
        seed=settings.seed,
        use_vllm=use_vllm,
        vllm_mode=settings.vllm_mode or "colocate",
        model_init_kwargs=model_init_kwargs(settings, cuda) if isinstance(model, str) else None,
        remove_unused_columns=False,
        # episode_metrics only logs (its column repeats the return); the environment's get_reward,
        # which TRL appends with weight 1, is the reward.
        reward_weights=[0.0],
        gradient_checkpointing=settings.gradient_checkpointing,
    )
    env_settings = EnvSettings(
        images_dir=settings.images_dir,
        env_urls=tuple(settings.env_urls),
        api_key=os.environ.get("OPENENV_API_KEY") or None,
        max_steps=settings.max_turns,
        max_output_chars=settings.max_output_chars,
        max_completion_tokens=settings.max_completion_length,
        pool_size=settings.pool_size,
        transcripts=str(out / "transcripts.jsonl"),
        transcript_every=settings.transcript_every,
    )
    dataset = build_dataset(
        settings.scenarios,
        "train",
        settings.seeds_per_scenario,
        settings.order,
        settings.seed,
        settings.difficulty,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=[episode_metrics],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config(settings) if isinstance(model, str) else None,
        environment_factory=functools.partial(HpcToolEnv, env_settings, TokenCounter(tokenizer)),
        callbacks=[make_callback(out / "metrics.jsonl"), *callbacks],
    )


def train(settings: TrainSettings, **kwargs: Any) -> Any:
    """Train as `settings` say; return the trainer (its `state.log_history` holds the metrics)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(settings), indent=2) + "\n")
    trainer = build_trainer(settings, **kwargs)
    try:
        trainer.train()
    finally:
        close_local_episodes()
    if settings.save_model:
        trainer.save_model(str(out / "final"))
        trainer.processing_class.save_pretrained(str(out / "final"))
    return trainer


def main(argv: list[str] | None = None) -> int:
    """Parse flags, train, print where the outputs are."""
    settings = parse_args(argv)
    try:
        resolve_model(settings.model)  # before torch and TRL load: a missing model fails in a second
        train(settings)
    except HpcgymError as e:
        print(f"training.grpo: error: {e}", file=sys.stderr)
        return 1
    print(f"metrics: {Path(settings.output_dir) / 'metrics.jsonl'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
