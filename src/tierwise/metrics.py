"""Prometheus metrics, per request class: what the proxy serves at ``GET /metrics``.

Counters are updated as each record is written (they are the records, counted), so every figure of
`tierwise report` has a live counterpart (feedback aside: every POST counts here, the latest score per request
and source there): escalation rate is ``tierwise_escalations_total /
tierwise_cascaded_total``, the saving ``1 - tierwise_cost_usd_total / tierwise_baseline_cost_usd_total``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tierwise.report import escalated
from tierwise.store import RecordSink
from tierwise.store.records import Comparison, Feedback, RoutingRecord

if TYPE_CHECKING:
    from tierwise.policy.circuit import Circuits
    from tierwise.shadow import ShadowState

__all__ = ["CONTENT_TYPE", "Metrics", "MetricsSink"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# With several workers, how each worker's own state is combined at a scrape (prometheus_client's multiprocess
# gauge modes): a breaker counts as open if it is in any live worker; the counts are summed over every worker
# that ever ran (a restarted worker's files stay, so the sums never go down); what is running now, over the
# live workers; the day's spend, which each worker reads from the store as a total, the highest of theirs.
WORKER_MODES: dict[str, Literal["livemax", "sum", "livesum"]] = {
    "tierwise_circuit_open": "livemax",
    "tierwise_circuit_opened_total": "sum",
    "tierwise_shadow_skipped_total": "sum",
    "tierwise_shadow_running": "livesum",
    "tierwise_shadow_spent_usd_today": "livemax",
}
WORKER_PUBLISH_S = 1.0


class Metrics:
    def __init__(self) -> None:
        self.registry = reg = CollectorRegistry()
        self._local: list[Collector] = []
        self._worker_gauges: dict[str, Any] = {}
        self._worker_series: dict[str, set[tuple[str, ...]]] = {}  # label values last published, per gauge
        by_class = ["request_class"]
        self.requests = Counter(
            "tierwise_requests",
            "Requests by class, final tier and status.",
            [*by_class, "tier", "status"],
            registry=reg,
        )
        self.cost = Counter(
            "tierwise_cost_usd", "What requests cost, all attempts and routing tax.", by_class, registry=reg
        )
        self.baseline = Counter(
            "tierwise_baseline_cost_usd",
            "What premium-only would have cost the served requests.",
            by_class,
            registry=reg,
        )
        self.routing = Counter(
            "tierwise_routing_cost_usd", "Routing tax: classifier and paid gates.", by_class, registry=reg
        )
        self.cascaded = Counter(
            "tierwise_cascaded", "Requests that went through a cascade.", by_class, registry=reg
        )
        self.escalations = Counter(
            "tierwise_escalations", "Cascaded requests past their start tier.", by_class, registry=reg
        )
        self.comparisons = Counter(
            "tierwise_shadow_comparisons",
            "Router against baseline comparisons (shadow, baseline sampling), by outcome for the router.",
            [*by_class, "mode", "outcome"],
            registry=reg,
        )
        self.gates = Counter(
            "tierwise_gate_verdicts",
            "Gate verdicts on answers, by gate and verdict (pass, fail).",
            [*by_class, "gate", "verdict"],
            registry=reg,
        )
        self.upstream_fallbacks = Counter(
            "tierwise_upstream_fallbacks",
            "Requests served after an upstream attempt failed (a retry, another model or tier took over).",
            by_class,
            registry=reg,
        )
        self.feedback = Summary(
            "tierwise_feedback_score",
            "Quality scores clients sent (POST /v1/tierwise/feedback), 0..1; the mean is sum / count.",
            by_class,
            registry=reg,
        )
        self.latency = Histogram(
            "tierwise_latency_seconds",
            "Time to the full answer (or error).",
            by_class,
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )

    def observe(self, record: RoutingRecord) -> None:
        klass = record.request_class or "unrouted"
        self.requests.labels(klass, record.tier or "", record.status).inc()
        self.cost.labels(klass).inc(record.cost_usd)
        self.routing.labels(klass).inc(record.routing_cost_usd)
        # Cost counts everything spent, errors included; the premium-only baseline the served requests only
        # (as in `tierwise report`).
        if record.status == "ok" and record.baseline_cost_usd:
            self.baseline.labels(klass).inc(record.baseline_cost_usd)
        for attempt in record.attempts:
            for verdict in attempt.gates or ():
                self.gates.labels(
                    klass, str(verdict.get("gate")), "pass" if verdict.get("passed") else "fail"
                ).inc()
        if record.status == "ok" and any(a.status != "ok" for a in record.attempts):
            self.upstream_fallbacks.labels(klass).inc()
        went_up = escalated(record)
        if went_up is not None:
            self.cascaded.labels(klass).inc()
            if went_up:
                self.escalations.labels(klass).inc()
        self.latency.labels(klass).observe(record.latency_ms / 1000)

    def observe_feedback(self, request_class: str, score: float) -> None:
        self.feedback.labels(request_class).observe(score)

    def observe_comparison(self, pair: Comparison) -> None:
        if pair.score is None:
            outcome = "failed"
        else:
            outcome = "win" if pair.score > 0.5 else "tie" if pair.score == 0.5 else "loss"
        self.comparisons.labels(pair.request_class or "unrouted", pair.mode, outcome).inc()

    def track_circuits(self, source: Callable[[], Circuits]) -> None:
        """Expose the circuit breakers ``source`` returns (read at each scrape, so a reloaded engine's):
        ``tierwise_circuit_open{model}`` (1 while open or half-open) and ``tierwise_circuit_opened_total``."""
        self._own(_CircuitCollector(source))

    def _own(self, collector: Collector) -> None:
        """A collector of this process's own state: read at each scrape with one process; with several
        workers, copied into shared gauges (publish_worker_state)."""
        self.registry.register(collector)
        self._local.append(collector)

    def publish_worker_state(self) -> None:
        """With several workers (prometheus_client's multiprocess mode): this worker's circuit and shadow
        state into multiprocess gauges, which a scrape through any worker combines per WORKER_MODES (the
        breakers' state: the max over the live workers; counts: summed over all, restarted ones included).
        Each worker publishes every WORKER_PUBLISH_S and just before answering a scrape. A series this worker
        no longer has (a model a config version removed) cannot leave its file: a live one is set to 0 (a
        removed model's breaker is not open), a count keeps its last value."""
        from prometheus_client import Gauge

        now: dict[str, set[tuple[str, ...]]] = {}
        for collector in self._local:
            for family in collector.collect():
                for sample in family.samples:
                    gauge = self._worker_gauges.get(sample.name)
                    if gauge is None:
                        gauge = Gauge(
                            sample.name,
                            family.documentation,
                            list(sample.labels),
                            multiprocess_mode=WORKER_MODES[sample.name],
                            registry=None,
                        )
                        self._worker_gauges[sample.name] = gauge
                    values = tuple(sample.labels.values())
                    now.setdefault(sample.name, set()).add(values)
                    (gauge.labels(*values) if values else gauge).set(sample.value)
        for name, before in self._worker_series.items():
            if WORKER_MODES[name].startswith("live"):
                for values in before - now.get(name, set()):
                    gauge = self._worker_gauges[name]
                    (gauge.labels(*values) if values else gauge).set(0.0)
        self._worker_series = now

    def track_shadow(self, state: ShadowState) -> None:
        """Expose the shadow comparisons' own state (read at each scrape): ``tierwise_shadow_skipped_total``
        {reason} (sampled requests not compared: ``budget``, past the day's spend cap; ``busy``, every slot
        taken), ``tierwise_shadow_running`` and ``tierwise_shadow_spent_usd_today``."""
        self._own(_ShadowCollector(state))

    def render(self) -> bytes:
        """The exposition. Under ``serve --workers`` (prometheus_client's multiprocess mode) every worker's
        files combined: counters and histograms summed, the circuit and shadow state as WORKER_MODES says."""
        from tierwise.server import workers

        if workers.count() < 2:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        self.publish_worker_state()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


class _CircuitCollector(Collector):
    """Reads the breakers at scrape time: nothing on the request path."""

    def __init__(self, source: Callable[[], Circuits]) -> None:
        self._source = source

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        gauge, opened = self._families()
        for breaker in self._source().breakers():
            gauge.add_metric([breaker.model], 0.0 if breaker.state == "closed" else 1.0)
            opened.add_metric([breaker.model], float(breaker.opened))
        return iter((gauge, opened))

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, CounterMetricFamily]:
        return (
            GaugeMetricFamily(
                "tierwise_circuit_open",
                "1 while a model's circuit breaker is open or half-open (calls skipped), 0 when closed.",
                labels=["model"],
            ),
            CounterMetricFamily(
                "tierwise_circuit_opened",
                "Times a model's circuit breaker has opened.",
                labels=["model"],
            ),
        )


class MetricsSink:
    """A record sink that counts each record, then hands it on to the store."""

    def __init__(self, metrics: Metrics, inner: RecordSink) -> None:
        self.metrics = metrics
        self.inner = inner

    def submit(self, record: RoutingRecord | Feedback | Comparison) -> None:
        if isinstance(record, RoutingRecord):
            self.metrics.observe(record)
        elif isinstance(record, Comparison):
            self.metrics.observe_comparison(record)
        self.inner.submit(record)


class _ShadowCollector(Collector):
    """Reads the shadow state at scrape time: nothing on the request path."""

    REASONS = ("budget", "busy")

    def __init__(self, state: ShadowState) -> None:
        self._state = state

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        skipped, running, spent = self._families()
        for reason in self.REASONS:
            skipped.add_metric([reason], float(self._state.skipped.get(reason, 0)))
        running.add_metric([], float(len(self._state.tasks)))
        spent.add_metric([], self._state.spent_today)
        return iter((skipped, running, spent))

    @staticmethod
    def _families() -> tuple[CounterMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            CounterMetricFamily(
                "tierwise_shadow_skipped",
                "Requests sampled for a shadow or baseline comparison but not compared, by reason "
                "(budget: past shadow.max_spend_usd_per_day; busy: shadow.max_concurrent running).",
                labels=["reason"],
            ),
            GaugeMetricFamily("tierwise_shadow_running", "Shadow comparisons running now."),
            GaugeMetricFamily(
                "tierwise_shadow_spent_usd_today",
                "What shadow work (background answers and judging) has spent this UTC day.",
            ),
        )
