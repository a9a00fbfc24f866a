"""The LLM classifier in front of routing: a cheap model's JSON verdict picks the start tier; its cost is
routing tax; a slow or malformed verdict falls back to the other classifiers and never fails the request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import router_config
from tierwise.testing.upstreams import Behaviour, FakeUpstream

# The fake upstream reports 10 input and 5 output tokens; cheap-b costs $0.2 / $0.8 per million.
CLASSIFIER_COST = (10 * 0.2 + 5 * 0.8) / 1e6


def verdict(difficulty: str, confidence: float, task: str = "chat") -> Behaviour:
    body = {"task": task, "difficulty": difficulty, "needs_tools": False, "domain": "general",
            "confidence": confidence}  # fmt: skip
    return Behaviour(content=json.dumps(body))


@pytest.fixture
def proxy_and_client(start_proxy: Any, openai_upstream: FakeUpstream) -> Iterator[tuple[Any, openai.OpenAI]]:
    config = router_config(
        openai_upstream.base_url, routing={"llm_classifier": {"model": "cheap-b", "timeout_s": 0.5}}
    )
    proxy = start_proxy(config)
    client = openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
    yield proxy, client
    client.close()


def ask(client: openai.OpenAI, text: str, model: str = "tierwise/auto") -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}]
    )


def test_verdict_picks_the_tier_and_costs_routing_tax(
    proxy_and_client: Any, openai_upstream: FakeUpstream
) -> None:
    proxy, client = proxy_and_client
    openai_upstream.script("cheap-b", verdict("hard", 0.9, task="reasoning"))
    raw = ask(client, "Rephrase: the cat sat on the mat.")
    assert raw.headers["x-tierwise-tier"] == "premium"
    assert raw.headers["x-tierwise-reason"] == "llm:hard,confidence=0.90"
    sent = openai_upstream.requests_for("cheap-b")[0].body
    assert (
        sent["messages"][0]["role"] == "system"
        and "reply with one JSON object" in sent["messages"][0]["content"]
    )
    assert "the cat sat on the mat" in sent["messages"][1]["content"]
    assert sent["response_format"] == {"type": "json_object"} and sent["temperature"] == 0.0
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert record.routing_cost_usd == pytest.approx(CLASSIFIER_COST)
    answer_cost = (10 * 10.0 + 5 * 40.0) / 1e6  # premium-a
    assert record.cost_usd == pytest.approx(CLASSIFIER_COST + answer_cost)
    assert float(raw.headers["x-tierwise-cost-usd"]) == pytest.approx(record.cost_usd)


def test_low_confidence_starts_a_tier_higher(proxy_and_client: Any, openai_upstream: FakeUpstream) -> None:
    _, client = proxy_and_client
    openai_upstream.script("cheap-b", verdict("easy", 0.3))
    raw = ask(client, "hello there")
    assert raw.headers["x-tierwise-tier"] == "mid"
    assert raw.headers["x-tierwise-reason"] == "llm:easy,confidence=0.30<0.6:up"


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        (Behaviour(content="I think this one is easy."), "llm:fallback(malformed answer: no JSON object"),
        (Behaviour(content='{"difficulty": "trivial"}'), "llm:fallback(malformed answer: difficulty must be"),
        (Behaviour("slow", delay_s=2), "llm:fallback(no answer in 0.5s)"),
        (Behaviour("status", status=500), "llm:fallback(UpstreamError)"),
    ],
    ids=["prose", "bad-field", "slow", "error"],
)
def test_a_failed_verdict_falls_back_and_still_answers(
    proxy_and_client: Any, openai_upstream: FakeUpstream, behaviour: Behaviour, why: str
) -> None:
    proxy, client = proxy_and_client
    openai_upstream.script("cheap-b", behaviour)
    raw = ask(client, "Rephrase: good morning")
    assert raw.status_code == 200
    reason = raw.headers["x-tierwise-reason"]
    assert reason.startswith(why), reason
    assert reason.endswith(";task=rephrase")
    assert raw.headers["x-tierwise-tier"] == "cheap"
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    spent = CLASSIFIER_COST if behaviour.kind == "ok" else 0.0
    assert record.routing_cost_usd == pytest.approx(spent)


def test_blacklist_still_forces_premium(proxy_and_client: Any, openai_upstream: FakeUpstream) -> None:
    _, client = proxy_and_client
    openai_upstream.script("cheap-b", verdict("easy", 0.99))
    raw = ask(client, "Please do a contract review under New York law")
    assert raw.headers["x-tierwise-tier"] == "premium"
    assert raw.headers["x-tierwise-reason"] == "rule:keyword=legal"


def test_explicit_tiers_skip_the_classifier(proxy_and_client: Any, openai_upstream: FakeUpstream) -> None:
    _, client = proxy_and_client
    raw = ask(client, "hello", model="tierwise/mid")
    assert raw.headers["x-tierwise-reason"] == "explicit:tier"
    assert [r.model for r in openai_upstream.requests] == ["mid-a"]
