"""tasks.py's command line: flag names, short flags, and one-line errors before any work starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit

import tasks
from hpcgym.scenarios.evaluate import EpisodeRecord, write_report

COLLECTION = Collection.from_module(tasks)


def task_arguments(name: str) -> list:  # type: ignore[type-arg]
    return COLLECTION[name].get_arguments()


@pytest.mark.parametrize("name", sorted(COLLECTION.task_names))
def test_no_short_flag_hides_help(name):
    shorts = {alias for argument in task_arguments(name) for alias in argument.names if len(alias) == 1}
    assert "h" not in shorts, f"invoke {name} -h would not show help"


@pytest.mark.parametrize("name", ["eval", "gold", "bench", "serve", "transcripts", "test-images", "fidelity"])
def test_input_images_are_images(name):
    names = {alias for argument in task_arguments(name) for alias in argument.names}
    assert "images" in names
    # --out names an output everywhere it exists (build-images, fidelity), never the input images.
    if "out" in names:
        assert name in ("fidelity",)


def test_default_images_come_from_the_repository(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert tasks._images("") == Path(tasks.__file__).resolve().parent / "build" / "images"


def record(policy: str, scenario: str, solved: bool) -> EpisodeRecord:
    return EpisodeRecord(policy, scenario, 1, 800, "alert", "solved" if solved else "truncated", solved,
                         [], 1, 1.0 if solved else 0.0, {})  # fmt: skip


def one_line_error(e: Exit) -> tuple[str, str]:
    message, hint = str(e.message).split("\n")
    assert message.startswith("error: ") and hint.startswith("  hint: ")
    return message, hint


def test_transcripts_missing_file_is_one_line(tmp_path):
    with pytest.raises(Exit) as caught:
        tasks.transcripts(Context(), path=str(tmp_path / "nope.jsonl"))
    message, hint = one_line_error(caught.value)
    assert "nope.jsonl" in message and "invoke eval" in hint


def test_transcripts_unknown_scenario_is_an_error(tmp_path, capsys):
    paths = write_report([record("gold", "hpc_munge", True)], tmp_path)
    with pytest.raises(Exit) as caught:
        tasks.transcripts(Context(), path=str(paths["transcripts"]), scenario="nope")
    message, hint = one_line_error(caught.value)
    assert "'nope'" in message and "hpc_munge" in hint
    tasks.transcripts(Context(), path=str(paths["transcripts"]), scenario="hpc_munge")
    assert "hpc_munge" in capsys.readouterr().out


def test_transcripts_not_a_transcript(tmp_path):
    bad = tmp_path / "t.jsonl"
    bad.write_text('{"policy": 1}\n')
    with pytest.raises(Exit) as caught:
        tasks.transcripts(Context(), path=str(bad))
    one_line_error(caught.value)


@pytest.mark.parametrize("policies", ["nope", "gold,llm"])
def test_eval_bad_policies_fail_before_any_episode(policies, tmp_path, capsys):
    # The images do not exist: an error about the policy proves nothing was started first.
    with pytest.raises(Exit) as caught:
        tasks.eval(Context(), policies=policies, images=str(tmp_path / "none"), report_dir=str(tmp_path))
    message, _ = one_line_error(caught.value)
    assert "polic" in message
    assert "episodes" not in capsys.readouterr().err


def test_eval_json_keeps_results_json(tmp_path):
    extra = tmp_path / "elsewhere" / "summary.json"
    paths = write_report([record("gold", "hpc_munge", True)], tmp_path / "eval", extra)
    assert json.loads(paths["results"].read_text()) == json.loads(extra.read_text())
    assert paths["results"] == tmp_path / "eval" / "results.json"


def fake_images(root: Path, roles: tuple[str, ...] = ("rocky-login", "rocky-compute")) -> Path:
    for role in roles:
        (root / role).mkdir(parents=True)
        (root / role / "manifest.json").write_text(json.dumps({"base": {"digest": "abc123"}}))
    return root


def mock_context():  # type: ignore[no-untyped-def]
    from invoke import MockContext, Result

    return MockContext(run=Result(""), repeat=True)


@pytest.fixture(autouse=True)
def no_real_wheelhouse(monkeypatch, tmp_path):
    # build-server-image empties REPO/build/wheels; the tests must not touch the checkout's.
    monkeypatch.setattr(tasks, "REPO", tmp_path / "repo")


def test_server_image_from_our_base_imports_it_and_passes_it_as_build_arg(monkeypatch, tmp_path):
    monkeypatch.setattr(tasks, "DEFAULT_OUT", fake_images(tmp_path / "images"))
    monkeypatch.setattr(tasks, "build_images", lambda c: pytest.fail("images are built already"))
    monkeypatch.setattr(tasks.shutil, "which", lambda name: f"/usr/bin/{name}")
    c = mock_context()
    tasks.build_server_image(c)
    commands = [call.args[0] for call in c.run.call_args_list]
    assert "abc123/rootfs.tar.zst | docker import - hpcgym-base" in commands[0]
    assert "--build-arg BASE=hpcgym-base" in commands[-1] and "-t hpcgym-server" in commands[-1]


def test_server_image_from_a_clean_clone_builds_the_images_first(monkeypatch, tmp_path):
    monkeypatch.setattr(tasks, "DEFAULT_OUT", tmp_path / "images")
    built = []

    def build(c):  # type: ignore[no-untyped-def]
        built.append(fake_images(tmp_path / "images"))

    monkeypatch.setattr(tasks, "build_images", build)
    monkeypatch.setattr(tasks.shutil, "which", lambda name: f"/usr/bin/{name}")
    tasks.build_server_image(mock_context())
    assert built


def test_server_image_registry_base_must_be_pinned(monkeypatch, tmp_path):
    with pytest.raises(Exit) as caught:
        tasks.build_server_image(mock_context(), base="debian:bookworm-slim")
    message, hint = one_line_error(caught.value)
    assert "not pinned" in message and "@sha256:" in hint
    monkeypatch.setattr(tasks, "DEFAULT_OUT", fake_images(tmp_path / "images"))
    monkeypatch.setattr(tasks.shutil, "which", lambda name: f"/usr/bin/{name}")
    c = mock_context()
    pinned = "debian:bookworm-slim@sha256:" + "0" * 64
    tasks.build_server_image(c, base=pinned)
    commands = [call.args[0] for call in c.run.call_args_list]
    assert not any("docker import" in command for command in commands)
    assert f"--build-arg BASE={pinned}" in commands[-1]
