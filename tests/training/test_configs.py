"""The shipped training configs run with the `train` extra, and a missing model is named at once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from hpcgym.errors import ConfigError
from training import evaluate, grpo
from training.models import REPO_ROOT, model_name, resolve_model

CONFIGS = sorted((REPO_ROOT / "training" / "configs").glob("*.json"))
pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="no train extra")


def test_there_are_configs():
    assert {p.name for p in CONFIGS} >= {"cpu-smoke.json", "qwen2.5-0.5b.json", "qwen2.5-7b-lora-vllm.json"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_its_loggers_are_installed(config):
    from transformers.integrations import get_reporting_integration_callbacks

    settings = grpo.parse_args(["--config", str(config)])
    # Each `report_to` logger is constructed as the trainer would (TensorBoardCallback raises
    # "TensorBoardCallback requires tensorboard" when the extra lacks it).
    for callback in get_reporting_integration_callbacks(settings.report_to):
        callback()
    if settings.model.startswith("build/"):
        assert settings.model == "build/tiny-qwen2"  # made by training.tiny; the README says how


def test_missing_local_model_is_one_line_naming_the_fix(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("training.models.REPO_ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    code = grpo.main(["--config", str(REPO_ROOT / "training/configs/cpu-smoke.json")])
    lines = capsys.readouterr().err.rstrip("\n").split("\n")
    assert code == 1 and len(lines) == 2
    assert lines[0] == f"training.grpo: error: no model at {tmp_path / 'build/tiny-qwen2'}"
    assert "python -m training.tiny --out build/tiny-qwen2" in lines[1]


def test_model_paths_resolve_from_the_checkout(monkeypatch, tmp_path):
    (tmp_path / "build" / "m").mkdir(parents=True)
    monkeypatch.setattr("training.models.REPO_ROOT", tmp_path)
    monkeypatch.chdir(REPO_ROOT.parent)
    assert resolve_model("build/m") == str(tmp_path / "build" / "m")
    assert resolve_model("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    for local in ("runs/qwen0.5b/final", "./m", "/nonexistent/model", "build/other"):
        with pytest.raises(ConfigError):
            resolve_model(local)


def test_evaluate_names_the_model_it_evaluated(tmp_path):
    final = tmp_path / "qwen0.5b" / "final"
    final.mkdir(parents=True)
    assert model_name(str(final)) == "qwen0.5b/final"
    assert model_name("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"


def test_evaluate_missing_model_is_one_line(tmp_path, capsys):
    assert evaluate.main(["--model", str(tmp_path / "runs" / "final")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("training.evaluate: error: no model at") and err.count("\n") == 2


def test_configs_readme_names_every_config():
    text = (REPO_ROOT / "training" / "configs" / "README.md").read_text()
    for config in CONFIGS:
        assert f"`{config.name}`" in text
    assert Path(REPO_ROOT / "pyproject.toml").read_text().count("tensorboard") >= 1
