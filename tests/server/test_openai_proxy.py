"""The proxy driven by the official openai SDK over loopback, with real fake upstreams behind it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import router_config
from tierwise.testing.upstreams import Behaviour, FakeUpstream

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


_clients: list[openai.OpenAI] = []


def client(proxy: Any, api_key: str = "sk-client", **kwargs: Any) -> openai.OpenAI:
    made = openai.OpenAI(base_url=proxy.base_url, api_key=api_key, max_retries=0, **kwargs)
    _clients.append(made)
    return made


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def test_routes_a_simple_request_to_cheap_and_explains_why(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="tierwise/auto", messages=[{"role": "user", "content": "Rephrase: the cat sat on the mat."}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "cheap-a says: Rephrase: the cat sat on the mat."
    assert completion.model == "cheap-a"
    headers = raw.headers
    assert headers["x-tierwise-tier"] == "cheap"
    assert headers["x-tierwise-model"] == "cheap-a"
    assert headers["x-tierwise-class"] == "rephrase"
    assert headers["x-tierwise-reason"] == "task=rephrase"
    record = proxy.record(headers["x-tierwise-request-id"])
    assert record.status == "ok" and record.tier == "cheap" and record.model == "cheap-a"
    assert float(headers["x-tierwise-cost-usd"]) == pytest.approx(record.cost_usd)
    assert float(headers["x-tierwise-baseline-cost-usd"]) == pytest.approx(record.baseline_cost_usd)
    # 10 input and 5 output tokens (the fake upstream's usage) at cheap-a's and premium-a's prices.
    assert record.cost_usd == pytest.approx((10 * 0.1 + 5 * 0.4) / 1e6)
    assert record.baseline_cost_usd == pytest.approx((10 * 10 + 5 * 40) / 1e6)
    assert [a.model for a in record.attempts] == ["cheap-a"]
    sent = openai_upstream.requests[-1]
    assert sent.headers["authorization"] == "Bearer sk-upstream-secret"
    assert sent.body["model"] == "cheap-a"


def test_forced_tier_and_concrete_model(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    c = client(proxy)
    raw = c.chat.completions.with_raw_response.create(
        model="tierwise/premium", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-tierwise-tier"] == "premium" and raw.headers["x-tierwise-reason"] == "explicit:tier"
    raw = c.chat.completions.with_raw_response.create(
        model="mid-a", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-tierwise-model"] == "mid-a" and raw.headers["x-tierwise-reason"] == "explicit:model"
    models = [m.id for m in c.models.list()]
    assert models[:4] == ["tierwise/auto", "tierwise/cheap", "tierwise/mid", "tierwise/premium"]
    assert "premium-a" in models


def test_request_parameters_reach_the_upstream(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    client(proxy).chat.completions.create(
        model="tierwise/cheap",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Give JSON"}],
        response_format={"type": "json_object"},
        max_tokens=50,
        temperature=0.2,
        stop=["\n\n"],
        user="u-1",
        seed=7,
    )
    body = openai_upstream.requests[-1].body
    assert body["response_format"] == {"type": "json_object"}
    assert body["max_completion_tokens"] == 50
    assert body["temperature"] == 0.2
    assert body["stop"] == ["\n\n"]
    assert body["user"] == "u-1"
    assert body["seed"] == 7
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}


def test_streaming_with_usage(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    openai_upstream.script("cheap-a", Behaviour(content="one two three four five six"))
    with client(proxy).chat.completions.with_streaming_response.create(
        model="tierwise/auto",
        messages=[{"role": "user", "content": "Rephrase this please"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        request_id = response.headers["x-tierwise-request-id"]
        assert response.headers["x-tierwise-tier"] == "cheap"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four five six"
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 10
    record = proxy.record(request_id)
    assert record.status == "ok" and record.stream and record.response_text == text
    assert record.output_tokens == 5


async def test_async_client_streaming_and_not(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    async with openai.AsyncOpenAI(base_url=proxy.base_url, api_key="k", max_retries=0) as c:
        done = await c.chat.completions.create(
            model="tierwise/mid", messages=[{"role": "user", "content": "hey"}]
        )
        assert done.choices[0].message.content == "mid-a says: hey"
        stream = await c.chat.completions.create(
            model="tierwise/mid", messages=[{"role": "user", "content": "hey"}], stream=True
        )
        parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
        assert "".join(parts) == "mid-a says: hey"


def test_tools_skip_a_tier_without_tool_support(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    openai_upstream.script("cheap-b", Behaviour(tool_calls=[("get_weather", '{"city": "Oslo"}')]))
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="tierwise/auto",
        messages=[{"role": "user", "content": "What's the weather in Oslo?"}],
        tools=[WEATHER_TOOL],
    )
    done = raw.parse()
    call = done.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Oslo"}
    assert done.choices[0].finish_reason == "tool_calls"
    # cheap-a lacks tool support; cheap-b in the same tier has it, so the tier stands.
    assert raw.headers["x-tierwise-model"] == "cheap-b" and raw.headers["x-tierwise-tier"] == "cheap"
    assert openai_upstream.requests[-1].body["tools"][0]["function"]["name"] == "get_weather"


def test_streamed_tool_calls_round_trip(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    openai_upstream.script("cheap-b", Behaviour(tool_calls=[("get_weather", '{"city": "Lima"}')]))
    c = client(proxy)
    stream = c.chat.completions.create(
        model="tierwise/auto",
        messages=[{"role": "user", "content": "Weather in Lima?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    name, args, call_id = "", "", None
    for chunk in stream:
        for piece in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call_id = call_id or piece.id
            name += piece.function.name or "" if piece.function else ""
            args += piece.function.arguments or "" if piece.function else ""
    assert name == "get_weather" and json.loads(args) == {"city": "Lima"} and call_id
    # Send the tool result back, as a client would.
    c.chat.completions.create(
        model="tierwise/auto",
        messages=[
            {"role": "user", "content": "Weather in Lima?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
            {"role": "tool", "tool_call_id": call_id, "content": "sunny, 24C"},
        ],
        tools=[WEATHER_TOOL],
    )  # fmt: skip
    sent = openai_upstream.requests[-1].body["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call_id
    assert sent[2] == {"role": "tool", "content": "sunny, 24C", "tool_call_id": call_id}


def test_retries_429_honouring_retry_after(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    openai_upstream.script("cheap-a", Behaviour("status", status=429, retry_after=0.2))
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="tierwise/cheap", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-tierwise-model"] == "cheap-a"
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert [(a.model, a.status, a.http_status, a.retry) for a in record.attempts] == [
        ("cheap-a", "error", 429, 0),
        ("cheap-a", "ok", None, 1),
    ]
    assert record.attempts[1].latency_ms >= 0
    times = [r.received_at for r in openai_upstream.requests_for("cheap-a")]
    assert times[1] - times[0] >= 0.19


def test_falls_back_to_next_model_then_next_tier(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    fail = Behaviour("status", status=500)
    openai_upstream.script("cheap-a", fail, fail)
    openai_upstream.script("cheap-b", Behaviour("malformed_json"), Behaviour("status", status=503))
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="tierwise/auto", messages=[{"role": "user", "content": "Rephrase: hello"}]
    )
    assert raw.headers["x-tierwise-model"] == "mid-a" and raw.headers["x-tierwise-tier"] == "mid"
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert [(a.model, a.status) for a in record.attempts] == [
        ("cheap-a", "error"), ("cheap-a", "error"), ("cheap-b", "error"), ("cheap-b", "error"), ("mid-a", "ok"),
    ]  # fmt: skip
    assert "malformed JSON" in (record.attempts[2].error or "")
    assert record.tier == "mid"


def test_non_retryable_error_moves_on_without_retrying(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    openai_upstream.script("cheap-a", Behaviour("status", status=400))
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="tierwise/cheap", messages=[{"role": "user", "content": "hi"}]
    )
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert [(a.model, a.http_status) for a in record.attempts] == [("cheap-a", 400), ("cheap-b", None)]


def test_timeout_then_fallback(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    config = router_config(openai_upstream.base_url, retry={"attempts": 1, "timeout_s": 0.3})
    proxy = start_proxy(config)
    openai_upstream.script("cheap-a", Behaviour("slow", delay_s=2))
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="tierwise/cheap", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-tierwise-model"] == "cheap-b"
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert record.attempts[0].status == "timeout" and record.attempts[0].latency_ms >= 290


def test_everything_failing_gives_an_openai_error_listing_attempts(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url, retry={"attempts": 1, "fallback_up": False}))
    openai_upstream.set_default(Behaviour("status", status=500))
    with pytest.raises(openai.APIStatusError) as caught:
        client(proxy).chat.completions.create(
            model="tierwise/cheap", messages=[{"role": "user", "content": "hi"}]
        )
    err = caught.value
    assert err.status_code == 502
    body = err.body
    assert isinstance(body, dict)
    assert body["code"] == "all_attempts_failed"
    assert [a["model"] for a in body["attempts"]] == ["cheap-a", "cheap-b"]
    record = proxy.record(err.response.headers["x-tierwise-request-id"])
    assert record.status == "error" and record.http_status == 502 and len(record.attempts) == 2


def test_stream_retries_before_the_first_byte(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    openai_upstream.script("cheap-a", Behaviour("status", status=503), Behaviour("status", status=503))
    stream = client(proxy).chat.completions.create(
        model="tierwise/cheap", messages=[{"role": "user", "content": "yo"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "cheap-b says: yo"


def test_stream_dropped_mid_way_is_an_error_and_recorded(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    openai_upstream.script("cheap-a", Behaviour("drop", content="a long answer that will be cut off"))
    with client(proxy).chat.completions.with_streaming_response.create(
        model="tierwise/cheap", messages=[{"role": "user", "content": "yo"}], stream=True
    ) as response:
        request_id = response.headers["x-tierwise-request-id"]
        with pytest.raises(openai.APIError, match="mid-stream"):
            for _ in response.parse():
                pass
    record = proxy.record(request_id)
    assert record.status == "error" and "mid-stream" in (record.error or "")
    assert record.attempts[-1].status == "error"


# ---- bad input: raw HTTP, OpenAI's error shape, always recorded ----

BAD_BODIES: list[tuple[str, bytes, int, str | None]] = [
    ("malformed JSON", b'{"model": "tierwise/auto", "messages": [', 400, None),
    ("not an object", b"[1, 2]", 400, None),
    ("missing messages", b'{"model": "tierwise/auto"}', 400, "messages"),
    ("empty messages", b'{"model": "tierwise/auto", "messages": []}', 400, "messages"),
    ("wrong type", b'{"model": "tierwise/auto", "messages": [{"role": "user", "content": 5}]}', 400,
     "messages[0].content"),
    ("bad role", b'{"model": "tierwise/auto", "messages": [{"role": "robot", "content": "x"}]}', 400,
     "messages[0].role"),
    ("unknown tier", b'{"model": "tierwise/gold", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
    ("n > 1", b'{"model": "tierwise/auto", "n": 3, "messages": [{"role": "user", "content": "x"}]}', 400, "n"),
    ("unknown parameter", b'{"model": "tierwise/auto", "best_of": 2, "messages": [{"role": "user", "content": "x"}]}',
     400, "best_of"),
    ("temperature out of range",
     b'{"model": "tierwise/auto", "temperature": 9, "messages": [{"role": "user", "content": "x"}]}', 400,
     "temperature"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body", "status", "param"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_input_is_rejected_in_openai_shape_and_recorded(
    start_proxy: Any, openai_upstream: FakeUpstream, case: str, body: bytes, status: int, param: str | None
) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    response = httpx.post(
        proxy.base_url + "/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    if param:
        assert param.split("[")[0] in error["message"]
    record = proxy.record(response.headers["x-tierwise-request-id"])
    assert record.status == "rejected" and record.http_status == status and record.error == error["message"]
    assert openai_upstream.requests == []


def test_oversize_body_is_rejected(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url, server={"max_body_bytes": 1000}))
    body = {"model": "tierwise/auto", "messages": [{"role": "user", "content": "x" * 2000}]}
    with pytest.raises(openai.BadRequestError, match="exceeds the 1000-byte limit"):
        client(proxy).chat.completions.create(**body)
    assert proxy.records()[-1].status == "rejected"


def test_prompt_storage_modes(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    messages = [{"role": "user", "content": "my secret prompt"}]
    for mode, check in (
        ("full", lambda p: p is not None and "my secret prompt" in p),
        ("hash", lambda p: p is not None and p.startswith("sha256:") and "secret" not in p),
        ("none", lambda p: p is None),
    ):
        proxy = start_proxy(router_config(openai_upstream.base_url, store={"prompts": mode}))
        raw = client(proxy).chat.completions.with_raw_response.create(
            model="tierwise/cheap", messages=messages
        )
        record = proxy.record(raw.headers["x-tierwise-request-id"])
        assert check(record.prompt), (mode, record.prompt)
        assert (record.response_text is not None) == (mode == "full")


def test_api_keys_user_tier_and_required_auth(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    config = router_config(
        openai_upstream.base_url,
        auth={"required": True, "keys": [{"id": "team-free", "key": "sk-free-1", "user_tier": "free"}]},
        routing={"user_tier_caps": {"free": "cheap"}},
    )
    proxy = start_proxy(config)
    with pytest.raises(openai.AuthenticationError):
        client(proxy).chat.completions.create(
            model="tierwise/auto", messages=[{"role": "user", "content": "x"}]
        )
    c = client(proxy, api_key="sk-free-1")
    raw = c.chat.completions.with_raw_response.create(
        model="tierwise/auto",
        messages=[{"role": "user", "content": "Write a python function that sorts a list"}],
    )
    assert raw.headers["x-tierwise-tier"] == "cheap"
    assert raw.headers["x-tierwise-reason"] == "rule:user_tier=free"
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert record.api_key_id == "team-free" and record.user_tier == "free"
    rejected = [r for r in proxy.records() if r.status == "rejected"]
    assert rejected and rejected[0].http_status == 401
    # The client's key is never stored or forwarded.
    assert all(
        r.headers.get("authorization") == "Bearer sk-upstream-secret" for r in openai_upstream.requests
    )


def test_class_header_overrides_the_class(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    raw = client(
        proxy, default_headers={"x-tierwise-class": "support-faq"}
    ).chat.completions.with_raw_response.create(
        model="tierwise/auto", messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.headers["x-tierwise-class"] == "support-faq"


def test_health_endpoints(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    assert httpx.get(proxy.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(proxy.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_records_survive_shutdown(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    c = client(proxy)
    ids = [
        c.chat.completions.with_raw_response.create(
            model="tierwise/cheap", messages=[{"role": "user", "content": f"n{i}"}]
        ).headers["x-tierwise-request-id"]
        for i in range(20)
    ]
    proxy.stop()  # a clean shutdown drains the writer queue
    assert {r.request_id for r in proxy.store.query()} >= set(ids)
