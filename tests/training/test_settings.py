"""Flags and config files of training.grpo (no torch needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.grpo import TrainSettings, parse_args

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def test_flags_override_a_config_file(tmp_path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"model": "m", "group_size": 4, "scenarios": ["hpc_munge"]}))
    settings = parse_args(
        ["--config", str(config), "--group-size", "6", "--env-urls", "http://a:1", "http://b:2"]
    )
    assert settings.model == "m" and settings.group_size == 6 and settings.scenarios == ["hpc_munge"]
    assert settings.env_urls == ["http://a:1", "http://b:2"]
    assert parse_args(["--qlora"]).qlora and not parse_args([]).lora


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.json")), ids=lambda p: p.name)
def test_shipped_configs_parse(path: Path) -> None:
    assert isinstance(parse_args(["--config", str(path)]), TrainSettings)


def test_unknown_settings_are_refused(tmp_path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"modle": "typo"}))
    with pytest.raises(SystemExit):
        parse_args(["--config", str(config)])
