"""AnthropicProvider against a fake Messages API upstream over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tierwise.config import AnthropicProviderConfig
from tierwise.errors import UpstreamConnectionError, UpstreamError, UpstreamTimeout
from tierwise.messages import ChatRequest, ChatResponse, Message, StreamAccumulator, Tool, ToolCall, Usage
from tierwise.providers.anthropic import AnthropicProvider
from tierwise.providers.base import ProviderStream
from tierwise.testing import Behaviour, FakeUpstream

MODEL = "claude-x"
REQUEST = ChatRequest([Message("system", "Be brief."), Message("user", "Capital of Peru?")])


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream("anthropic", usage=(31, 8)) as fake:
        yield fake


def make_provider(base_url: str, **overrides: object) -> AnthropicProvider:
    config = AnthropicProviderConfig.model_validate(
        {"type": "anthropic", "base_url": base_url, "api_key": "sk-ant-test", **overrides}
    )
    return AnthropicProvider("claude", config)


@pytest.fixture
async def provider(upstream: FakeUpstream) -> AsyncIterator[AnthropicProvider]:
    provider = make_provider(
        upstream.base_url, headers={"anthropic-beta": "some-beta"}, default_max_tokens=321
    )
    yield provider
    await provider.aclose()


async def collect(stream: ProviderStream) -> ChatResponse:
    accumulator = StreamAccumulator(id="r", model=MODEL)
    async for delta in stream:
        accumulator.add(delta)
    return accumulator.response()


async def test_complete_sends_auth_version_and_translated_body(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    result = await provider.complete(REQUEST, MODEL, timeout=5)
    response = result.response
    assert response.content == "claude-x says: Capital of Peru?"
    assert response.finish_reason == "stop" and response.usage == Usage(31, 8)
    assert response.id.startswith("msg_") and response.tool_calls == []
    [sent] = upstream.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-test"
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == "some-beta"
    assert sent.headers["content-type"] == "application/json"
    assert sent.body == {
        "model": MODEL,
        "max_tokens": 321,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Capital of Peru?"}]}],
    }


async def test_complete_with_tool_use(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour(content="Looking.", tool_calls=[("weather", '{"city": "Lima"}')]))
    request = ChatRequest(
        [Message("user", "Weather in Lima?")], tools=[Tool("weather")], tool_choice="required"
    )
    response = (await provider.complete(request, MODEL, timeout=5)).response
    assert response.content == "Looking." and response.finish_reason == "tool_calls"
    [call] = response.tool_calls
    assert call.name == "weather" and call.id.startswith("toolu_") and call.arguments == '{"city":"Lima"}'
    assert upstream.requests[0].body["tool_choice"] == {"type": "any"}


async def test_stream_text(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour(content="Lima is the capital of Peru.", finish_reason="length"))
    stream = await provider.stream(REQUEST, MODEL, timeout=5)
    response = await collect(stream)
    assert response.content == "Lima is the capital of Peru."
    assert response.finish_reason == "length" and response.usage == Usage(31, 8)
    assert upstream.requests[0].body["stream"] is True


async def test_stream_tool_use(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour(tool_calls=[("weather", '{"city": "Lima"}'), ("time", '{"tz": "PET"}')]))
    response = await collect(await provider.stream(REQUEST, MODEL, timeout=5))
    assert response.content is None and response.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("weather", '{"city": "Lima"}'),
        ("time", '{"tz": "PET"}'),
    ]
    assert all(c.id.startswith("toolu_") for c in response.tool_calls)


async def test_tool_results_reach_the_upstream_as_tool_result_blocks(
    provider: AnthropicProvider, upstream: FakeUpstream
) -> None:
    request = ChatRequest(
        [
            Message("user", "Weather?"),
            Message("assistant", None, tool_calls=[ToolCall("toolu_9", "weather", '{"city": "Oslo"}')]),
            Message("tool", "-3C", tool_call_id="toolu_9"),
        ]
    )
    await provider.complete(request, MODEL, timeout=5)
    assert upstream.requests[0].body["messages"][1:] == [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "weather",
                                           "input": {"city": "Oslo"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "-3C"}]},
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "retryable"), [(429, True), (500, True), (529, True), (400, False), (401, False)]
)
async def test_http_errors(
    provider: AnthropicProvider, upstream: FakeUpstream, status: int, retryable: bool
) -> None:
    upstream.script(MODEL, Behaviour("status", status=status, retry_after=2 if status == 429 else None))
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(REQUEST, MODEL, timeout=5)
    error = caught.value
    assert (error.status, error.retryable) == (status, retryable)
    assert error.retry_after == (2.0 if status == 429 else None)
    assert f"scripted HTTP {status}" in error.message  # the message from Anthropic's error object


async def test_stream_refused_before_any_event(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour("status", status=529))
    with pytest.raises(UpstreamError) as caught:
        await provider.stream(REQUEST, MODEL, timeout=5)
    assert caught.value.status == 529 and caught.value.retryable


async def test_malformed_json(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour("malformed_json"), Behaviour("malformed_json"))
    with pytest.raises(UpstreamError, match="malformed JSON") as caught:
        await provider.complete(REQUEST, MODEL, timeout=5)
    assert caught.value.retryable
    stream = await provider.stream(REQUEST, MODEL, timeout=5)
    with pytest.raises(UpstreamError, match="malformed JSON in the upstream stream"):
        await collect(stream)


async def test_error_event_in_the_stream(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour("stream_error", status=529))
    stream = await provider.stream(REQUEST, MODEL, timeout=5)
    with pytest.raises(UpstreamError, match="overloaded_error") as caught:
        await collect(stream)
    assert caught.value.status == 529 and caught.value.retryable


async def test_dropped_connections(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour("drop"), Behaviour("drop"))
    with pytest.raises(UpstreamConnectionError):
        await provider.complete(REQUEST, MODEL, timeout=5)
    stream = await provider.stream(REQUEST, MODEL, timeout=5)
    seen: list[str] = []
    with pytest.raises(UpstreamConnectionError) as caught:
        async for delta in stream:
            seen.append(delta.content or "")
    assert caught.value.retryable
    # Part of the answer came before the connection broke.
    assert len(seen) == 1 and "claude-x says: Capital of Peru?".startswith(seen[0])


async def test_slow_upstream_times_out(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour("slow", delay_s=2), Behaviour("slow", delay_s=2))
    with pytest.raises(UpstreamTimeout):
        await provider.complete(REQUEST, MODEL, timeout=0.2)
    with pytest.raises(UpstreamTimeout):
        await provider.stream(REQUEST, MODEL, timeout=0.2)


async def test_closing_a_stream_early(provider: AnthropicProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour(content="a fairly long answer that is cut short"))
    stream = await provider.stream(REQUEST, MODEL, timeout=5)
    await stream.aclose()
    # The pool stays usable after an early close.
    assert (await provider.complete(REQUEST, MODEL, timeout=5)).response.content


async def test_base_url_with_v1_and_no_key(upstream: FakeUpstream) -> None:
    provider = make_provider(upstream.base_url + "/v1/", api_key=None)
    try:
        await provider.complete(REQUEST, MODEL, timeout=5)
    finally:
        await provider.aclose()
    [sent] = upstream.requests
    assert sent.path == "/v1/messages" and "x-api-key" not in sent.headers
    assert sent.body["max_tokens"] == 4096
