"""FakeUpstream answers in each API's real shapes (checked with the official SDKs) and as scripted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import anthropic
import openai
import pytest

from tierwise.testing import Behaviour, FakeUpstream

USER = [{"role": "user", "content": "What is the capital of Peru?"}]


@pytest.fixture
def fake_openai() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai", models=["gpt-x"]) as upstream:
        yield upstream


@pytest.fixture
def fake_anthropic() -> Iterator[FakeUpstream]:
    with FakeUpstream("anthropic", usage=(42, 7)) as upstream:
        yield upstream


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_openai_sdk_reads_default_answer_and_auth_is_recorded(fake_openai: FakeUpstream) -> None:
    async with openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=0) as client:
        completion = await client.chat.completions.create(model="gpt-x", messages=USER)
    assert completion.choices[0].message.content == "gpt-x says: What is the capital of Peru?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 10
    assert completion.usage.completion_tokens == 5
    [received] = fake_openai.requests
    assert received.path == "/v1/chat/completions"
    assert received.headers["authorization"] == "Bearer sk-test"
    assert received.body["messages"] == USER and received.model == "gpt-x"


async def test_openai_sdk_streams_text_tool_calls_and_usage(fake_openai: FakeUpstream) -> None:
    fake_openai.script("gpt-x", Behaviour(content="Lima is the capital."))
    fake_openai.script("gpt-x", Behaviour(tool_calls=[("lookup", '{"city": "Lima", "n": 3}')]))
    async with openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="k", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="gpt-x",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "Lima is the capital."
        assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 3
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.total_tokens == 15

        stream = await client.chat.completions.create(model="gpt-x", messages=USER, stream=True)
        pieces = [c.choices[0].delta.tool_calls for c in [chunk async for chunk in stream]]
    calls = [call for piece in pieces if piece for call in piece]
    assert calls[0].id and calls[0].function and calls[0].function.name == "lookup"
    assert "".join(c.function.arguments or "" for c in calls if c.function) == '{"city": "Lima", "n": 3}'


async def test_anthropic_sdk_reads_messages_and_streams(fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.script("claude-x", Behaviour(content="Hello there, traveller"))
    fake_anthropic.script(
        "claude-x", Behaviour(content="Let me look.", tool_calls=[("lookup", '{"q": "Lima"}')])
    )
    async with anthropic.AsyncAnthropic(
        base_url=fake_anthropic.base_url, api_key="ak", max_retries=0
    ) as client:
        async with client.messages.stream(model="claude-x", max_tokens=100, messages=USER) as stream:
            texts = [text async for text in stream.text_stream]
            final = await stream.get_final_message()
        assert "".join(texts) == "Hello there, traveller" and len(texts) == 3
        assert final.stop_reason == "end_turn" and final.usage.input_tokens == 42
        assert final.usage.output_tokens == 7

        message = await client.messages.create(model="claude-x", max_tokens=100, messages=USER)
    assert message.id.startswith("msg_") and message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    tool = message.content[1]
    assert tool.type == "tool_use" and tool.name == "lookup" and tool.input == {"q": "Lima"}
    headers = fake_anthropic.requests[0].headers
    # SDK versions differ in how they send the key; either way it is recorded.
    assert "ak" in (headers.get("x-api-key"), headers.get("authorization", "").removeprefix("Bearer "))
    assert "anthropic-version" in headers


async def test_anthropic_stream_of_tool_use_in_sdk(fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.script("claude-x", Behaviour(tool_calls=[("a", '{"x": 1}'), ("b", '{"y": [2, 3]}')]))
    client = anthropic.AsyncAnthropic(base_url=fake_anthropic.base_url, api_key="ak", max_retries=0)
    async with client, client.messages.stream(model="claude-x", max_tokens=10, messages=USER) as stream:
        final = await stream.get_final_message()
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("tool_use", {"x": 1}),
        ("tool_use", {"y": [2, 3]}),
    ]
    assert final.stop_reason == "tool_use"


async def test_scripts_are_fifo_per_model_then_default(
    fake_openai: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    fake_openai.script("a", Behaviour("status", status=429, retry_after=1.5), Behaviour(content="second"))
    fake_openai.set_default(Behaviour(content="default"))
    url = fake_openai.base_url + "/chat/completions"

    async def ask(model: str) -> tuple[int, dict[str, str], dict[str, object]]:
        async with http.post(url, json={"model": model, "messages": USER}) as response:
            return response.status, dict(response.headers), await response.json()

    status, headers, body = await ask("a")
    assert status == 429 and headers["Retry-After"] == "1.5"
    assert body == {
        "error": {
            "message": "scripted HTTP 429",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert (await ask("b"))[2]["choices"][0]["message"]["content"] == "default"
    assert (await ask("a"))[2]["choices"][0]["message"]["content"] == "second"
    assert (await ask("a"))[2]["choices"][0]["message"]["content"] == "default"
    assert [r.model for r in fake_openai.requests] == ["a", "b", "a", "a"]
    assert len(fake_openai.requests_for("a")) == 3


async def test_anthropic_errors_and_validation(
    fake_anthropic: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    fake_anthropic.script("claude-x", Behaviour("status", status=529))
    url = fake_anthropic.base_url + "/v1/messages"
    async with http.post(url, json={"model": "claude-x", "max_tokens": 5, "messages": USER}) as response:
        assert response.status == 529
        body = await response.json()
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    # The real API requires max_tokens; so does the fake, to catch providers that forget it.
    async with http.post(url, json={"model": "claude-x", "messages": USER}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["message"].startswith("max_tokens")
    with pytest.raises(ValueError, match="JSON object"):
        fake_anthropic.script("claude-x", Behaviour(tool_calls=[("f", "[1]")]))


async def test_drop_malformed_and_slow(fake_openai: FakeUpstream, http: aiohttp.ClientSession) -> None:
    fake_openai.script(
        "m", Behaviour("drop"), Behaviour("drop"), Behaviour("malformed_json"), Behaviour("slow", delay_s=0.2)
    )
    url = fake_openai.base_url + "/chat/completions"
    body = {"model": "m", "messages": USER}
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(url, json=body) as response:
            await response.read()
    async with http.post(url, json={**body, "stream": True}) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    async with http.post(url, json=body) as response:
        assert response.status == 200 and await response.read() == b'{"choices": ['
    started = time.monotonic()
    async with http.post(url, json=body) as response:
        assert (await response.json())["choices"][0]["message"]["content"].startswith("m says:")
    assert time.monotonic() - started >= 0.19


async def test_models_listing(fake_openai: FakeUpstream, http: aiohttp.ClientSession) -> None:
    fake_openai.script("scripted-model")
    async with http.get(fake_openai.base_url + "/models") as response:
        data = await response.json()
    assert [m["id"] for m in data["data"]] == ["gpt-x", "scripted-model"]


def test_lifecycle() -> None:
    upstream = FakeUpstream("anthropic")
    with pytest.raises(RuntimeError):
        _ = upstream.base_url
    upstream.start()
    try:
        assert upstream.base_url == f"http://127.0.0.1:{upstream.port}"
        with pytest.raises(RuntimeError):
            upstream.start()
    finally:
        upstream.stop()
    upstream.stop()  # idempotent
    with pytest.raises(ValueError):
        FakeUpstream("gemini")


async def test_recording_can_be_turned_off(http: aiohttp.ClientSession) -> None:
    with FakeUpstream("openai", record=False) as upstream:
        async with http.post(
            upstream.base_url + "/chat/completions", json={"model": "m", "messages": USER}
        ) as r:
            assert r.status == 200
        assert upstream.requests == []
