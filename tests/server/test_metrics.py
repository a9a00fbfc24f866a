"""GET /metrics: per-class Prometheus counters that match the records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import router_config
from tierwise.metrics import Metrics
from tierwise.report import summarize
from tierwise.store.records import RoutingRecord
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


def test_gate_verdicts_upstream_fallbacks_and_feedback(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url, routing={"policy": "cascade"}))
    # Request 1: cheap-a fails upstream (500, twice: attempts=2), cheap-b answers bad JSON -> mid passes.
    # Request 2: cheap-a answers good JSON at once.
    openai_upstream.script(
        "cheap-a",
        Behaviour("status", status=500),
        Behaviour("status", status=500),
        Behaviour(content='{"a": 1}'),
    )
    openai_upstream.script("cheap-b", Behaviour(content="not json"))
    openai_upstream.script("mid-a", Behaviour(content='{"ok": 2}'))
    ids = []
    with openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0) as client:
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(
                model="tierwise/auto",
                messages=[{"role": "user", "content": "Rephrase as JSON"}],
                response_format={"type": "json_object"},
            )
            ids.append(raw.headers["x-tierwise-request-id"])
    for rid, score in zip(ids, (0.25, 1.0), strict=True):
        assert httpx.post(
            proxy.url + "/v1/tierwise/feedback",
            json={"request_id": rid, "score": score},
            headers={"authorization": "Bearer k"},  # the key that made the request
        ).is_success
    records = proxy.records()
    got = samples(proxy.url)

    def count(gate: str, verdict: str) -> float:
        key = (("gate", gate), ("request_class", "rephrase"), ("verdict", verdict))
        return got.get(("tierwise_gate_verdicts_total", key), 0.0)

    expected: dict[tuple[str, str], int] = {}
    for r in records:
        for a in r.attempts:
            for v in a.gates or []:
                k = (v["gate"], "pass" if v["passed"] else "fail")
                expected[k] = expected.get(k, 0) + 1
    assert expected[("json", "fail")] == 1 and expected[("json", "pass")] == 2
    for (gate, verdict), n in expected.items():
        assert count(gate, verdict) == n
    klass = (("request_class", "rephrase"),)
    assert got[("tierwise_upstream_fallbacks_total", klass)] == 1  # only the first had failed attempts
    assert got[("tierwise_feedback_score_count", klass)] == 2
    assert got[("tierwise_feedback_score_sum", klass)] == pytest.approx(1.25)


def test_cost_and_baseline_follow_the_report_rule() -> None:
    """Cost counts everything spent, errors included; the premium-only baseline only the served requests."""

    def record(rid: str, status: str, cost: float, baseline: float) -> RoutingRecord:
        return RoutingRecord(
            request_id=rid, ts=0.0, endpoint="openai.chat", status=status,  # type: ignore[arg-type]
            http_status=200 if status == "ok" else 502, request_class="chat", tier="cheap", model="m",
            decision={"tier": "cheap"}, cost_usd=cost, baseline_cost_usd=baseline, latency_ms=1.0,
        )  # fmt: skip

    records = [record("ok", "ok", 0.001, 0.01), record("err", "error", 0.002, 0.03)]
    metrics = Metrics()
    for r in records:
        metrics.observe(r)
    value = metrics.registry.get_sample_value
    row = summarize(records)["chat"]
    assert value("tierwise_cost_usd_total", {"request_class": "chat"}) == pytest.approx(row["cost_usd"])
    assert row["cost_usd"] == pytest.approx(0.003)
    assert value("tierwise_baseline_cost_usd_total", {"request_class": "chat"}) == pytest.approx(
        row["baseline_cost_usd"]
    )
    assert row["baseline_cost_usd"] == pytest.approx(0.01)


WORKER_GAUGES = """
import sys
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from tierwise.config import CircuitConfig
from tierwise.metrics import Metrics
from tierwise.policy.circuit import Circuits

spec = CircuitConfig()
circuits = {"now": Circuits(spec, ["a", "b"])}
for _ in range(spec.failures):
    circuits["now"].get("a").failure(False)
metrics = Metrics()
metrics.track_circuits(lambda: circuits["now"])
metrics.publish_worker_state()
circuits["now"] = Circuits(spec, ["b"])  # a config version without model a
metrics.publish_worker_state()
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
sys.stdout.write(generate_latest(registry).decode())
"""


def test_a_worker_zeroes_the_live_gauge_of_a_model_it_no_longer_has(tmp_path: Path) -> None:
    """Under serve --workers each worker copies its breakers into multiprocess gauges; a model a new config
    version removed must not stay open there (its file cannot drop the series), while its count stays."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "TIERWISE_WORKERS": "2"}
    done = subprocess.run(
        [sys.executable, "-c", WORKER_GAUGES],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(done.stdout)
        for s in family.samples
        if s.name.startswith("tierwise_circuit")
    }
    assert got[("tierwise_circuit_open", (("model", "a"),))] == 0.0
    assert got[("tierwise_circuit_open", (("model", "b"),))] == 0.0
    assert got[("tierwise_circuit_opened_total", (("model", "a"),))] == 1.0
