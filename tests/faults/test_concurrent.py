"""Many clients at once against upstreams of both shapes that fail in every way the fakes can: each client
gets a whole answer or a clean OpenAI-shaped error within a bound, every request leaves exactly one record,
and every upstream call is in exactly one record, billed at most once."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.faults.conftest import check_costs, check_openai_body, check_openai_stream, shaped_config
from tierwise.testing.upstreams import Behaviour, FakeUpstream

FAULTS = [
    *[Behaviour()] * 6,
    Behaviour("status", status=500),
    Behaviour("status", status=503),
    Behaviour("status", status=429, retry_after=0.05),
    Behaviour("slow", delay_s=2),  # past the attempt timeout
    Behaviour("drop"),
    Behaviour("malformed_json"),
    Behaviour("stream_error", status=529),
    Behaviour("status", status=400),
]
MODELS = ["tierwise/auto", "tierwise/cheap", "tierwise/mid", "tierwise/premium"]


@pytest.fixture
def upstreams() -> Iterator[tuple[FakeUpstream, FakeUpstream]]:
    with FakeUpstream("openai") as oai, FakeUpstream("anthropic") as ant:
        yield oai, ant


def storm(proxy_config: Any, oai: FakeUpstream, ant: FakeUpstream, seed: int) -> None:
    """Script a run of random faults for every model (then plain answers)."""
    rng = random.Random(seed)
    for model, fake in (("cheap-a", oai), ("cheap-b", ant), ("mid-a", oai), ("premium-a", ant)):
        fake.script(model, *(rng.choice(FAULTS) for _ in range(30)))


def faulty_config(oai: FakeUpstream, ant: FakeUpstream) -> Any:
    return shaped_config(
        {"openai": oai.base_url, "anthropic": ant.base_url},
        models_on={"cheap-b": "anthropic", "premium-a": "anthropic"},
        retry={
            "attempts": 2,
            "timeout_s": 0.3,
            "backoff_s": 0.01,
            "max_backoff_s": 0.02,
            "circuit": {"failures": 8, "window_s": 30, "open_s": 30},
        },
    )


async def test_fifty_concurrent_clients_through_a_fault_storm(
    serve: Any, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    oai, ant = upstreams
    proxy = serve(faulty_config(oai, ant))
    storm(proxy.config, oai, ant, seed=8)

    async def one(client: httpx.AsyncClient, i: int) -> tuple[bool, httpx.Response]:
        stream = i % 2 == 0
        body = {
            "model": MODELS[i % len(MODELS)],
            "messages": [{"role": "user", "content": f"question {i}"}],
            "stream": stream,
        }
        response = await client.post("/v1/chat/completions", json=body)
        return stream, response

    limits = httpx.Limits(max_connections=100)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=proxy.url, timeout=15, limits=limits) as client:
        # Never a hang: every answer within a bound far below the clients' own timeout.
        results = await asyncio.wait_for(asyncio.gather(*(one(client, i) for i in range(50))), 10)
    elapsed = time.perf_counter() - started

    ids = [r.headers["x-tierwise-request-id"] for _, r in results]
    assert len(set(ids)) == 50
    outcomes: Counter[str] = Counter()
    for stream, response in results:
        record = proxy.record(response.headers["x-tierwise-request-id"])
        check_costs(record)
        if stream and response.status_code == 200:
            text, error = check_openai_stream(response.content)
            if error is None:
                assert record.status == "ok" and text == record.response_text
                outcomes["ok"] += 1
            else:
                assert record.status == "error" and "mid-stream" in (record.error or "")
                outcomes["broken stream"] += 1
        else:
            check_openai_body(response.status_code, response.content)
            assert response.status_code in (200, 502)
            if response.status_code == 200:
                assert record.status == "ok"
                outcomes["ok"] += 1
            else:
                assert record.status == "error" and record.http_status == 502 and record.cost_usd == 0
                outcomes["failed"] += 1
        if len({a.model for a in record.attempts}) > 1:
            outcomes["fell back"] += 1

    # Exactly one record per request, nothing else.
    records = proxy.records()
    assert sorted(r.request_id for r in records) == sorted(ids)
    # Every call an upstream received is one attempt of one record; skipped (circuit open) ones were no call.
    calls = [a for r in records for a in r.attempts if a.error != "circuit open"]
    assert len(calls) == len(oai.requests) + len(ant.requests)
    for model in ("cheap-a", "cheap-b", "mid-a", "premium-a"):
        received = len(oai.requests_for(model)) + len(ant.requests_for(model))
        assert received == sum(1 for a in calls if a.model == model), model
    # The live counters saw each record once, and the same money.
    got = proxy.metrics()
    assert sum(v for (name, _), v in got.items() if name == "tierwise_requests_total") == 50
    counted = sum(v for (name, _), v in got.items() if name == "tierwise_cost_usd_total")
    assert counted == pytest.approx(sum(r.cost_usd for r in records))
    # The storm did what it was meant to: answers, fallbacks, and failures, all quickly.
    assert outcomes["ok"] >= 20 and outcomes["fell back"] >= 5 and outcomes["failed"] >= 1, outcomes
    assert any(a.error == "circuit open" for r in records for a in r.attempts)  # some breaker opened
    assert elapsed < 8, elapsed


async def test_the_openai_sdk_sees_answers_or_its_own_errors(
    serve: Any, upstreams: tuple[FakeUpstream, FakeUpstream]
) -> None:
    oai, ant = upstreams
    proxy = serve(faulty_config(oai, ant))
    storm(proxy.config, oai, ant, seed=3)

    async def one(client: openai.AsyncOpenAI, i: int) -> str:
        messages: Any = [{"role": "user", "content": f"question {i}"}]
        model = MODELS[i % len(MODELS)]
        try:
            if i % 2:
                done = await client.chat.completions.create(model=model, messages=messages)
                assert done.choices[0].message.content
                return "ok"
            stream = await client.chat.completions.create(model=model, messages=messages, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text
            return "ok"
        except openai.APIStatusError as exc:
            assert exc.status_code == 502 and isinstance(exc.body, dict) and exc.body["message"]
            return "502"
        except openai.APIError as exc:  # an error event mid-stream, raised by the SDK as it reads it
            assert "mid-stream" in exc.message
            return "broken stream"

    async with openai.AsyncOpenAI(base_url=proxy.url + "/v1", api_key="k", max_retries=0) as client:
        got = await asyncio.wait_for(asyncio.gather(*(one(client, i) for i in range(30))), 10)
    assert Counter(got)["ok"] >= 12, got
    assert len(proxy.records()) == 30
