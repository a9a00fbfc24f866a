"""OpenAI clients routed to an Anthropic-shaped upstream: the adapter translates both ways."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import router_config
from tierwise.testing.upstreams import Behaviour, FakeUpstream

TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Find an order",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}


@pytest.fixture
def client_for(
    start_proxy: Any, openai_upstream: FakeUpstream, anthropic_upstream: FakeUpstream
) -> Iterator[Any]:
    made: list[openai.OpenAI] = []

    def make() -> tuple[openai.OpenAI, Any]:
        proxy = start_proxy(router_config(openai_upstream.base_url, anthropic_upstream.base_url))
        client = openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
        made.append(client)
        return client, proxy

    yield make
    for client in made:
        client.close()


def test_completion_through_anthropic(client_for: Any, anthropic_upstream: FakeUpstream) -> None:
    client, proxy = client_for()
    raw = client.chat.completions.with_raw_response.create(
        model="tierwise/premium",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello there"},
        ],
        max_tokens=100,
        stop=["END"],
    )
    done = raw.parse()
    assert done.choices[0].message.content == "premium-a says: Hello there"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and (done.usage.prompt_tokens, done.usage.completion_tokens) == (10, 5)
    sent = anthropic_upstream.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-secret"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body["system"] == "You are terse."
    assert sent.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]
    assert sent.body["max_tokens"] == 100 and sent.body["stop_sequences"] == ["END"]
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert record.model == "premium-a" and record.attempts[0].provider == "claude"


def test_streaming_through_anthropic(client_for: Any, anthropic_upstream: FakeUpstream) -> None:
    client, _ = client_for()
    anthropic_upstream.script("premium-a", Behaviour(content="streamed from claude"))
    stream = client.chat.completions.create(
        model="tierwise/premium",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "streamed from claude"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_tool_use_round_trip_through_anthropic(client_for: Any, anthropic_upstream: FakeUpstream) -> None:
    client, _ = client_for()
    anthropic_upstream.script("premium-a", Behaviour(tool_calls=[("lookup_order", '{"order_id": "A-17"}')]))
    done = client.chat.completions.create(
        model="tierwise/premium", messages=[{"role": "user", "content": "Where is order A-17?"}], tools=[TOOL]
    )
    call = done.choices[0].message.tool_calls[0]
    assert done.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup_order" and json.loads(call.function.arguments) == {
        "order_id": "A-17"
    }
    assert anthropic_upstream.requests[-1].body["tools"][0]["input_schema"]["required"] == ["order_id"]
    client.chat.completions.create(
        model="tierwise/premium",
        messages=[
            {"role": "user", "content": "Where is order A-17?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": "lookup_order", "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": "shipped"},
        ],
        tools=[TOOL],
    )  # fmt: skip
    messages = anthropic_upstream.requests[-1].body["messages"]
    assert messages[1]["content"][0] == {
        "type": "tool_use",
        "id": call.id,
        "name": "lookup_order",
        "input": {"order_id": "A-17"},
    }
    assert messages[2]["role"] == "user"
    assert (
        messages[2]["content"][0]["type"] == "tool_result"
        and messages[2]["content"][0]["tool_use_id"] == call.id
    )


def test_anthropic_overloaded_is_retried_then_reported(
    client_for: Any, anthropic_upstream: FakeUpstream
) -> None:
    client, proxy = client_for()
    anthropic_upstream.script("premium-a", Behaviour("status", status=529))
    raw = client.chat.completions.with_raw_response.create(
        model="tierwise/premium", messages=[{"role": "user", "content": "hi"}]
    )
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert [(a.model, a.http_status, a.status) for a in record.attempts] == [
        ("premium-a", 529, "error"),
        ("premium-a", None, "ok"),
    ]
    anthropic_upstream.set_default(Behaviour("status", status=529))
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="tierwise/premium", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict) and [a["http_status"] for a in body["attempts"]] == [529, 529]
