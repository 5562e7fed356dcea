"""Two GRPO steps with TRL end to end: a tiny Qwen2 built here, the real environment, in-process and over OpenEnv.

The model is `training.tiny`: random weights with a scripted head that starts each assistant turn
with one of a few whole tool calls, or ends the turn. The tests check that its tool calls reached the
cluster (the transcripts hold real command output), that only the sampled tokens are trained (tool
output is masked; every turn's tokens are trained), and that the episode returns are the trainer's
rewards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.training.conftest import env_server

pytestmark = pytest.mark.slow

GROUP = 4


def train_recording(trainer, with_inputs: bool = False) -> list[dict]:  # type: ignore[no-untyped-def]
    """Train `trainer`, keeping each batch its `_generate_and_score_completions` returned (with the
    batch's inputs too, `with_inputs`); the local episodes are closed after."""
    from training.backends import close_local_episodes

    batches: list[dict] = []
    generate = trainer._generate_and_score_completions

    def recording(inputs):  # type: ignore[no-untyped-def]
        output = generate(inputs)
        batches.append({"inputs": [dict(x) for x in inputs], **output} if with_inputs else output)
        return output

    trainer._generate_and_score_completions = recording
    try:
        trainer.train()
    finally:
        close_local_episodes()
    return batches


def run_two_steps(tmp_path: Path, images: Path, env_urls: list[str]) -> tuple[object, list[dict], list[dict]]:
    from training.grpo import TrainSettings, build_trainer
    from training.tiny import build_tiny

    model, tokenizer = build_tiny()
    settings = TrainSettings(
        model="tiny",
        scenarios=["hpc_munge"],
        group_size=GROUP,
        max_turns=3,
        num_train_steps=2,
        max_completion_length=1024,
        max_output_chars=600,
        seeds_per_scenario=2,
        learning_rate=1e-5,
        images_dir=str(images),
        env_urls=env_urls,
        output_dir=str(tmp_path),
        save_model=False,
        gradient_checkpointing=False,
        transcript_every=1,
    )
    trainer = build_trainer(settings, model=model, tokenizer=tokenizer)
    batches = train_recording(trainer, with_inputs=True)
    transcripts = [json.loads(line) for line in (tmp_path / "transcripts.jsonl").read_text().splitlines()]
    return trainer, batches, transcripts


def check_run(trainer, batches, transcripts, backend: str) -> None:  # type: ignore[no-untyped-def]
    from training.tiny import DEFAULT_COMMANDS, tool_call_text

    tokenizer = trainer.processing_class
    call_ids = {tokenizer.convert_tokens_to_ids(tool_call_text(c)): c for c, _ in DEFAULT_COMMANDS}
    eos = tokenizer.eos_token_id

    # Two optimizer steps, one group of GROUP rollouts each; every rollout was scored and written.
    assert len(batches) == 2 and trainer.state.global_step == 2
    assert len(transcripts) == 2 * GROUP
    assert {t["backend"] for t in transcripts} == {backend}

    # Groups share their start state: one (scenario, seed) per batch, one alert per group.
    for index, batch in enumerate(batches):
        assert len({(x["scenario"], x["seed"]) for x in batch["inputs"]}) == 1
        assert len({t["alert"] for t in transcripts[index * GROUP : (index + 1) * GROUP]}) == 1

    # Tool calls reached the cluster: real output of the commands the model chose.
    steps = [step for t in transcripts for step in t["steps"]]
    for group in (transcripts[:GROUP], transcripts[GROUP:]):
        assert any(t["steps"] for t in group), "a step's rollouts made no tool call"
    for step in steps:
        if step["command"] == "hostname":
            assert step["output"].startswith("login01")
        if step["command"] == "sinfo -R":
            assert "REASON" in step["output"]

    for batch, group in zip(batches, (transcripts[:GROUP], transcripts[GROUP:]), strict=True):
        completion_ids, completion_mask, tool_mask = (
            batch["completion_ids"],
            batch["completion_mask"],
            batch["tool_mask"],
        )
        for row, transcript in enumerate(group):
            ids = completion_ids[row][completion_mask[row].bool()].tolist()
            trained = [t for t, m in zip(ids, tool_mask[row][: len(ids)].tolist(), strict=True) if m]
            masked = [t for t, m in zip(ids, tool_mask[row][: len(ids)].tolist(), strict=True) if not m]
            # Every token trained was sampled by the model (a whole tool call, or the end of a turn)...
            assert set(trained) <= set(call_ids) | {eos}
            # ...every turn is trained, not only the first: one call token per command the env ran...
            assert [call_ids[t] for t in trained if t in call_ids][: len(transcript["steps"])] == [
                s["command"] for s in transcript["steps"]
            ]
            # ...and the tool output the env returned is in the sequence but masked.
            if transcript["steps"]:
                assert "<tool_response>" in tokenizer.decode(masked)
                assert transcript["steps"][0]["output"][:20] in tokenizer.decode(masked)

    # The trainer's rewards are the episode returns. A rollout whose episode broke (a daemon that
    # would not start on a loaded machine) is unscored: None to TRL, left out of the mean.
    logged = [h for h in trainer.state.log_history if "rewards/HpcToolEnv/mean" in h]
    assert len(logged) == 2
    for record, group in zip(logged, (transcripts[:GROUP], transcripts[GROUP:]), strict=True):
        scored = [t for t in group if not t["infra_failed"]]
        assert len(scored) >= GROUP // 2, f"too many broken episodes: {group}"
        expected = sum(t["total_reward"] for t in scored) / len(scored)
        assert record["rewards/HpcToolEnv/mean"] == pytest.approx(expected, abs=1e-6), group
        assert record["hpcgym/steps"] == pytest.approx(sum(len(t["steps"]) for t in scored) / len(scored))
        # The metrics column shows the same numbers and, weighted 0, does not count the return twice.
        assert record["rewards/episode_metrics/mean"] == pytest.approx(expected, abs=1e-6)
        assert record["reward"] == pytest.approx(expected, abs=1e-6)
    metrics = Path(trainer.args.output_dir) / "metrics.jsonl"
    assert metrics.read_text().count("\n") >= 2
    for line in metrics.read_text().splitlines():
        for key, value in json.loads(line).items():
            if key.startswith("reward"):
                assert isinstance(value, float) and math.isfinite(value), (key, value)


def test_two_grpo_steps_in_process(tmp_path, trl_stack, episode_images) -> None:
    trainer, batches, transcripts = run_two_steps(tmp_path, episode_images, [])
    check_run(trainer, batches, transcripts, "local")


def test_two_grpo_steps_through_a_local_openenv_server(tmp_path, trl_stack, episode_images) -> None:
    with env_server(episode_images, tmp_path / "server.log", sessions=2 * GROUP) as server:
        trainer, batches, transcripts = run_two_steps(tmp_path, episode_images, [server.url])
    check_run(trainer, batches, transcripts, "remote")


def test_one_grpo_step_through_rollout_func(tmp_path, trl_stack, episode_images) -> None:
    from trl import GRPOConfig, GRPOTrainer

    from training.dataset import build_dataset
    from training.env import EnvSettings
    from training.rollout import env_reward, make_rollout_func
    from training.tiny import build_tiny

    model, tokenizer = build_tiny()
    config = GRPOConfig(
        output_dir=str(tmp_path),
        num_generations=GROUP,
        per_device_train_batch_size=GROUP,
        max_completion_length=1024,
        max_steps=1,
        learning_rate=1e-5,
        beta=0.0,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        gradient_checkpointing=False,
    )
    settings = EnvSettings(images_dir=str(episode_images), max_steps=3, max_output_chars=600)
    trainer = GRPOTrainer(
        model=model,
        processing_class=tokenizer,
        args=config,
        train_dataset=build_dataset(["hpc_munge"], seeds_per_scenario=2),
        reward_funcs=[env_reward],
        rollout_func=make_rollout_func(settings, max_turns=3),
    )
    (batch,) = train_recording(trainer)
    masked = [
        tokenizer.decode(ids[(m == 1) & (t == 0)].tolist())
        for ids, m, t in zip(
            batch["completion_ids"], batch["completion_mask"], batch["tool_mask"], strict=True
        )
    ]
    assert any("<tool_response>" in text for text in masked), "no tool output came back from the cluster"
    logged = trainer.state.log_history[0]
    assert "rewards/env_reward/mean" in logged and logged["rewards/env_reward/mean"] <= 0
