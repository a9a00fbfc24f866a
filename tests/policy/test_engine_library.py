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
