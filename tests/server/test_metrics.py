"""GET /metrics: per-class Prometheus counters that match the records."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import router_config
from tierwise.testing.upstreams import Behaviour, FakeUpstream


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_follow_the_records(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url, routing={"policy": "cascade"}))
    openai_upstream.script("cheap-a", Behaviour(content="not json"), Behaviour(content='{"ok": 1}'))
    openai_upstream.script("mid-a", Behaviour(content='{"ok": 2}'))
    with openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0) as client:
        for _ in range(2):  # the first escalates (bad JSON), the second passes at cheap
            client.chat.completions.create(
                model="tierwise/auto",
                messages=[{"role": "user", "content": "Rephrase as JSON"}],
                response_format={"type": "json_object"},
            )
    records = proxy.records()
    got = samples(proxy.url)
    klass = (("request_class", "rephrase"),)
    assert got[("tierwise_cascaded_total", klass)] == 2
    assert got[("tierwise_escalations_total", klass)] == 1
    assert got[("tierwise_cost_usd_total", klass)] == pytest.approx(sum(r.cost_usd for r in records))
    assert got[("tierwise_baseline_cost_usd_total", klass)] == pytest.approx(
        sum(r.baseline_cost_usd or 0 for r in records)
    )
    assert (
        got[("tierwise_requests_total", (("request_class", "rephrase"), ("status", "ok"), ("tier", "mid")))]
        == 1
    )
    assert (
        got[("tierwise_requests_total", (("request_class", "rephrase"), ("status", "ok"), ("tier", "cheap")))]
        == 1
    )
    assert got[("tierwise_latency_seconds_count", klass)] == 2
