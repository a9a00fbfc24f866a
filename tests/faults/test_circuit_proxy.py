"""Circuit breakers through the real proxy, in front of real loopback upstreams of both shapes, on a clock
the test moves: a failing model is skipped without a call, the fallbacks answer at once, /readyz and
/metrics show the breakers, and a trial request closes them again."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.faults.conftest import FakeClock, check_costs, check_openai_body, check_openai_stream, config_for
from tierwise.testing.upstreams import Behaviour, FakeUpstream

CIRCUIT = {"failures": 3, "window_s": 30, "open_s": 10}


def ask(client: httpx.Client, model: str = "tierwise/cheap", *, stream: bool = False) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return client.post("/v1/chat/completions", json=body)


def attempts(proxy: Any, response: httpx.Response) -> list[tuple[str, str, str | None]]:
    record = proxy.record(response.headers["x-tierwise-request-id"])
    check_costs(record)
    return [(a.model, a.status, a.error if a.status != "ok" else None) for a in record.attempts]


def gauge(proxy: Any, model: str) -> tuple[float, float]:
    got = proxy.metrics()
    labels = (("model", model),)
    return got[("tierwise_circuit_open", labels)], got[("tierwise_circuit_opened_total", labels)]


def test_opens_skips_without_calling_then_a_trial_closes_it(serve: Any, upstream: FakeUpstream) -> None:
    clock = FakeClock()
    proxy = serve(config_for(upstream, retry={"attempts": 1, "circuit": CIRCUIT}), clock)
    upstream.script("cheap-a", *[Behaviour("status", status=503)] * 3)
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for _ in range(3):
            answered = ask(client)
            assert answered.status_code == 200 and answered.headers["x-tierwise-model"] == "cheap-b"
        assert proxy.circuits()["cheap-a"]["state"] == "open"
        assert proxy.circuits()["cheap-a"]["retry_in_s"] == 10
        assert proxy.circuits()["cheap-b"] == {"state": "closed", "recent_failures": 0}
        assert gauge(proxy, "cheap-a") == (1, 1) and gauge(proxy, "cheap-b") == (0, 0)

        skipped = ask(client)
        assert skipped.headers["x-tierwise-model"] == "cheap-b"
        assert attempts(proxy, skipped) == [("cheap-a", "error", "circuit open"), ("cheap-b", "ok", None)]
        record = proxy.record(skipped.headers["x-tierwise-request-id"])
        assert record.attempts[0].latency_ms == 0 and record.attempts[0].http_status is None
        assert len(upstream.requests_for("cheap-a")) == 3  # no call while open

        clock.advance(9.9)
        assert ask(client).headers["x-tierwise-model"] == "cheap-b"
        clock.advance(0.1)
        assert proxy.circuits()["cheap-a"]["state"] == "half_open"
        trial = ask(client)  # cheap-a's script is used up: it answers again
        assert trial.headers["x-tierwise-model"] == "cheap-a"
        assert attempts(proxy, trial) == [("cheap-a", "ok", None)]
    assert proxy.circuits()["cheap-a"] == {"state": "closed", "recent_failures": 0}
    assert gauge(proxy, "cheap-a") == (0, 1)
    assert len(upstream.requests_for("cheap-a")) == 4


def test_a_failed_trial_reopens_and_streams_skip_too(serve: Any, anthropic_upstream: FakeUpstream) -> None:
    upstream = anthropic_upstream
    clock = FakeClock()
    proxy = serve(config_for(upstream, retry={"attempts": 1, "circuit": CIRCUIT}), clock)
    upstream.script("cheap-a", *[Behaviour("status", status=500)] * 4)
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for _ in range(3):
            ask(client)
        clock.advance(10)
        trial = ask(client)
        assert trial.headers["x-tierwise-model"] == "cheap-b"
        assert attempts(proxy, trial) == [
            ("cheap-a", "error", "HTTP 500: scripted HTTP 500"),
            ("cheap-b", "ok", None),
        ]
        assert proxy.circuits()["cheap-a"]["state"] == "open"
        assert gauge(proxy, "cheap-a") == (1, 2)

        streamed = ask(client, stream=True)
        text, error = check_openai_stream(streamed.content)
        assert error is None and text == "cheap-b says: hi"
        assert attempts(proxy, streamed) == [("cheap-a", "error", "circuit open"), ("cheap-b", "ok", None)]
    assert len(upstream.requests_for("cheap-a")) == 4


def test_a_request_that_opens_the_circuit_stops_retrying_that_model(
    serve: Any, openai_upstream: FakeUpstream
) -> None:
    upstream = openai_upstream
    proxy = serve(config_for(upstream, retry={"attempts": 2, "circuit": CIRCUIT}), FakeClock())
    upstream.script("cheap-a", *[Behaviour("status", status=502)] * 4)
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        first = ask(client)
        assert [a[:2] for a in attempts(proxy, first)] == [
            ("cheap-a", "error"), ("cheap-a", "error"), ("cheap-b", "ok"),
        ]  # fmt: skip
        # Its first failure is the third: the circuit opens, so no backoff and no retry of cheap-a.
        second = ask(client)
        assert attempts(proxy, second) == [
            ("cheap-a", "error", "HTTP 502: scripted HTTP 502"),
            ("cheap-b", "ok", None),
        ]
    assert len(upstream.requests_for("cheap-a")) == 3


def test_an_open_tier_falls_back_up_at_once_or_fails_cleanly(
    serve: Any, anthropic_upstream: FakeUpstream
) -> None:
    upstream = anthropic_upstream
    clock = FakeClock()
    retry = {"attempts": 1, "backoff_s": 1, "max_backoff_s": 1, "circuit": CIRCUIT}
    proxy = serve(config_for(upstream, retry=retry), clock)
    upstream.script("cheap-a", *[Behaviour("status", status=503)] * 3)
    upstream.script("cheap-b", *[Behaviour("status", status=503)] * 3)
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for _ in range(3):
            assert ask(client, "tierwise/auto").headers["x-tierwise-model"] == "mid-a"
        started = time.perf_counter()
        answered = ask(client, "tierwise/auto")
        assert time.perf_counter() - started < 0.5  # no backoff, no call: straight to the tier above
        assert answered.headers["x-tierwise-tier"] == "mid"
        assert attempts(proxy, answered) == [
            ("cheap-a", "error", "circuit open"),
            ("cheap-b", "error", "circuit open"),
            ("mid-a", "ok", None),
        ]
        # A concrete model whose circuit is open: a clean 502 in OpenAI's shape, listing the skip.
        refused = ask(client, "cheap-a")
        assert refused.status_code == 502
        body = check_openai_body(502, refused.content)
        assert body["error"]["code"] == "all_attempts_failed"
        assert body["error"]["attempts"] == [
            {
                "model": "cheap-a",
                "tier": "cheap",
                "status": "error",
                "http_status": None,
                "error": "circuit open",
            }
        ]
        record = proxy.record(refused.headers["x-tierwise-request-id"])
        assert record.status == "error" and record.cost_usd == 0
    assert len(upstream.requests_for("cheap-a")) == 3 and len(upstream.requests_for("cheap-b")) == 3


def test_timeouts_drops_and_429s_count_but_client_errors_do_not(serve: Any, upstream: FakeUpstream) -> None:
    retry = {"attempts": 1, "timeout_s": 0.3, "circuit": CIRCUIT}
    proxy = serve(config_for(upstream, retry=retry), FakeClock())
    upstream.script("cheap-a", *[Behaviour("status", status=400)] * 4)
    upstream.script(
        "cheap-b", Behaviour("slow", delay_s=2), Behaviour("drop"), Behaviour("status", status=429)
    )
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for _ in range(4):  # cheap-a refuses each request (400), cheap-b fails each of the first three
            ask(client, "tierwise/auto")
        assert proxy.circuits()["cheap-a"] == {"state": "closed", "recent_failures": 0}
        assert proxy.circuits()["cheap-b"]["state"] == "open"
        statuses = [r.attempts[1].status for r in proxy.records()[:3]]
        assert statuses == ["timeout", "error", "error"]


async def test_half_open_lets_exactly_one_of_many_concurrent_requests_try(
    serve: Any, openai_upstream: FakeUpstream
) -> None:
    upstream = openai_upstream
    clock = FakeClock()
    proxy = serve(config_for(upstream, retry={"attempts": 1, "circuit": CIRCUIT}), clock)
    upstream.script("cheap-a", *[Behaviour("status", status=503)] * 3, Behaviour("slow", delay_s=0.5))
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        body = {"model": "tierwise/cheap", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(3):
            await client.post("/v1/chat/completions", json=body)
        clock.advance(10)
        answers = await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for _ in range(10)))
    models = sorted(a.headers["x-tierwise-model"] for a in answers)
    assert models == ["cheap-a"] + ["cheap-b"] * 9
    assert len(upstream.requests_for("cheap-a")) == 4
    assert proxy.circuits()["cheap-a"]["state"] == "closed"
    for answer in answers:
        if answer.headers["x-tierwise-model"] == "cheap-b":
            assert attempts(proxy, answer)[0] == ("cheap-a", "error", "circuit open")
