"""`tierwise label` over a real proxy run's records: every tier answers again from loopback upstreams, a
scripted judge model scores each answer against premium's, and the set it writes loads and trains a router."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from tierwise.cli import app
from tierwise.config import load_config
from tierwise.evals.dataset import load_records
from tierwise.store import RoutingRecord, SQLiteStore
from tierwise.testing.upstreams import Behaviour, FakeUpstream

CONFIG = """\
providers:
  up: {{type: openai, base_url: "{url}", api_key: sk-upstream}}
models:
  cheap-a: {{provider: up, price: {{input_per_mtok: 0.1, output_per_mtok: 0.4}}}}
  mid-a: {{provider: up, price: {{input_per_mtok: 1.0, output_per_mtok: 4.0}}}}
  premium-a: {{provider: up, price: {{input_per_mtok: 10.0, output_per_mtok: 40.0}}}}
  judge-a: {{provider: up, price: {{input_per_mtok: 1.0, output_per_mtok: 1.0}}}}
tiers: {{cheap: [cheap-a], mid: [mid-a], premium: [premium-a]}}
shadow:
  judge: {{model: judge-a, swap: false}}
retry: {{attempts: 1, timeout_s: 5}}
"""
PROMPTS = [  # sent in this order; label works newest first
    ("support", "Reset my password, please: it expired yesterday and the portal locks me out."),
    ("billing", "Why was I charged twice for the March invoice of the team plan?"),
    ("faq", "What are your opening hours on public holidays?"),
]


def flat(text: str) -> str:
    return " ".join(text.split())


def cli(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def verdict(winner: str) -> Behaviour:
    return Behaviour(content=orjson.dumps({"winner": winner, "reason": f"judged {winner}"}).decode())


@pytest.fixture
def served(tmp_path: Path, start_proxy: Any) -> Any:
    """A proxy that served the prompts (one twice), a tool conversation and a rejected request."""
    with FakeUpstream("openai") as upstream:
        config = tmp_path / "router.yaml"
        config.write_text(CONFIG.format(url=upstream.base_url))
        proxy = start_proxy(load_config(config), config)

        def ask(messages: list[dict[str, Any]], klass: str, model: str = "tierwise/auto") -> None:
            httpx.post(
                proxy.base_url + "/chat/completions",
                json={"model": model, "messages": messages},
                headers={"x-tierwise-class": klass},
                timeout=10,
            )

        for klass, text in [*PROMPTS[:1], *PROMPTS]:
            ask([{"role": "user", "content": text}], klass)
        tool_turns = [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function",
                             "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ]  # fmt: skip
        ask(tool_turns, "support")
        ask([{"role": "user", "content": "hi"}], "support", model="no-such-model")
        records = proxy.records()
        assert len(records) == 6
        upstream.reset()
        yield upstream, config, proxy


def test_label_replays_every_tier_judges_against_premium_and_trains(served: Any, tmp_path: Path) -> None:
    upstream, config, proxy = served
    # Newest first, one call at a time: faq's cheap and mid answers are judged, then billing's, then support's.
    # With swap off, A is the tier's answer and B premium's.
    upstream.script("judge-a", verdict("A"), verdict("tie"), verdict("B"), verdict("tie"), verdict("B"),
                    verdict("B"))  # fmt: skip
    out = tmp_path / "set.jsonl"
    db = proxy.store.path

    result = cli("label", "--config", config, "--db", db, "--out", out, "--concurrency", "1")

    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "skipped 2 records: 1 rejected before routing, 1 tool turns (their calls are not logged)" in text
    assert "3 distinct conversations from 4 records" in text
    assert "labelled 3 conversations" in text and "(judge: judge:judge-a)" in text
    assert "ideal tiers: cheap 1, mid 1, premium 1" in text
    # One call per tier per distinct conversation, and one judge call per non-premium tier.
    for model in ("cheap-a", "mid-a", "premium-a"):
        assert len(upstream.requests_for(model)) == 3
    assert len(upstream.requests_for("judge-a")) == 6
    # Nothing reached the proxy's store.
    assert len(proxy.records()) == 6

    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    by_class = {row["category"]: row for row in rows}
    assert list(by_class) == ["faq", "billing", "support"]
    faq, billing, support = by_class["faq"], by_class["billing"], by_class["support"]
    assert faq["messages"] == [{"role": "user", "content": PROMPTS[2][1]}]
    assert {m: o["score"] for m, o in faq["outcomes"].items()} == {
        "cheap-a": 1.0, "mid-a": 1.0, "premium-a": 1.0,
    }  # fmt: skip
    assert {m: o["score"] for m, o in billing["outcomes"].items()} == {
        "cheap-a": 0.0, "mid-a": 1.0, "premium-a": 1.0,
    }  # fmt: skip
    assert {m: o["score"] for m, o in support["outcomes"].items()} == {
        "cheap-a": 0.0, "mid-a": 0.0, "premium-a": 1.0,
    }  # fmt: skip
    assert [faq["ideal_tier"], billing["ideal_tier"], support["ideal_tier"]] == ["cheap", "mid", "premium"]
    assert support["label"]["logged_requests"] == 2  # the conversation logged twice is labelled once
    cheap = billing["outcomes"]["cheap-a"]
    assert cheap["response"].startswith("cheap-a says: Why was I charged twice")
    assert (cheap["input_tokens"], cheap["output_tokens"]) == (10, 5)
    assert cheap["cost_usd"] == pytest.approx((10 * 0.1 + 5 * 0.4) / 1e6)
    assert billing["ideal_output"] == billing["outcomes"]["mid-a"]["response"]
    assert billing["label"]["preference_vs_premium"] == {"cheap": 0.0, "mid": 0.5}

    # The project's loader reads it, and `tierwise train` learns a router from it.
    loaded = load_records(out)
    assert [r.ideal_tier for r in loaded] == ["cheap", "mid", "premium"]
    artifact = tmp_path / "router.tw"
    tiers = "cheap-a,mid-a,premium-a"
    trained = cli("train", "--data", out, "--tiers", tiers, "-o", artifact, "--folds", "0")
    assert trained.exit_code == 0, trained.output
    assert artifact.stat().st_size > 0


def test_without_a_judge_the_gates_compare(served: Any, tmp_path: Path) -> None:
    upstream, config, proxy = served
    config.write_text(config.read_text().replace("judge: {model: judge-a, swap: false}", "judge: {}"))
    # The first answer label asks for (faq's, on the cheap tier) comes back empty: it fails not_empty.
    upstream.script("cheap-a", Behaviour(content=""))
    out = tmp_path / "set.jsonl"

    result = cli("label", "--config", config, "--db", proxy.store.path, "--out", out, "--concurrency", "1")

    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "no judge (--judge or shadow.judge.model): answers are compared programmatically" in text
    assert upstream.requests_for("judge-a") == []
    rows = {row.category: row for row in load_records(out)}
    assert rows["faq"].outcomes["cheap-a"].score == 0.0 and rows["faq"].ideal_tier == "mid"
    # Two answers that both pass the gates tie: as good as premium.
    assert rows["billing"].ideal_tier == "cheap" and rows["support"].ideal_tier == "cheap"


def test_no_labelable_records(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(CONFIG.format(url="http://127.0.0.1:9/v1"))
    db = tmp_path / "records.db"
    store = SQLiteStore(db).start()
    for i, prompt in enumerate(["sha256:" + "ab" * 32, None]):
        store.submit(RoutingRecord(request_id=f"r{i}", ts=time.time(), endpoint="chat.completions",
                                   status="ok", http_status=200, request_class="faq", prompt=prompt))  # fmt: skip
    store.flush()
    store.close()

    result = cli("label", "--config", config, "--db", db, "--out", tmp_path / "set.jsonl")

    assert result.exit_code == 2
    text = flat(result.output)
    assert "skipped 2 records: " in text and "1 conversation hashed (store.prompts: hash)" in text
    assert "1 no conversation kept (store.prompts: none)" in text
    assert f"no labelable records in the last 7d in {db} (2 records)" in text
    assert not (tmp_path / "set.jsonl").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since: expected a span like 7d, 24h or 30m, got 'yesterday'"),
        (["--db", "nowhere.db"], "no records at nowhere.db: serve some requests first"),
        (["--judge", "gpt-judge"], "--judge: unknown model 'gpt-judge'"),
    ],
)
def test_bad_input_is_named(args: list[str], message: str, tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(CONFIG.format(url="http://127.0.0.1:9/v1"))
    result = cli("label", "--config", config, "--out", tmp_path / "set.jsonl", *args)
    assert result.exit_code == 2
    assert message in flat(result.output)
