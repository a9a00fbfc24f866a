"""The critique and grounding gates in a cascade, through the proxy: a bad verdict escalates, the judge's
calls are paid for in the record, a broken judge lets the answer stand, and documents sent with extra_body
(or tagged in the system prompt) ground the answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import router_config
from tierwise.testing.upstreams import Behaviour, FakeUpstream

QUESTION = "What is 17 + 25, and which planet is the largest?"
# FakeUpstream reports 10 input and 5 output tokens for every call; prices per million tokens.
CHEAP_A = (10 * 0.1 + 5 * 0.4) / 1e6
JUDGE = (10 * 0.2 + 5 * 0.8) / 1e6  # cheap-b judges
MID_A = (10 * 1.0 + 5 * 4.0) / 1e6
DOCS = [
    {"id": "kb-1", "text": "Refunds are issued within 30 days of purchase.", "title": "Refund policy"},
    {"id": "kb-2", "text": "Shipping takes five business days within the country."},
]


def verdict(score: float, **flags: Any) -> Behaviour:
    body = {
        "complete": True,
        "contradictions": False,
        "answers_question": True,
        "score": score,
        "reason": "ok",
    }
    return Behaviour(content=json.dumps({**body, **flags}))


@pytest.fixture
def cascade(start_proxy: Any, openai_upstream: FakeUpstream) -> Iterator[Any]:
    made: list[openai.OpenAI] = []

    def make(*gates: Any, **cascade_config: Any) -> tuple[Any, openai.OpenAI]:
        routing = {"policy": "cascade", "cascade": {"gates": list(gates), **cascade_config}}
        proxy = start_proxy(router_config(openai_upstream.base_url, routing=routing))
        client = openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
        made.append(client)
        return proxy, client

    yield make
    for client in made:
        client.close()


def ask(client: openai.OpenAI, text: str = QUESTION, system: str | None = None, **kwargs: Any) -> Any:
    messages: list[Any] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    return client.chat.completions.with_raw_response.create(
        model="tierwise/auto", messages=messages, **kwargs
    )


CRITIQUE = {"type": "critique", "model": "cheap-b", "threshold": 0.7}


# --- critique --------------------------------------------------------------------------------------------


def test_a_bad_critique_escalates_and_the_judge_is_paid_for(
    cascade: Any, openai_upstream: FakeUpstream
) -> None:
    proxy, client = cascade(CRITIQUE)
    openai_upstream.script("cheap-a", Behaviour(content="17 + 25 = 41."))
    openai_upstream.script("mid-a", Behaviour(content="17 + 25 = 42, and Jupiter is the largest planet."))
    openai_upstream.script(
        "cheap-b", verdict(0.2, complete=False, reason="Wrong sum, no planet."), verdict(0.9)
    )
    raw = ask(client)
    assert raw.parse().choices[0].message.content == "17 + 25 = 42, and Jupiter is the largest planet."
    assert raw.headers["x-tierwise-path"] == "cheap(fail:critique)->mid(pass)"
    # The judge saw the question and each answer, never the hint the senior got.
    judged = [r.body for r in openai_upstream.requests_for("cheap-b")]
    assert len(judged) == 2
    assert judged[0]["response_format"] == {"type": "json_object"} and judged[0]["temperature"] == 0.0
    first, second = (j["messages"][1]["content"] for j in judged)
    assert QUESTION in first and "17 + 25 = 41." in first
    assert "Jupiter is the largest planet" in second and "41" not in second and "<draft" not in second
    # The senior's hint carries the critique's reason.
    hint = openai_upstream.requests_for("mid-a")[0].body["messages"][0]["content"]
    assert "critique: score 0.20 < 0.7; incomplete: Wrong sum, no planet." in hint
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert [(a.model, a.status) for a in record.attempts] == [("cheap-a", "ok"), ("mid-a", "ok")]
    [cheap_gate] = record.attempts[0].gates or []
    assert cheap_gate["gate"] == "critique" and cheap_gate["passed"] is False and cheap_gate["score"] == 0.2
    assert cheap_gate["cost_usd"] == pytest.approx(JUDGE)
    assert (record.attempts[1].gates or [])[0]["passed"] is True
    assert record.routing_cost_usd == pytest.approx(2 * JUDGE)
    assert record.cost_usd == pytest.approx(CHEAP_A + MID_A + 2 * JUDGE)


def test_a_good_critique_stands(cascade: Any, openai_upstream: FakeUpstream) -> None:
    proxy, client = cascade(CRITIQUE)
    openai_upstream.script("cheap-b", verdict(0.8))
    raw = ask(client)
    assert raw.headers["x-tierwise-path"] == "cheap(pass)"
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert record.cost_usd == pytest.approx(CHEAP_A + JUDGE)
    assert [r.model for r in openai_upstream.requests] == ["cheap-a", "cheap-b"]


def test_the_last_tier_is_not_judged_by_a_paid_gate(cascade: Any, openai_upstream: FakeUpstream) -> None:
    # Its answer stands whatever a judge says, so no judge is paid for it.
    proxy, client = cascade(CRITIQUE, max_escalations=1)
    openai_upstream.script("cheap-b", verdict(0.3), verdict(0.4))
    raw = ask(client)
    assert raw.headers["x-tierwise-path"] == "cheap(fail:critique)->mid(pass)"
    assert raw.parse().choices[0].message.content.startswith("mid-a says:")
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert record.routing_cost_usd == pytest.approx(JUDGE)
    assert len(openai_upstream.requests_for("cheap-b")) == 1


@pytest.mark.parametrize(
    ("behaviour", "reason", "cost"),
    [
        (Behaviour("status", status=503), "critique unavailable: HTTP 503", 0.0),
        (Behaviour("slow", delay_s=3), "critique unavailable: no answer in 0.3s", 0.0),
        (Behaviour(content="The answer seems fine."), "critique unavailable: malformed answer", JUDGE),
    ],
    ids=["http-503", "slow", "not-json"],
)
def test_a_broken_judge_lets_the_answer_stand(
    cascade: Any, openai_upstream: FakeUpstream, behaviour: Behaviour, reason: str, cost: float
) -> None:
    proxy, client = cascade({**CRITIQUE, "timeout_s": 0.3})
    openai_upstream.script("cheap-b", behaviour)
    raw = ask(client)
    assert raw.headers["x-tierwise-path"] == "cheap(pass)"
    assert raw.parse().choices[0].message.content.startswith("cheap-a says:")
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    [gate] = record.attempts[0].gates or []
    assert gate["passed"] is True and gate["score"] == 0.5 and gate["reason"].startswith(reason)
    assert record.routing_cost_usd == pytest.approx(cost)
    assert record.cost_usd == pytest.approx(CHEAP_A + cost)


def test_critique_when_streaming(cascade: Any, openai_upstream: FakeUpstream) -> None:
    _, client = cascade(CRITIQUE)
    openai_upstream.script("cheap-a", Behaviour(content="17 + 25 = 41."))
    openai_upstream.script("mid-a", Behaviour(content="42; Jupiter."))
    openai_upstream.script("cheap-b", verdict(0.1, answers_question=False), verdict(0.9))
    with client.chat.completions.with_streaming_response.create(
        model="tierwise/auto", messages=[{"role": "user", "content": QUESTION}], stream=True
    ) as response:
        path = response.headers["x-tierwise-path"]
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert (path, text) == ("cheap(fail:critique)->mid(pass)", "42; Jupiter.")
    assert all(r.body.get("stream") is None for r in openai_upstream.requests_for("cheap-b"))


# --- grounding -------------------------------------------------------------------------------------------


def test_an_unknown_source_escalates(cascade: Any, openai_upstream: FakeUpstream) -> None:
    proxy, client = cascade({"type": "grounding"})
    openai_upstream.script("cheap-a", Behaviour(content="Refunds are issued within 30 days [kb-7]."))
    openai_upstream.script(
        "mid-a", Behaviour(content="Refunds are issued within 30 days of purchase [kb-1].")
    )
    raw = ask(client, "How long do refunds take?", extra_body={"documents": DOCS})
    assert raw.headers["x-tierwise-path"] == "cheap(fail:grounding)->mid(pass)"
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    [cheap_gate] = record.attempts[0].gates or []
    assert cheap_gate == {
        "gate": "grounding",
        "passed": False,
        "score": 0.0,
        "reason": "cites 'kb-7', not among the 2 document(s)",
        "cost_usd": 0.0,
    }
    assert (record.attempts[1].gates or [])[0]["reason"] == "1/1 sentences supported by the documents"
    assert record.routing_cost_usd == 0.0
    # The documents are for the gate: they are not sent upstream.
    assert all("documents" not in r.body for r in openai_upstream.requests)


def test_unsupported_claims_escalate(cascade: Any, openai_upstream: FakeUpstream) -> None:
    _, client = cascade({"type": "grounding", "threshold": 0.6})
    openai_upstream.script(
        "cheap-a",
        Behaviour(
            content="Refunds are issued within 30 days. Store credit never expires and ships worldwide."
        ),
    )
    openai_upstream.script("mid-a", Behaviour(content="Refunds are issued within 30 days of purchase."))
    raw = ask(client, "Refunds?", extra_body={"documents": DOCS})
    assert raw.headers["x-tierwise-path"] == "cheap(fail:grounding)->mid(pass)"
    hint = openai_upstream.requests_for("mid-a")[0].body["messages"][0]["content"]
    assert "grounding: 1/2 sentences supported by the documents, below 0.6" in hint


def test_grounding_on_tagged_system_blocks(cascade: Any, openai_upstream: FakeUpstream) -> None:
    _, client = cascade({"type": "grounding"})
    system = '<document id="policy">Refunds are issued within 30 days of purchase.</document>'
    openai_upstream.script("cheap-a", Behaviour(content="Refunds are issued within 30 days [policy]."))
    assert ask(client, "Refunds?", system=system).headers["x-tierwise-path"] == "cheap(pass)"
    openai_upstream.script("cheap-a", Behaviour(content="Refunds are issued within 30 days [2]."))
    openai_upstream.script("mid-a", Behaviour(content="Refunds are issued within 30 days [1]."))
    assert (
        ask(client, "Refunds?", system=system).headers["x-tierwise-path"]
        == "cheap(fail:grounding)->mid(pass)"
    )


def test_without_documents_grounding_does_not_apply(cascade: Any, openai_upstream: FakeUpstream) -> None:
    _, client = cascade({"type": "grounding"})
    openai_upstream.script("cheap-a", Behaviour(content="Anything goes [kb-9]."))
    assert ask(client).headers["x-tierwise-path"] == "cheap(pass)"


def test_grounding_and_critique_together(cascade: Any, openai_upstream: FakeUpstream) -> None:
    proxy, client = cascade({"type": "grounding"}, CRITIQUE)
    openai_upstream.script("cheap-a", Behaviour(content="Refunds are issued within 30 days [kb-1]."))
    openai_upstream.script("cheap-b", verdict(0.9))
    raw = ask(client, "How long do refunds take?", extra_body={"documents": DOCS})
    assert raw.headers["x-tierwise-path"] == "cheap(pass)"
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert [(g["gate"], g["passed"]) for g in record.attempts[0].gates or []] == [
        ("grounding", True),
        ("critique", True),
    ]
    assert record.routing_cost_usd == pytest.approx(JUDGE)
