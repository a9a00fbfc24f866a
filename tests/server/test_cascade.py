"""The cascade through the proxy: a bad cheap answer fails its gate, the request escalates with the cheap
answer as a hint, and the client gets the senior answer; path header, records and streamed bytes checked."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import router_config
from tierwise.testing.upstreams import Behaviour, FakeUpstream

JSON_FORMAT = {"type": "json_object"}


@pytest.fixture
def cascade(start_proxy: Any, openai_upstream: FakeUpstream) -> Iterator[Any]:
    made: list[openai.OpenAI] = []

    def make(**cascade_config: Any) -> tuple[Any, openai.OpenAI]:
        routing = {"policy": "cascade", "cascade": cascade_config}
        proxy = start_proxy(router_config(openai_upstream.base_url, routing=routing))
        client = openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
        made.append(client)
        return proxy, client

    yield make
    for client in made:
        client.close()


def ask(client: openai.OpenAI, text: str = "Give me the user as JSON", **kwargs: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="tierwise/auto", messages=[{"role": "user", "content": text}], **kwargs
    )


def test_a_bad_cheap_answer_escalates_with_a_hint(cascade: Any, openai_upstream: FakeUpstream) -> None:
    proxy, client = cascade()
    openai_upstream.script("cheap-a", Behaviour(content="name: Ada (not JSON)"))
    openai_upstream.script("mid-a", Behaviour(content='{"name": "Ada"}'))
    raw = ask(client, response_format=JSON_FORMAT)
    assert raw.parse().choices[0].message.content == '{"name": "Ada"}'
    assert raw.headers["x-tierwise-path"] == "cheap(fail:json)->mid(pass)"
    assert raw.headers["x-tierwise-tier"] == "mid" and raw.headers["x-tierwise-model"] == "mid-a"
    assert raw.headers["x-tierwise-reason"] == "cascade:cheapest"
    # The senior saw the junior's draft and why it failed, in its system prompt; the client's messages stand.
    senior = openai_upstream.requests_for("mid-a")[0].body["messages"]
    assert senior[0]["role"] == "system"
    assert "name: Ada (not JSON)" in senior[0]["content"] and "json: not valid JSON" in senior[0]["content"]
    assert senior[1:] == [{"role": "user", "content": "Give me the user as JSON"}]
    assert openai_upstream.requests_for("cheap-a")[0].body["messages"] == senior[1:]
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert record.decision is not None and record.decision["path"] == ["cheap(fail:json)", "mid(pass)"]
    assert [(a.model, a.status) for a in record.attempts] == [("cheap-a", "ok"), ("mid-a", "ok")]
    cheap_gates = {g["gate"]: g["passed"] for g in record.attempts[0].gates or []}
    assert cheap_gates["json"] is False and cheap_gates["not_empty"] is True
    # Both answers were paid for: 10 in / 5 out tokens at cheap-a's and mid-a's prices.
    assert record.cost_usd == pytest.approx((10 * 0.1 + 5 * 0.4 + 10 * 1.0 + 5 * 4.0) / 1e6)
    assert record.tier == "mid"


def test_a_good_cheap_answer_stands(cascade: Any, openai_upstream: FakeUpstream) -> None:
    _, client = cascade()
    openai_upstream.script("cheap-a", Behaviour(content='{"ok": true}'))
    raw = ask(client, response_format=JSON_FORMAT)
    assert raw.headers["x-tierwise-path"] == "cheap(pass)"
    assert [r.model for r in openai_upstream.requests] == ["cheap-a"]


def test_every_junior_draft_reaches_premium(cascade: Any, openai_upstream: FakeUpstream) -> None:
    _, client = cascade()
    openai_upstream.script("cheap-a", Behaviour(content="first draft"))
    openai_upstream.script("mid-a", Behaviour(content="second draft", finish_reason="length"))
    openai_upstream.script("premium-a", Behaviour(content='{"done": 1}'))
    raw = ask(client, response_format=JSON_FORMAT)
    assert raw.headers["x-tierwise-path"] == "cheap(fail:json)->mid(fail:not_truncated,json)->premium(pass)"
    system = openai_upstream.requests_for("premium-a")[0].body["messages"][0]["content"]
    assert system.index("first draft") < system.index("second draft")


def test_max_escalations_and_hints_off(cascade: Any, openai_upstream: FakeUpstream) -> None:
    _, client = cascade(max_escalations=1, hints=False)
    openai_upstream.set_default(Behaviour(content="never JSON"))
    raw = ask(client, response_format=JSON_FORMAT)
    assert raw.headers["x-tierwise-path"] == "cheap(fail:json)->mid(fail:json;final)"
    assert raw.parse().choices[0].message.content == "never JSON"
    assert openai_upstream.requests_for("mid-a")[0].body["messages"] == [
        {"role": "user", "content": "Give me the user as JSON"}
    ]


def test_an_upstream_failure_escalates(cascade: Any, openai_upstream: FakeUpstream) -> None:
    proxy, client = cascade()
    for model in ("cheap-a", "cheap-b"):
        openai_upstream.script(model, Behaviour("status", status=400))
    raw = ask(client, "hello")
    assert raw.headers["x-tierwise-path"] == "cheap(error)->mid(pass)"
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert [a.model for a in record.attempts] == ["cheap-a", "cheap-b", "mid-a"]


def test_the_blacklist_starts_the_cascade_at_premium(cascade: Any, openai_upstream: FakeUpstream) -> None:
    _, client = cascade()
    raw = ask(client, "Please do a contract review under New York law")
    assert raw.headers["x-tierwise-path"] == "premium(pass)"
    assert raw.headers["x-tierwise-reason"] == "cascade:rule:keyword=legal"


def test_tool_arguments_gate(cascade: Any, openai_upstream: FakeUpstream) -> None:
    _, client = cascade(gates=["tool_arguments"])
    tool = {
        "type": "function",
        "function": {
            "name": "book",
            "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        },
    }
    openai_upstream.script("cheap-b", Behaviour(tool_calls=[("book", '{"n": "two"}')]))
    openai_upstream.script("mid-a", Behaviour(tool_calls=[("book", '{"n": 2}')]))
    raw = ask(client, "Book two seats", tools=[tool])
    assert raw.headers["x-tierwise-path"] == "cheap(fail:tool_arguments)->mid(pass)"
    call = raw.parse().choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"n": 2}


def test_streaming_replaces_a_failing_junior_with_the_senior_live(
    cascade: Any, openai_upstream: FakeUpstream
) -> None:
    proxy, client = cascade()
    openai_upstream.script("cheap-a", Behaviour(content="not json at all"))
    openai_upstream.script("mid-a", Behaviour(content='{"streamed": "senior"}'))
    with client.chat.completions.with_streaming_response.create(
        model="tierwise/auto",
        messages=[{"role": "user", "content": "JSON please"}],
        response_format=JSON_FORMAT,
        stream=True,
    ) as response:
        request_id = response.headers["x-tierwise-request-id"]
        path = response.headers["x-tierwise-path"]
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == '{"streamed": "senior"}'
    assert path == "cheap(fail:json)->mid(pass)"
    assert openai_upstream.requests_for("mid-a")[0].body.get("stream") is None
    record = proxy.record(request_id)
    assert record.status == "ok" and record.response_text == text


def test_streaming_a_passing_junior(cascade: Any, openai_upstream: FakeUpstream) -> None:
    _, client = cascade(max_escalations=1)
    openai_upstream.script("cheap-a", Behaviour(content='{"junior": "fine"}'))
    stream = client.chat.completions.create(
        model="tierwise/auto",
        messages=[{"role": "user", "content": "JSON please"}],
        response_format=JSON_FORMAT,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == '{"junior": "fine"}'


def test_streaming_last_tier_is_streamed_live(cascade: Any, openai_upstream: FakeUpstream) -> None:
    _, client = cascade(max_escalations=1)
    openai_upstream.script("cheap-a", Behaviour(content="bad"))
    openai_upstream.script("mid-a", Behaviour(content="live from mid"))
    stream = client.chat.completions.create(
        model="tierwise/auto",
        messages=[{"role": "user", "content": "JSON please"}],
        response_format=JSON_FORMAT,
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "live from mid"
    assert openai_upstream.requests_for("mid-a")[0].body["stream"] is True


def test_hint_holdout_sends_some_escalations_without_a_hint_and_says_so(
    cascade: Any, openai_upstream: FakeUpstream
) -> None:
    proxy, client = cascade(hint_holdout=1.0)
    openai_upstream.script("cheap-a", Behaviour(content="not json"))
    openai_upstream.script("mid-a", Behaviour(content='{"a": 1}'))
    raw = ask(client, response_format=JSON_FORMAT)
    assert openai_upstream.requests_for("mid-a")[0].body["messages"] == [
        {"role": "user", "content": "Give me the user as JSON"}
    ]
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert record.decision is not None and record.decision["hinted"] is False


def test_a_hinted_escalation_is_recorded_as_such(cascade: Any, openai_upstream: FakeUpstream) -> None:
    proxy, client = cascade()
    openai_upstream.script("cheap-a", Behaviour(content="not json"))
    openai_upstream.script("mid-a", Behaviour(content='{"a": 1}'))
    raw = ask(client, response_format=JSON_FORMAT)
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert record.decision is not None and record.decision["hinted"] is True
    passed = ask(client, "hello")  # no escalation: hinted stays unknown
    assert proxy.record(passed.headers["x-tierwise-request-id"]).decision["hinted"] is None
