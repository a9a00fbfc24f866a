"""The proxy's Anthropic Messages API, driven by the official anthropic SDK and raw HTTP over loopback, with
real fake upstreams of both shapes behind it: cheap and mid on an OpenAI-shaped upstream, premium on an
Anthropic-shaped one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import router_config
from tierwise.testing.upstreams import Behaviour, FakeUpstream

WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
VERSION = {"anthropic-version": "2023-06-01"}

_clients: list[anthropic.Anthropic] = []


def claude(proxy: Any, api_key: str = "sk-client", **kwargs: Any) -> anthropic.Anthropic:
    made = anthropic.Anthropic(base_url=proxy.url, api_key=api_key, max_retries=0, **kwargs)
    _clients.append(made)
    return made


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


@pytest.fixture
def proxy(start_proxy: Any, openai_upstream: FakeUpstream, anthropic_upstream: FakeUpstream) -> Any:
    return start_proxy(router_config(openai_upstream.base_url, anthropic_upstream.base_url))


def body(**fields: Any) -> dict[str, Any]:
    return {
        "model": "tierwise/auto",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        **fields,
    }


def raw_stream(proxy: Any, data: dict[str, Any]) -> tuple[httpx.Response, list[tuple[str, dict[str, Any]]]]:
    """POST a streamed request; the response and its events, each checked to be exactly
    ``event: <name>`` and ``data: <json>`` with the data's type naming the event."""
    with httpx.stream(
        "POST", proxy.url + "/v1/messages", json={**data, "stream": True}, headers=VERSION
    ) as r:
        raw = r.read().decode()
    assert raw.endswith("\n\n")
    events = []
    for block in raw[:-2].split("\n\n"):
        event_line, data_line = block.split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: "), block
        name, payload = event_line[7:], json.loads(data_line[6:])
        assert payload["type"] == name
        events.append((name, payload))
    return r, events


# ---- answers ----


def test_message_is_routed_explained_and_recorded(proxy: Any, openai_upstream: FakeUpstream) -> None:
    raw = claude(proxy).messages.with_raw_response.create(
        model="tierwise/auto",
        max_tokens=100,
        messages=[{"role": "user", "content": "Rephrase: the cat sat on the mat."}],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [
        ("text", "cheap-a says: Rephrase: the cat sat on the mat.")
    ]
    assert message.model == "cheap-a" and message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (10, 5)
    headers = raw.headers
    assert headers["x-tierwise-tier"] == "cheap" and headers["x-tierwise-model"] == "cheap-a"
    assert headers["x-tierwise-class"] == "rephrase" and headers["x-tierwise-reason"] == "task=rephrase"
    assert headers["request-id"] == headers["x-tierwise-request-id"] == message.id == raw.request_id
    assert message.id.startswith("msg_")
    record = proxy.record(message.id)
    assert record.endpoint == "anthropic.messages" and record.status == "ok" and record.http_status == 200
    assert (record.tier, record.model, record.requested_model) == ("cheap", "cheap-a", "tierwise/auto")
    assert float(headers["x-tierwise-cost-usd"]) == pytest.approx(record.cost_usd)
    assert float(headers["x-tierwise-baseline-cost-usd"]) == pytest.approx(record.baseline_cost_usd)
    assert record.response_text == message.content[0].text
    sent = openai_upstream.requests[-1]
    assert sent.body["messages"] == [{"role": "user", "content": "Rephrase: the cat sat on the mat."}]
    assert sent.body["max_completion_tokens"] == 100
    # The client's key stays here; the upstream gets the provider's.
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret"


def test_request_fields_reach_an_anthropic_upstream(proxy: Any, anthropic_upstream: FakeUpstream) -> None:
    message = claude(proxy).messages.create(
        model="tierwise/premium",
        max_tokens=300,
        system=[
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Use metric units."},
        ],
        messages=[
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "text", "text": "What is in this picture?"},
            ]},
        ],
        stop_sequences=["END"],
        metadata={"user_id": "user-7"},
        extra_body={"temperature": 0.2, "top_k": 5},
    )  # fmt: skip
    assert (
        message.model == "premium-a" and message.content[0].text == "premium-a says: What is in this picture?"
    )
    sent = anthropic_upstream.requests[-1]
    assert sent.headers["x-api-key"] == "sk-ant-secret" and sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body == {
        "model": "premium-a",
        "max_tokens": 300,
        "system": "Be brief.\nUse metric units.",
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "text", "text": "What is in this picture?"},
        ]}],
        "temperature": 0.2,
        "top_k": 5,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "user-7"},
    }  # fmt: skip


def test_request_fields_reach_an_openai_upstream(proxy: Any, openai_upstream: FakeUpstream) -> None:
    claude(proxy).messages.create(
        model="tierwise/mid",
        max_tokens=50,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello"}],
        stop_sequences=["\n\n"],
        metadata={"user_id": "user-7"},
        extra_body={"temperature": 0.5, "top_p": 0.9},
    )
    sent = openai_upstream.requests[-1].body
    assert sent["model"] == "mid-a"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]
    assert (sent["max_completion_tokens"], sent["stop"], sent["user"]) == (50, ["\n\n"], "user-7")
    assert (sent["temperature"], sent["top_p"]) == (0.5, 0.9)


async def test_async_client(proxy: Any) -> None:
    async with anthropic.AsyncAnthropic(base_url=proxy.url, api_key="k", max_retries=0) as client:
        message = await client.messages.create(
            model="tierwise/mid", max_tokens=20, messages=[{"role": "user", "content": "hey"}]
        )
        assert message.content[0].text == "mid-a says: hey"
        stream = await client.messages.create(
            model="tierwise/premium",
            max_tokens=20,
            messages=[{"role": "user", "content": "hey"}],
            stream=True,
        )
        texts = [
            e.delta.text
            async for e in stream
            if e.type == "content_block_delta" and e.delta.type == "text_delta"
        ]
        assert "".join(texts) == "premium-a says: hey"
        async with client.messages.stream(
            model="tierwise/cheap", max_tokens=20, messages=[{"role": "user", "content": "yo"}]
        ) as helper:
            assert "".join([t async for t in helper.text_stream]) == "cheap-a says: yo"


# ---- streams ----


@pytest.mark.parametrize(
    ("model", "served_by"), [("tierwise/cheap", "cheap-a"), ("tierwise/premium", "premium-a")]
)
def test_stream_events_in_order_from_either_upstream(
    proxy: Any, openai_upstream: FakeUpstream, anthropic_upstream: FakeUpstream, model: str, served_by: str
) -> None:
    upstream = anthropic_upstream if served_by == "premium-a" else openai_upstream
    upstream.script(served_by, Behaviour(content="one two three four five six"))
    response, events = raw_stream(proxy, body(model=model, messages=[{"role": "user", "content": "count"}]))
    assert response.headers["content-type"].startswith("text/event-stream")
    rid = response.headers["request-id"]
    assert response.headers["x-tierwise-request-id"] == rid
    assert response.headers["x-tierwise-model"] == served_by
    assert response.headers["x-tierwise-cost-estimated"] == "true"
    assert [name for name, _ in events] == [
        "message_start", "ping", "content_block_start",
        "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    start = events[0][1]["message"]
    assert (start["id"], start["model"], start["role"], start["content"]) == (rid, served_by, "assistant", [])
    assert start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "one two three four five six"
    assert all(data["index"] == 0 for name, data in events[2:7])
    delta = events[7][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {"input_tokens": 10, "output_tokens": 5}
    record = proxy.record(rid)
    assert record.endpoint == "anthropic.messages" and record.status == "ok" and record.stream
    assert record.response_text == text and record.model == served_by
    assert delta["tierwise"]["cost_usd"] == pytest.approx(record.cost_usd)
    assert delta["tierwise"]["baseline_cost_usd"] == pytest.approx(record.baseline_cost_usd)


def test_sdk_stream_helper_and_create_stream(proxy: Any, openai_upstream: FakeUpstream) -> None:
    client = claude(proxy)
    openai_upstream.script("cheap-a", Behaviour(content="alpha beta gamma"))
    with client.messages.stream(
        model="tierwise/auto", max_tokens=64, messages=[{"role": "user", "content": "Rephrase: a b c"}]
    ) as stream:
        assert stream.response.headers["x-tierwise-tier"] == "cheap"
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "alpha beta gamma"
    assert final.content[0].text == text and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (10, 5)
    kinds = [event.type for event in client.messages.create(
        model="tierwise/cheap", max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=True
    )]  # fmt: skip
    # The SDK drops ping events.
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1


def test_streamed_text_and_tool_use_from_an_openai_upstream(
    proxy: Any, openai_upstream: FakeUpstream
) -> None:
    openai_upstream.script(
        "cheap-b", Behaviour(content="Let me check.", tool_calls=[("get_weather", '{"city": "Lima"}')])
    )
    _, events = raw_stream(
        proxy, body(model="tierwise/cheap", tools=[WEATHER], messages=[{"role": "user", "content": "Lima?"}])
    )
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    starts = [data for name, data in events if name == "content_block_start"]
    assert starts[1]["index"] == 1
    assert (
        starts[1]["content_block"]["type"] == "tool_use"
        and starts[1]["content_block"]["name"] == "get_weather"
    )
    assert starts[1]["content_block"]["id"].startswith("call_") and starts[1]["content_block"]["input"] == {}
    pieces = [d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == 1]
    assert pieces and all(p["type"] == "input_json_delta" for p in pieces)
    assert json.loads("".join(p["partial_json"] for p in pieces)) == {"city": "Lima"}
    stops = [data["index"] for name, data in events if name == "content_block_stop"]
    assert stops == [0, 1]
    assert names.index("content_block_stop") < names.index("content_block_start", 3)  # text closes first
    assert names[-2:] == ["message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


# ---- tools ----


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("model", ["tierwise/cheap", "tierwise/premium"], ids=["openai", "anthropic"])
def test_tool_use_round_trip(
    proxy: Any, openai_upstream: FakeUpstream, anthropic_upstream: FakeUpstream, model: str, stream: bool
) -> None:
    on_anthropic = model == "tierwise/premium"
    upstream, served_by = (anthropic_upstream, "premium-a") if on_anthropic else (openai_upstream, "cheap-b")
    upstream.script(
        served_by,
        Behaviour(tool_calls=[("get_weather", '{"city": "Oslo"}')]),
        Behaviour(content="It is sunny in Oslo."),
    )
    client = claude(proxy)
    question = {"role": "user", "content": "What's the weather in Oslo?"}

    def ask(messages: list[dict[str, Any]]) -> anthropic.types.Message:
        kwargs: dict[str, Any] = {"model": model, "max_tokens": 200, "messages": messages, "tools": [WEATHER]}
        if not stream:
            return client.messages.create(tool_choice={"type": "auto"}, **kwargs)
        with client.messages.stream(**kwargs) as helper:
            return helper.get_final_message()

    first = ask([question])
    assert first.stop_reason == "tool_use" and first.model == served_by
    [call] = first.content
    assert call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Oslo"}
    sent = upstream.requests[-1].body
    if on_anthropic:
        assert sent["tools"] == [WEATHER]
    else:
        assert sent["tools"][0]["function"]["name"] == "get_weather"
        assert sent["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    answer = ask([
        question,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 24C"}]},
    ])  # fmt: skip
    assert answer.stop_reason == "end_turn" and answer.content[0].text == "It is sunny in Oslo."
    messages = upstream.requests[-1].body["messages"]
    if on_anthropic:
        assert messages[1] == {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "Oslo"}}
            ],
        }
        assert messages[2] == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 24C"}],
        }
    else:
        assert messages[1]["role"] == "assistant" and messages[1]["tool_calls"] == [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            }
        ]
        assert messages[2] == {"role": "tool", "content": "sunny, 24C", "tool_call_id": call.id}


# ---- failures ----


@pytest.mark.parametrize(
    ("model", "served_by"), [("tierwise/cheap", "cheap-a"), ("tierwise/premium", "premium-a")]
)
def test_upstream_failing_mid_stream_ends_with_an_error_event(
    proxy: Any, openai_upstream: FakeUpstream, anthropic_upstream: FakeUpstream, model: str, served_by: str
) -> None:
    upstream = anthropic_upstream if served_by == "premium-a" else openai_upstream
    upstream.script(served_by, Behaviour("drop", content="a long answer that will be cut off"))
    response, events = raw_stream(proxy, body(model=model))
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-1] == "error" and "message_stop" not in names
    error = events[-1][1]
    assert error["error"]["type"] == "api_error"
    assert error["error"]["message"].startswith("upstream failed mid-stream")
    record = proxy.record(response.headers["request-id"])
    assert record.status == "error" and "mid-stream" in (record.error or "")
    assert record.endpoint == "anthropic.messages"
    # The SDK raises it.
    upstream.script(served_by, Behaviour("drop", content="a long answer that will be cut off"))
    with pytest.raises(anthropic.APIStatusError, match="mid-stream"):
        for _ in claude(proxy).messages.create(**body(model=model), stream=True):
            pass


def test_every_upstream_failing(
    start_proxy: Any, openai_upstream: FakeUpstream, anthropic_upstream: FakeUpstream
) -> None:
    config = router_config(
        openai_upstream.base_url, anthropic_upstream.base_url, retry={"attempts": 1, "fallback_up": False}
    )
    proxy = start_proxy(config)
    client = claude(proxy)
    openai_upstream.set_default(Behaviour("status", status=500))
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(**body(model="tierwise/cheap"))
    assert caught.value.status_code == 502
    assert isinstance(caught.value.body, dict)
    error = caught.value.body["error"]
    assert error["type"] == "api_error"
    assert [(a["model"], a["http_status"]) for a in error["attempts"]] == [("cheap-a", 500), ("cheap-b", 500)]
    record = proxy.record(caught.value.response.headers["request-id"])
    assert record.status == "error" and record.http_status == 502 and record.endpoint == "anthropic.messages"
    # Every attempt rate limited or overloaded: the client gets that status, and backs off as it should.
    openai_upstream.set_default(Behaviour("status", status=429))
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.create(**body(model="tierwise/cheap"))
    assert limited.value.status_code == 429 and limited.value.body["error"]["type"] == "rate_limit_error"
    anthropic_upstream.set_default(Behaviour("status", status=529))
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        client.messages.create(**body(model="tierwise/premium"))
    assert (
        overloaded.value.status_code == 529 and overloaded.value.body["error"]["type"] == "overloaded_error"
    )


def _pdf() -> dict[str, Any]:
    return body(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Summarize"},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
    ]}])  # fmt: skip


BAD: list[tuple[str, bytes | dict[str, Any], dict[str, str], int, str, str]] = [
    ("missing max_tokens", {"model": "tierwise/auto", "messages": [{"role": "user", "content": "x"}]}, VERSION, 400,
     "invalid_request_error", "max_tokens"),
    ("pdf document", _pdf(), VERSION, 400, "invalid_request_error", "messages.0.content.1.source"),
    ("malformed JSON", b'{"model": "tierwise/auto", "messages": [', VERSION, 400, "invalid_request_error",
     "the request body is not valid JSON"),
    ("unknown field", body(best_of=2), VERSION, 400, "invalid_request_error", "best_of"),
    ("temperature out of range", body(temperature=1.5), VERSION, 400, "invalid_request_error", "temperature"),
    ("bad role", body(messages=[{"role": "system", "content": "x"}]), VERSION, 400, "invalid_request_error",
     "messages.0.role"),
    ("server tool", body(tools=[{"type": "web_search_20250305", "name": "web_search"}]), VERSION, 400,
     "invalid_request_error", "tools.0"),
    ("unknown model", body(model="claude-nope-1"), VERSION, 404, "not_found_error", "model"),
    ("old API version", body(), {"anthropic-version": "2023-01-01"}, 400, "invalid_request_error",
     "anthropic-version"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "data", "headers", "status", "type_", "starts"), BAD, ids=[b[0] for b in BAD]
)
def test_bad_input_gets_an_anthropic_error_and_a_record(
    proxy: Any,
    openai_upstream: FakeUpstream,
    anthropic_upstream: FakeUpstream,
    case: str,
    data: bytes | dict[str, Any],
    headers: dict[str, str],
    status: int,
    type_: str,
    starts: str,
) -> None:
    content = data if isinstance(data, bytes) else json.dumps(data).encode()
    response = httpx.post(
        proxy.url + "/v1/messages", content=content, headers={"content-type": "application/json", **headers}
    )
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["type"] == "error" and set(payload) == {"type", "error"}
    assert payload["error"]["type"] == type_ and payload["error"]["message"].startswith(starts)
    rid = response.headers["request-id"]
    assert response.headers["x-tierwise-request-id"] == rid
    record = proxy.record(rid)
    assert (record.endpoint, record.status, record.http_status) == ("anthropic.messages", "rejected", status)
    assert record.error == payload["error"]["message"]
    assert openai_upstream.requests == [] and anthropic_upstream.requests == []


def test_sdk_errors_auth_and_size_limit(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    config = router_config(
        openai_upstream.base_url,
        auth={"required": True, "keys": [{"id": "team-a", "key": "sk-team-a", "user_tier": "paid"}]},
        server={"max_body_bytes": 2000},
    )
    proxy = start_proxy(config)
    with pytest.raises(anthropic.AuthenticationError) as denied:
        claude(proxy, api_key="sk-wrong").messages.create(**body())
    assert denied.value.body["error"]["type"] == "authentication_error"
    client = claude(proxy, api_key="sk-team-a")
    with pytest.raises(anthropic.BadRequestError, match="max_tokens") as bad:
        client.messages.create(**body(max_tokens=0))
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(**body(model="tierwise/gold"))
    with pytest.raises(anthropic.APIStatusError) as large:
        client.messages.create(**body(messages=[{"role": "user", "content": "x" * 3000}]))
    assert large.value.status_code == 413 and large.value.body["error"]["type"] == "request_too_large"
    message = client.messages.create(**body())
    record = proxy.record(message.id)
    assert record.api_key_id == "team-a" and record.user_tier == "paid"
    rejected = [(r.http_status, r.api_key_id) for r in proxy.records() if r.status == "rejected"]
    assert sorted(rejected, key=str) == sorted(
        [(401, "sha256:" + hashlib.sha256(b"sk-wrong").hexdigest()[:12]),
         (400, "team-a"), (404, "team-a"), (413, "team-a")], key=str
    )  # fmt: skip


def test_anthropic_version_header_may_be_left_out(proxy: Any) -> None:
    response = httpx.post(proxy.url + "/v1/messages", json=body())
    assert response.status_code == 200 and response.json()["type"] == "message"


# ---- count_tokens ----


def test_count_tokens_is_the_routers_estimate(
    proxy: Any, openai_upstream: FakeUpstream, anthropic_upstream: FakeUpstream
) -> None:
    client = claude(proxy)
    # "Be brief." is 9 characters (3 tokens), "hello world!!" 13 (4): plus 4 tokens per message.
    counted = client.messages.count_tokens(
        model="tierwise/auto", system="Be brief.", messages=[{"role": "user", "content": "hello world!!"}]
    )
    assert counted.input_tokens == 15
    # A tool adds its name (3), its description (5) and 20.
    with_tool = client.messages.count_tokens(
        model="tierwise/premium",
        messages=[{"role": "user", "content": "hello world!!"}],
        tools=[WEATHER],
    )
    assert with_tool.input_tokens == 8 + 3 + 5 + 20
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="claude-nope-1", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError, match="messages"):
        client.messages.count_tokens(model="tierwise/auto", messages=[])
    assert proxy.records() == []
    assert openai_upstream.requests == [] and anthropic_upstream.requests == []


# ---- documents, thinking ----


def test_documents_reach_the_model_and_the_grounding_gate(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    routing = {"policy": "cascade", "cascade": {"gates": [{"type": "grounding", "threshold": 0.5}]}}
    proxy = start_proxy(router_config(openai_upstream.base_url, routing=routing))
    policy = "Refunds are processed within five business days of the returned item arriving."
    openai_upstream.script("cheap-a", Behaviour(content="Refunds arrive within five business days [7]."))
    openai_upstream.script("mid-a", Behaviour(content="Refunds are processed within five business days [1]."))
    raw = claude(proxy).messages.with_raw_response.create(
        model="tierwise/auto",
        max_tokens=200,
        messages=[{"role": "user", "content": [
            {"type": "document", "title": "Refund policy", "source": {"type": "text", "media_type": "text/plain", "data": policy}},
            {"type": "text", "text": "How long do refunds take? Cite the document."},
        ]}],
    )  # fmt: skip
    assert raw.headers["x-tierwise-path"] == "cheap(fail:grounding)->mid(pass)"
    assert raw.parse().content[0].text.endswith("[1].")
    content = openai_upstream.requests_for("cheap-a")[0].body["messages"][0]["content"]
    assert content[0] == {
        "type": "text",
        "text": f'<document id="1" title="Refund policy">\n{policy}\n</document>',
    }
    assert content[1] == {"type": "text", "text": "How long do refunds take? Cite the document."}
    record = proxy.record(raw.headers["request-id"])
    gates = record.attempts[0].gates or []
    assert [(g["gate"], g["passed"]) for g in gates] == [("grounding", False)]
    assert "'7'" in gates[0]["reason"]


THINK = {"type": "enabled", "budget_tokens": 2048}
EARLIER = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "The user greets me.", "signature": "sig"},
        {"type": "text", "text": "Hello!"},
    ]},
    {"role": "user", "content": "How are you?"},
]  # fmt: skip


def test_thinking_reaches_an_anthropic_upstream_and_comes_back(
    proxy: Any, anthropic_upstream: FakeUpstream
) -> None:
    message = claude(proxy).messages.create(
        model="tierwise/premium",
        max_tokens=4000,
        thinking=THINK,
        messages=EARLIER,  # type: ignore[arg-type]
    )
    sent = anthropic_upstream.requests[-1].body
    assert sent["thinking"] == THINK
    # The earlier turn's signed thinking block goes back, first in its turn, as the API requires.
    assert sent["messages"][1]["content"][0] == {
        "type": "thinking", "thinking": "The user greets me.", "signature": "sig",
    }  # fmt: skip
    first, text = message.content
    assert first.type == "thinking" and first.thinking == "premium-a thinks about: How are you?"
    assert first.signature.startswith("sig-fake") and text.type == "text"

    # Streamed: thinking_delta pieces, then the signature, then the text, each in its own block.
    with claude(proxy).messages.stream(
        model="tierwise/premium",
        max_tokens=4000,
        thinking=THINK,
        messages=EARLIER,  # type: ignore[arg-type]
    ) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "thinking_delta" in deltas and "signature_delta" in deltas
    assert deltas.index("signature_delta") < deltas.index("text_delta")
    assert final.content[0].type == "thinking" and final.content[0].signature.startswith("sig-fake")
    assert final.content[0].thinking == "premium-a thinks about: How are you?"


def test_thinking_is_left_out_where_the_model_cannot_take_it(
    start_proxy: Any, openai_upstream: FakeUpstream, anthropic_upstream: FakeUpstream
) -> None:
    config = router_config(
        openai_upstream.base_url, anthropic_upstream.base_url,
        models={"premium-a": {"provider": "claude", "supports_thinking": False}},
    )  # fmt: skip
    no_thinking = start_proxy(config)
    message = claude(no_thinking).messages.create(
        model="tierwise/premium",
        max_tokens=4000,
        thinking=THINK,
        messages=EARLIER,  # type: ignore[arg-type]
    )
    sent = anthropic_upstream.requests[-1].body
    assert "thinking" not in sent
    assert sent["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "Hello!"}]}
    assert [b.type for b in message.content] == ["text"]
    # An OpenAI-shaped upstream has no thinking at all.
    claude(no_thinking).messages.create(
        model="tierwise/mid",
        max_tokens=100,
        thinking=THINK,
        messages=EARLIER,  # type: ignore[arg-type]
    )
    body = openai_upstream.requests[-1].body
    assert "thinking" not in body and "top_k" not in body
    assert body["messages"][1] == {"role": "assistant", "content": "Hello!"}


def test_the_anthropic_sdk_lists_the_models(proxy: Any) -> None:
    listed = list(claude(proxy).models.list())
    assert [m.id for m in listed][:1] == ["tierwise/auto"] and {"tierwise/premium", "premium-a"} <= {
        m.id for m in listed
    }
    assert all(m.type == "model" for m in listed)
