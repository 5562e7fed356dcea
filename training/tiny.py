"""A tiny Qwen2 causal LM and a byte-level tokenizer with Qwen2.5's tool-calling template, made offline.

For smoke runs and tests where no weights can be downloaded: `build_tiny(out_dir)` writes a model
and tokenizer that `--model out_dir` loads. The weights are random except for a scripted output
head: the residual stream carries a one-hot of the current token (attention and MLP outputs start at
zero), so the model begins as a bigram chain that, at the start of an assistant turn, emits one of a
few whole tool calls (each one added token) or ends the turn. That makes tool calls, tool output
masking and rewards show up in two training steps; the weights still train like any other.

    python -m training.tiny --out build/tiny-qwen2
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Commands the scripted head chooses between at the start of each assistant turn (with `END`, the
# weight of ending the turn without a call). The munge fix solves seed-independent hpc_munge variants
# only by luck; what matters is that rewards differ within a group.
DEFAULT_COMMANDS: tuple[tuple[str, float], ...] = (
    ("sinfo -R", 0.3),
    ("systemctl status munge", 0.2),
    ("hostname", 0.2),
    ("scontrol show node compute-01", 0.15),
)
END_WEIGHT = 0.15
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
VOCAB = 600
HIDDEN = 640  # >= the vocabulary, so every token has its own residual direction


def tool_call_text(command: str) -> str:
    return "<tool_call>\n" + json.dumps({"name": "run", "arguments": {"command": command}}) + "\n</tool_call>"


def tokenizer_corpus() -> list[str]:
    """Text like the prompts and tool output the tokenizer will see, to learn its merges from."""
    from transformers.utils import get_json_schema

    from training.dataset import SYSTEM_PROMPT, USER_PROMPT
    from training.env import HpcToolEnv

    schema = json.dumps(get_json_schema(HpcToolEnv.run))
    return [SYSTEM_PROMPT, USER_PROMPT, schema, _TEMPLATE_TEXT, _OUTPUT_TEXT] * 4


_TEMPLATE_TEXT = (
    "<|im_start|>system\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n</tool_response>"
    "<|im_end|>\n<|im_start|>assistant\n"
)
_OUTPUT_TEXT = (
    "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST\n"
    "batch*       up   infinite      4   idle compute-[01-04]\n"
    "REASON               USER      TIMESTAMP           NODELIST\nNot responding       slurm     compute-01\n"
    "munge.service - MUNGE authentication service Loaded: loaded (/usr/lib/systemd/system/munge.service; "
    "enabled) Active: active (running) since login01 compute-01 compute-02 compute-03 compute-04 "
    "configuration push down* in sinfo and jobs cannot start there. Repair the node and return it to service."
)


def build_tokenizer(commands: Sequence[str], vocab_size: int = VOCAB) -> Any:
    """A byte-level BPE tokenizer with Qwen's special tokens and one token per scripted tool call.

    Its merges are learnt from `tokenizer_corpus()`: short prompts keep the tiny model fast.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from trl.chat_template_utils import qwen2_5_chat_template

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL) - len(commands),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=qwen2_5_chat_template,
        model_max_length=32768,
    )
    tokenizer.add_tokens([tool_call_text(c) for c in commands])
    tokenizer.padding_side = "left"
    return tokenizer


def build_model(
    tokenizer: Any, weights: Sequence[tuple[str, float]], end_weight: float, seed: int = 0
) -> Any:
    """A 2-layer Qwen2 whose head starts as the scripted bigram chain described above."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    vocab_size = len(tokenizer)
    if vocab_size > HIDDEN:
        raise ValueError(f"the vocabulary ({vocab_size}) must fit in the hidden size ({HIDDEN})")
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :vocab_size] = torch.eye(vocab_size)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        # After the final RMSNorm the hidden state is sqrt(HIDDEN) times the one-hot of the last token.
        head = torch.zeros(vocab_size, HIDDEN)
        scale = 1.0 / math.sqrt(HIDDEN)
        eos = tokenizer.eos_token_id
        newline = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("\n"))[0]
        total = sum(w for _, w in weights) + end_weight
        for command, weight in weights:
            head[tokenizer.convert_tokens_to_ids(tool_call_text(command)), newline] = (
                math.log(weight / total) * scale
            )
        head[eos, newline] = math.log(end_weight / total) * scale
        others = [i for i in range(vocab_size) if head[i, newline] == 0]
        head[others, newline] = -30.0 * scale
        # A whole tool call ends the turn. Every other column stays zero, so that what training adds
        # to the residual stream in those directions cannot swamp the chain.
        for command, _ in weights:
            head[eos, tokenizer.convert_tokens_to_ids(tool_call_text(command))] = 30.0 * scale
        model.lm_head.weight.copy_(head)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def build_tiny(
    out_dir: Path | None = None,
    commands: Sequence[tuple[str, float]] = DEFAULT_COMMANDS,
    end_weight: float = END_WEIGHT,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Build the tiny model and tokenizer; save both to `out_dir` if given.

    Returns:
        (model, tokenizer).
    """
    tokenizer = build_tokenizer([command for command, _ in commands])
    model = build_model(tokenizer, commands, end_weight, seed)
    if out_dir is not None:
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return model, tokenizer


def main(argv: list[str] | None = None) -> None:
    """Write the tiny model and tokenizer to --out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build_tiny(args.out, seed=args.seed)
    print(args.out)


if __name__ == "__main__":
    main()
