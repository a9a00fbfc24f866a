"""Shadow mode and live baseline sampling through the real proxy, over loopback upstreams."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import RunningProxy, router_config
from tierwise.store.records import Comparison
from tierwise.testing.upstreams import Behaviour, FakeUpstream

ASK = [{"role": "user", "content": "Say hello to the team"}]


def comparisons(proxy: Any, n: int, timeout: float = 10.0) -> list[Comparison]:
    deadline = time.monotonic() + timeout
    while True:
        proxy.store.flush()
        found = proxy.store.comparisons()
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def config(upstream: FakeUpstream, **overrides: Any) -> Any:
    judge = {"judge-a": {"provider": "up", "price": {"input_per_mtok": 1.0, "output_per_mtok": 1.0}}}
    return router_config(upstream.base_url, models=judge, **overrides)  # merged into the default models


def test_shadow_mode_serves_the_baseline_and_compares_the_router_in_the_background(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(config(openai_upstream, mode="shadow", shadow={"sample": 1.0}))
    with openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="tierwise/auto", messages=ASK)
    reply = raw.parse()
    assert reply.choices[0].message.content == "premium-a says: Say hello to the team"
    assert raw.headers["x-tierwise-model"] == "premium-a"
    assert raw.headers["x-tierwise-reason"].startswith("shadow:baseline;router:cheap")
    rid = raw.headers["x-tierwise-request-id"]

    (pair,) = comparisons(proxy, 1)
    assert (pair.request_id, pair.mode, pair.judge) == (rid, "shadow", "programmatic")
    assert (pair.router_tier, pair.router_model, pair.baseline_model) == ("cheap", "cheap-a", "premium-a")
    assert pair.score == 0.5 and pair.error is None  # both answers pass the gates
    assert 0 < pair.router_cost_usd < pair.baseline_cost_usd
    # The router's answer came from the cheap model, in the background; it left no request record.
    assert len(openai_upstream.requests_for("cheap-a")) == 1
    (record,) = proxy.records()
    assert record.request_id == rid and record.model == "premium-a"
    assert record.cost_usd == pytest.approx(pair.baseline_cost_usd)


def test_shadow_work_never_delays_or_changes_what_the_client_gets(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    openai_upstream.set_default(Behaviour(content="the same answer everywhere"))
    # The router's side is slow; the client must not wait for it.
    openai_upstream.script("cheap-a", Behaviour("slow", delay_s=1.5, content="late"))
    openai_upstream.script("cheap-a", Behaviour("slow", delay_s=1.5, content="late"))
    plain = start_proxy(config(openai_upstream))
    shadowed = start_proxy(config(openai_upstream, mode="shadow", shadow={"sample": 1.0}))
    plain_body = httpx.post(
        plain.base_url + "/chat/completions", json={"model": "tierwise/premium", "messages": ASK}
    ).json()
    started = time.monotonic()
    body = httpx.post(
        shadowed.base_url + "/chat/completions", json={"model": "tierwise/auto", "messages": ASK}
    ).json()
    streamed = httpx.post(
        shadowed.base_url + "/chat/completions",
        json={"model": "tierwise/auto", "messages": ASK, "stream": True},
    ).text
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"the client waited {elapsed:.2f}s for background work"
    for key in ("choices", "usage", "model"):
        assert body[key] == plain_body[key]
    text = "".join(
        (json.loads(line[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or ""
        for line in streamed.splitlines()
        if line.startswith("data: {")
    )
    assert text == "the same answer everywhere"
    pairs = comparisons(shadowed, 2)
    assert len(pairs) == 2 and {p.router_model for p in pairs} == {"cheap-a"}
    assert all(p.score == 0.5 for p in pairs)  # different answers, both pass the gates: a tie


def test_live_mode_samples_the_baseline_and_a_swapped_judge_cancels_its_bias(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    # A judge that always prefers whatever it reads first: position-swapped, that is a tie.
    openai_upstream.script("judge-a", *[Behaviour(content='{"winner": "A", "reason": "first"}')] * 2)
    proxy = start_proxy(
        config(openai_upstream, shadow={"baseline_sample": 1.0, "judge": {"model": "judge-a"}})
    )
    with openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="tierwise/auto", messages=ASK)
    assert raw.headers["x-tierwise-model"] == "cheap-a"
    (pair,) = comparisons(proxy, 1)
    assert (pair.mode, pair.judge, pair.router_model, pair.baseline_model) == (
        "baseline_sample", "judge:judge-a", "cheap-a", "premium-a",
    )  # fmt: skip
    assert pair.score == 0.5 and pair.judge_cost_usd > 0 and "first" in (pair.reason or "")
    judged = openai_upstream.requests_for("judge-a")
    assert len(judged) == 2
    shown_first = [r.body["messages"][-1]["content"].split("<answer_a>\n")[1][:9] for r in judged]
    assert sorted(shown_first) == ["cheap-a s", "premium-a"]  # each answer was shown first once
    assert len(openai_upstream.requests_for("premium-a")) == 1

    stats = httpx.get(proxy.url + "/v1/tierwise/stats?window=1h").json()
    shadow = stats["classes"][pair.request_class]["shadow"]
    assert shadow["pairs"] == 1 and shadow["ties"] == 1 and shadow["ready"] is None  # too few pairs


def test_a_request_the_router_sends_to_the_baseline_needs_no_second_answer(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(config(openai_upstream, shadow={"baseline_sample": 1.0}))
    httpx.post(proxy.base_url + "/chat/completions", json={"model": "tierwise/auto", "messages": [
        {"role": "user", "content": "Prove that there are infinitely many primes, step by step, rigorously."}
    ]})  # fmt: skip
    (pair,) = comparisons(proxy, 1)
    if pair.router_model == "premium-a":
        assert pair.judge == "same_model" and pair.score == 0.5
        assert len(openai_upstream.requests_for("premium-a")) == 1
    else:  # the rules sent it lower: then the baseline was asked once, in the background
        assert pair.judge == "programmatic"
        assert len(openai_upstream.requests_for("premium-a")) == 1


def test_the_spend_cap_stops_shadow_work(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(
        config(openai_upstream, mode="shadow", shadow={"sample": 1.0, "max_spend_usd_per_day": 0})
    )
    for _ in range(3):
        httpx.post(proxy.base_url + "/chat/completions", json={"model": "tierwise/auto", "messages": ASK})
    time.sleep(0.3)
    assert comparisons(proxy, 1, timeout=0.2) == []
    assert openai_upstream.requests_for("cheap-a") == []
    assert len(proxy.records()) == 3
    # Each skipped comparison is counted, by reason, on /metrics.
    metrics = httpx.get(proxy.base_url.removesuffix("/v1") + "/metrics").text
    assert 'tierwise_shadow_skipped_total{reason="budget"} 3.0' in metrics
    assert 'tierwise_shadow_skipped_total{reason="busy"} 0.0' in metrics
    assert "tierwise_shadow_running 0.0" in metrics and "tierwise_shadow_spent_usd_today 0.0" in metrics


def test_the_spend_cap_is_the_stores_so_a_second_process_or_a_restart_keeps_the_days_spend(
    tmp_path: Path, openai_upstream: FakeUpstream
) -> None:
    shared = tmp_path / "shared.db"
    first = RunningProxy(config(openai_upstream, mode="shadow", shadow={"sample": 1.0}), shared)
    try:
        for _ in range(2):
            httpx.post(first.base_url + "/chat/completions", json={"model": "tierwise/auto", "messages": ASK})
        pairs = comparisons(first, 2)
        spent = sum(p.router_cost_usd + p.judge_cost_usd for p in pairs)
        assert spent > 0
        assert first.app.state.proxy.shadow.spent_today == pytest.approx(spent)
    finally:
        first.stop()
    # Another process on the same store, or this one restarted, with the day's cap under what was spent: it
    # reads the spend from the store's usage rows at startup, so it starts no comparison.
    cap = spent / 2
    capped = config(openai_upstream, mode="shadow", shadow={"sample": 1.0, "max_spend_usd_per_day": cap})
    second = RunningProxy(capped, shared)
    try:
        reply = httpx.post(
            second.base_url + "/chat/completions", json={"model": "tierwise/auto", "messages": ASK}
        )
        assert reply.status_code == 200
        time.sleep(0.2)
        assert len(comparisons(second, 3, timeout=0.2)) == 2  # the first process's two, no third
        assert len(openai_upstream.requests_for("cheap-a")) == 2
        metrics = httpx.get(second.url + "/metrics").text
        assert 'tierwise_shadow_skipped_total{reason="budget"} 1.0' in metrics
        (line,) = [x for x in metrics.splitlines() if x.startswith("tierwise_shadow_spent_usd_today ")]
        assert float(line.split()[1]) == pytest.approx(spent)
    finally:
        second.stop()


def test_failed_background_answers_are_recorded_not_raised(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    openai_upstream.script("cheap-a", *[Behaviour("status", status=400)] * 4)
    openai_upstream.script("cheap-b", *[Behaviour("status", status=400)] * 4)
    openai_upstream.script("mid-a", *[Behaviour("status", status=400)] * 4)
    # premium-a answers the client first, then fails the router's fallback in the background.
    openai_upstream.script("premium-a", Behaviour(), *[Behaviour("status", status=400)] * 4)
    proxy = start_proxy(config(openai_upstream, mode="shadow", shadow={"sample": 1.0}))
    reply = httpx.post(proxy.base_url + "/chat/completions", json={"model": "tierwise/auto", "messages": ASK})
    assert reply.status_code == 200
    (pair,) = comparisons(proxy, 1)
    assert pair.score is None and pair.error is not None and "AllAttemptsFailed" in pair.error
    stats = httpx.get(proxy.url + "/v1/tierwise/stats?window=1h").json()
    assert stats["classes"]["overall"]["shadow"]["failed"] == 1
