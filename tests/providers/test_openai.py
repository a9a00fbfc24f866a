"""OpenAIProvider against a fake Chat Completions upstream over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tierwise.config import OpenAIProviderConfig
from tierwise.errors import UpstreamConnectionError, UpstreamError, UpstreamTimeout
from tierwise.messages import ChatRequest, ChatResponse, Message, StreamAccumulator, Tool, Usage
from tierwise.providers.base import ProviderStream
from tierwise.providers.openai import OpenAIProvider
from tierwise.testing import Behaviour, FakeUpstream

MODEL = "gpt-x"
REQUEST = ChatRequest([Message("system", "Be brief."), Message("user", "Capital of Peru?")], max_tokens=50)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai", usage=(31, 8)) as fake:
        yield fake


@pytest.fixture
async def provider(upstream: FakeUpstream) -> AsyncIterator[OpenAIProvider]:
    config = OpenAIProviderConfig.model_validate(
        {"type": "openai", "base_url": upstream.base_url, "api_key": "sk-test", "headers": {"x-org": "o1"}}
    )
    provider = OpenAIProvider("up", config)
    yield provider
    await provider.aclose()


async def collect(stream: ProviderStream) -> ChatResponse:
    accumulator = StreamAccumulator(id="r", model=MODEL)
    async for delta in stream:
        accumulator.add(delta)
    return accumulator.response()


async def test_complete_sends_auth_and_body(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    response = (await provider.complete(REQUEST, MODEL, timeout=5)).response
    assert response.content == "gpt-x says: Capital of Peru?"
    assert response.finish_reason == "stop" and response.usage == Usage(31, 8)
    assert response.id.startswith("chatcmpl-") and response.model == MODEL
    [sent] = upstream.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test" and sent.headers["x-org"] == "o1"
    assert sent.body == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of Peru?"},
        ],
        "max_completion_tokens": 50,
    }


async def test_complete_with_tool_calls(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour(tool_calls=[("weather", '{"city": "Lima"}')]))
    request = ChatRequest([Message("user", "Weather in Lima?")], tools=[Tool("weather")])
    response = (await provider.complete(request, MODEL, timeout=5)).response
    assert response.content is None and response.finish_reason == "tool_calls"
    [call] = response.tool_calls
    assert (call.name, call.arguments) == ("weather", '{"city": "Lima"}') and call.id.startswith("call_")


async def test_stream_text_with_usage(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour(content="Lima is the capital of Peru.", finish_reason="length"))
    response = await collect(await provider.stream(REQUEST, MODEL, timeout=5))
    assert response.content == "Lima is the capital of Peru."
    assert response.finish_reason == "length" and response.usage == Usage(31, 8)
    body = upstream.requests[0].body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_stream_tool_calls(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour(tool_calls=[("weather", '{"city": "Lima"}'), ("time", '{"tz": "PET"}')]))
    response = await collect(await provider.stream(REQUEST, MODEL, timeout=5))
    assert response.content is None and response.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [
        ("weather", '{"city": "Lima"}'),
        ("time", '{"tz": "PET"}'),
    ]
    assert all(c.id.startswith("call_") for c in response.tool_calls)


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (500, True), (503, True), (400, False)])
async def test_http_errors(
    provider: OpenAIProvider, upstream: FakeUpstream, status: int, retryable: bool
) -> None:
    upstream.script(MODEL, Behaviour("status", status=status, retry_after=2 if status == 429 else None))
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(REQUEST, MODEL, timeout=5)
    error = caught.value
    assert (error.status, error.retryable) == (status, retryable)
    assert error.retry_after == (2.0 if status == 429 else None)
    assert f"scripted HTTP {status}" in error.message  # the message from OpenAI's error object


async def test_stream_refused_before_any_event(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour("status", status=429, retry_after=1))
    with pytest.raises(UpstreamError) as caught:
        await provider.stream(REQUEST, MODEL, timeout=5)
    assert (caught.value.status, caught.value.retryable, caught.value.retry_after) == (429, True, 1.0)


async def test_malformed_json(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour("malformed_json"), Behaviour("malformed_json"))
    with pytest.raises(UpstreamError, match="malformed JSON") as caught:
        await provider.complete(REQUEST, MODEL, timeout=5)
    assert caught.value.retryable
    stream = await provider.stream(REQUEST, MODEL, timeout=5)
    with pytest.raises(UpstreamError, match="malformed JSON in the upstream stream"):
        await collect(stream)


async def test_error_chunk_in_the_stream(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour("stream_error", status=500))
    stream = await provider.stream(REQUEST, MODEL, timeout=5)
    with pytest.raises(UpstreamError, match="upstream stream error"):
        await collect(stream)


async def test_dropped_connections(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
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
    assert "gpt-x says: Capital of Peru?".startswith("".join(seen)) and "".join(seen)


async def test_slow_upstream_times_out(provider: OpenAIProvider, upstream: FakeUpstream) -> None:
    upstream.script(MODEL, Behaviour("slow", delay_s=2), Behaviour("slow", delay_s=2))
    with pytest.raises(UpstreamTimeout):
        await provider.complete(REQUEST, MODEL, timeout=0.2)
    with pytest.raises(UpstreamTimeout):
        await provider.stream(REQUEST, MODEL, timeout=0.2)


async def test_a_cookie_an_upstream_sets_never_goes_out_with_a_later_request(upstream: FakeUpstream) -> None:
    """The proxy's one connection pool serves every client: a cookie from one answer (e.g. a CDN's session
    cookie) must not travel with the next client's request. By host name, which a cookie jar would keep."""
    upstream.script(MODEL, Behaviour(set_cookie="session=client-one; Path=/"))
    base_url = upstream.base_url.replace("127.0.0.1", "localhost")
    config = OpenAIProviderConfig.model_validate(
        {"type": "openai", "base_url": base_url, "api_key": "sk-test"}
    )
    provider = OpenAIProvider("up", config)
    try:
        for _ in range(2):
            await provider.complete(REQUEST, MODEL, timeout=5)
        assert isinstance(provider.session.cookie_jar, aiohttp.DummyCookieJar)
    finally:
        await provider.aclose()
    first, second = upstream.requests
    assert "cookie" not in first.headers and "cookie" not in second.headers
