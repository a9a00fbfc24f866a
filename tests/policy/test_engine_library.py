"""The Engine as a library: complete() and stream() decide the route themselves, LLM classifier included."""

from __future__ import annotations

import json

from tests.conftest import router_config
from tierwise import ChatRequest, Engine, Message, RequestContext
from tierwise.providers import build_providers
from tierwise.store.records import RoutingRecord
from tierwise.testing.upstreams import Behaviour, FakeUpstream


class Records:
    def __init__(self) -> None:
        self.items: list[RoutingRecord] = []

    def submit(self, record: RoutingRecord) -> None:
        self.items.append(record)


async def test_complete_and_stream_without_a_route(openai_upstream: FakeUpstream) -> None:
    config = router_config(openai_upstream.base_url, routing={"llm_classifier": {"model": "cheap-b"}})
    verdict = {
        "task": "chat",
        "difficulty": "medium",
        "needs_tools": False,
        "domain": "general",
        "confidence": 0.9,
    }
    openai_upstream.script(
        "cheap-b", Behaviour(content=json.dumps(verdict)), Behaviour(content=json.dumps(verdict))
    )
    sink = Records()
    engine = Engine(config, build_providers(config), sink=sink)
    try:
        request = ChatRequest(messages=[Message(role="user", content="hello")])
        done = await engine.complete(request, RequestContext(request_id="lib-1", endpoint="library"))
        assert done.route.tier == "mid" and done.route.reason == "llm:medium,confidence=0.90"
        assert done.response.content == "mid-a says: hello"
        streaming = await engine.stream(
            ChatRequest(messages=[Message(role="user", content="hello")], stream=True),
            RequestContext(request_id="lib-2", endpoint="library"),
        )
        text = "".join([d.content or "" async for d in streaming])
        assert text == "mid-a says: hello" and streaming.route.tier == "mid"
    finally:
        await engine.aclose()
    assert [r.request_id for r in sink.items] == ["lib-1", "lib-2"]
    assert all(r.routing_cost_usd > 0 for r in sink.items)


async def test_a_request_cancelled_while_the_llm_classifier_decides_leaves_a_record(
    openai_upstream: FakeUpstream,
) -> None:
    import asyncio

    config = router_config(openai_upstream.base_url, routing={"llm_classifier": {"model": "cheap-b"}})
    openai_upstream.script("cheap-b", Behaviour("slow", delay_s=5.0))
    sink = Records()
    engine = Engine(config, build_providers(config), sink=sink)
    try:
        request = ChatRequest(messages=[Message(role="user", content="hello")])
        task = asyncio.create_task(
            engine.complete(request, RequestContext(request_id="gone", endpoint="lib"))
        )
        await asyncio.sleep(0.2)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:  # pragma: no cover
            raise AssertionError("the request should have been cancelled")
    finally:
        await engine.aclose()
    [record] = sink.items
    assert (record.request_id, record.status, record.http_status) == ("gone", "error", 499)
    assert record.reason is not None and record.reason.startswith("llm:cancelled;")
    assert record.attempts == [] and record.tier


async def test_no_backoff_or_retry_once_the_models_circuit_opened(openai_upstream: FakeUpstream) -> None:
    config = router_config(
        openai_upstream.base_url,
        retry={"attempts": 4, "backoff_s": 0.5, "circuit": {"failures": 2, "window_s": 60, "open_s": 60}},
    )
    openai_upstream.script("cheap-a", *[Behaviour("status", status=503)] * 4)
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    sink = Records()
    engine = Engine(config, build_providers(config), sink=sink, sleep=sleep)
    try:
        request = ChatRequest(model="tierwise/cheap", messages=[Message(role="user", content="hi")])
        done = await engine.complete(request, RequestContext(request_id="c-1", endpoint="lib"))
    finally:
        await engine.aclose()
    # Two failures open cheap-a's circuit: one backoff between them, none after, and no "circuit open"
    # attempt; the next model answers at once.
    got = [(a.model, a.status, a.retry) for a in sink.items[0].attempts]
    assert got[:2] == [("cheap-a", "error", 0), ("cheap-a", "error", 1)]
    assert got[2][0] != "cheap-a" and got[2][1] == "ok"
    assert len(sleeps) == 1 and done.record.model == got[2][0]
    assert len(openai_upstream.requests_for("cheap-a")) == 2
