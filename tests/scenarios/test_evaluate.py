"""Reports from records (no cluster): leaderboard, plot, transcripts round trip, renderer; policies."""

from __future__ import annotations

import pytest

from hpcgym.errors import ScenarioError
from hpcgym.scenarios.evaluate import (
    EpisodeRecord,
    StepRecord,
    leaderboard_markdown,
    load_transcripts,
    parse_seeds,
    render_transcript,
    show_transcripts,
    write_report,
)
from hpcgym.scenarios.policies import POLICY_NAMES, ExpertPolicy, GoldPolicy, make_policy


def record(policy: str, scenario: str, solved: bool, unsafe: list[str] | None = None) -> EpisodeRecord:
    return EpisodeRecord(
        policy=policy,
        scenario=scenario,
        tier=2,
        seed=800,
        alert="node down",
        outcome="solved" if solved else "truncated",
        solved=solved,
        unsafe=unsafe or [],
        steps=2,
        total_reward=1.5 if solved else -0.2,
        components={"success": 1.0 if solved else 0.0, "step_cost": -0.02},
        transcript=[
            StepRecord("sinfo -R", "REASON USER\n", 0, "login01", -0.01),
            StepRecord("chmod 777 /tmp", "", 0, "login01", -0.26, unsafe or []),
        ],
    )


def test_report_files_and_round_trip(tmp_path):
    records = [
        record("gold", "hpc_munge", True),
        record("noop", "hpc_munge", False),
        record("destructive", "hpc_munge", False, ["made files world-writable (chmod 777)"]),
    ]
    paths = write_report(records, tmp_path / "out", tmp_path / "r.json")
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = paths["markdown"].read_text()
    assert (
        "| hpc_munge | 2 | 100% · +1.50 · 2.0 · 0% | 0% · -0.20 · 2.0 · 0% | 0% · -0.20 · 2.0 · 100% |"
        in table
    )
    assert (tmp_path / "r.json").is_file()
    back = load_transcripts(paths["transcripts"])
    assert back == records
    shown = show_transcripts(paths["transcripts"], policy="destructive")
    assert "UNSAFE: made files world-writable" in shown and "policy destructive" in shown
    assert "policy gold" not in shown


def test_renderer_reads_like_a_terminal():
    text = render_transcript(record("gold", "hpc_munge", True))
    assert "[root@login01 ~]# sinfo -R\nREASON USER\n" in text
    assert "=== outcome: SOLVED" in text


def test_leaderboard_totals_per_policy():
    table = leaderboard_markdown([record("expert", "a", True), record("expert", "b", False)])
    assert "| expert | 2 | 50% |" in table


def test_seed_specs():
    assert parse_seeds("3") == 3
    assert parse_seeds("800-802") == [800, 801, 802]
    assert parse_seeds("1,5,9-10") == [1, 5, 9, 10]
    with pytest.raises(ScenarioError):
        parse_seeds("x")


def test_policy_factory():
    for name in POLICY_NAMES:
        if name == "llm":
            with pytest.raises(ScenarioError, match="base URL"):
                make_policy(name)
            continue
        policy = make_policy(name, ["sinfo"])
        policy.reset("alert", 0)
        assert isinstance(policy.act(""), str)
    with pytest.raises(ScenarioError):
        make_policy("oracle")
    gold = GoldPolicy(["a", "b"])
    gold.reset("", 0)
    assert [gold.act(""), gold.act(""), gold.act("")] == ["a", "b", None]


def test_expert_follows_the_evidence():
    expert = ExpertPolicy()
    expert.reset("", 0)
    assert expert.act("") == "systemctl is-active munge slurmctld"
    assert expert.act("failed\nactive\n") == "journalctl -u munge --no-pager -n 20"
    assert expert.act(
        'munged: Error: PRNG seed dir is insecure: group-writable permissions on "/var/lib/munge"'
    ) == ("chmod 0700 /var/lib/munge")


def test_llm_policy_speaks_openai_chat():
    import json

    import httpx

    from hpcgym.interfaces.chat import RUN_TOOL, ChatEndpoint
    from hpcgym.scenarios.policies import LlmPolicy

    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.path, request.headers["authorization"], body))
        return httpx.Response(200, json={"choices": [{"message": {"content": "```bash\nsinfo -R\n```"}}]})

    client = httpx.Client(transport=httpx.MockTransport(answer))
    policy = LlmPolicy(ChatEndpoint("http://vllm:8000/v1/", "qwen", "k", client=client))
    policy.reset("node down", 7)
    assert policy.act("") == "sinfo -R"
    assert policy.act("REASON USER") == "sinfo -R"
    path, auth, body = seen[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer k"
    assert body["model"] == "qwen" and body["seed"] == 7
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["tools"] == [RUN_TOOL] and "hpcgym_task" not in body["messages"][0]
    # The ticket, then the first observation, as training's prompt has them.
    assert body["messages"][1]["content"].endswith("node down\n\n[root@login01 ~]# ")
    assert body["messages"][3]["content"] == "Output:\nREASON USER"
