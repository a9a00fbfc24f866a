"""Per-class figures from the request records: what `tierwise report`, the stats endpoint and the dashboard
show.

From the records: cost against the premium-only baseline, escalation rate with the brief's health bands,
gate verdicts, errors and upstream fallbacks, latency percentiles and the routing tax. From feedback scores
(``POST /v1/tierwise/feedback``): quality by class, and the quality of escalated answers with and without the
junior's hint. From shadow comparisons (router against the baseline model, pairwise-judged): the router's
preference score with a 95% interval, how often its downgrades held up, and whether the class is ready to take
the traffic.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from tierwise.store.records import Comparison, Feedback, RoutingRecord

# The brief's bands for a class's escalation rate.
GOOD, HIGH = 0.20, 0.60
# Shadow readiness: enough judged pairs where the two sides used different models, and the router's
# preference score's 95% lower bound (over all judged pairs) no further below parity (0.5) than the margin.
READY_MIN_PAIRS = 30
READY_MARGIN = 0.05
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float | None = None) -> float:
    """``7d``, ``24h``, ``30m``, ``90s``, ``2w`` -> the unix time that long ago; ValueError otherwise."""
    match = _SPAN.match(text)
    if match is None:
        raise ValueError(f"--since: expected a span like 7d, 24h or 30m, got {text!r}")
    return (time.time() if now is None else now) - float(match.group(1)) * _SECONDS[match.group(2)]


def escalated(record: RoutingRecord) -> bool | None:
    """Whether a cascaded request went past its start tier (None for requests that were not cascaded)."""
    decision = record.decision or {}
    if decision.get("policy") != "cascade":
        return None
    return len(decision.get("path") or []) > 1


def health(rate: float | None) -> str:
    if rate is None:
        return ""
    if rate < GOOD:
        return "good"
    if rate <= HIGH:
        return "normal"
    return "high: start this class a tier higher"


def _percentile(values: Sequence[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def mean_interval(values: Sequence[float]) -> tuple[float, float, float] | None:
    """Mean and its 95% interval (normal approximation, clipped to [0, 1]); None without values."""
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0, 1.0
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def _quality(scores: Sequence[float]) -> dict[str, Any]:
    interval = mean_interval(scores)
    if interval is None:
        return {"n": 0, "mean": None, "ci95": None}
    return {"n": len(scores), "mean": interval[0], "ci95": [interval[1], interval[2]]}


def _gates(records: Sequence[RoutingRecord]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"pass": 0, "fail": 0})
    for r in records:
        for attempt in r.attempts:
            for verdict in attempt.gates or []:
                out[str(verdict.get("gate"))]["pass" if verdict.get("passed") else "fail"] += 1
    return dict(sorted(out.items()))


def _final_gate_score(record: RoutingRecord) -> float | None:
    """The mean score of the gates that judged the answer the client got (None when none did)."""
    for attempt in reversed(record.attempts):
        if attempt.status == "ok":
            scores = [float(v["score"]) for v in attempt.gates or [] if v.get("score") is not None]
            return statistics.fmean(scores) if scores else None
    return None


def _hints(records: Sequence[RoutingRecord], feedback: dict[str, list[float]]) -> dict[str, Any] | None:
    """Escalated answers' quality with and without the junior's hint (hint_holdout makes the control)."""
    groups: dict[str, dict[str, list[float]]] = {}
    for r in records:
        hinted = (r.decision or {}).get("hinted")
        if hinted is None or not escalated(r):
            continue
        group = groups.setdefault("hinted" if hinted else "unhinted", {"feedback": [], "gates": [], "n": []})
        group["n"].append(1.0)
        group["feedback"] += feedback.get(r.request_id, [])
        if (score := _final_gate_score(r)) is not None:
            group["gates"].append(score)
    if not groups:
        return None
    return {
        name: {
            "escalated": len(g["n"]),
            "feedback": _quality(g["feedback"]),
            "final_gate_score": _quality(g["gates"]),
        }
        for name, g in sorted(groups.items())
    }


def _differed(pair: Comparison) -> bool:
    """Whether the router and the baseline answered with different models (a real comparison)."""
    return pair.judge != "same_model" and pair.router_model != pair.baseline_model


def _shadow(pairs: Sequence[Comparison]) -> dict[str, Any]:
    judged = [c for c in pairs if c.score is not None]
    scores = [float(c.score) for c in judged if c.score is not None]
    interval = mean_interval(scores)
    # Readiness needs real comparisons: pairs where both sides used the same model tie by construction.
    compared = sum(1 for c in judged if _differed(c))
    ready: bool | None = None
    if interval is not None and compared >= READY_MIN_PAIRS:
        ready = interval[1] >= 0.5 - READY_MARGIN
    # Of the judged pairs where the router's answer cost less than the baseline's, how often it held up.
    cheaper = [
        float(c.score)
        for c in judged
        if c.score is not None and _differed(c) and c.router_cost_usd < c.baseline_cost_usd
    ]
    return {
        "pairs": len(pairs),
        "judged": len(judged),
        "compared": compared,
        "failed": len(pairs) - len(judged),
        "wins": sum(1 for s in scores if s > 0.5),
        "ties": sum(1 for s in scores if s == 0.5),
        "losses": sum(1 for s in scores if s < 0.5),
        "preference": None if interval is None else interval[0],
        "preference_ci95": None if interval is None else [interval[1], interval[2]],
        "downgrades": len(cheaper),
        "downgrades_held": statistics.fmean(1.0 if s >= 0.5 else 0.0 for s in cheaper) if cheaper else None,
        "router_cost_usd": sum(c.router_cost_usd for c in pairs),
        "baseline_cost_usd": sum(c.baseline_cost_usd for c in pairs),
        "judge_cost_usd": sum(c.judge_cost_usd for c in pairs),
        "ready": ready,
    }


def _feedback_downgrades(
    served: Sequence[RoutingRecord], feedback: dict[str, list[float]], premium_tier: str | None
) -> dict[str, Any] | None:
    """Downgrades that held up where users said so: of the scored answers a tier below premium gave, the
    share scored at least 0.5 (the mean of its scores). Not the design's routing accuracy (share of prompts
    answered at their ideal tier): that one needs ideal tiers and is measured offline (``tierwise eval``)."""
    if premium_tier is None:
        return None
    held = [
        1.0 if statistics.fmean(scores) >= 0.5 else 0.0
        for r in served
        if r.tier != premium_tier and (scores := feedback.get(r.request_id))
    ]
    return {"n": len(held), "share": statistics.fmean(held) if held else None}


def _figures(
    records: Sequence[RoutingRecord],
    feedback: dict[str, list[float]] | None = None,
    pairs: Sequence[Comparison] = (),
    premium_tier: str | None = None,
) -> dict[str, Any]:
    feedback = feedback or {}
    served = [r for r in records if r.status == "ok"]
    cost = sum(r.cost_usd for r in records)
    baseline = sum(r.baseline_cost_usd or 0.0 for r in served)
    cascaded = [e for r in records if (e := escalated(r)) is not None]
    rate = sum(cascaded) / len(cascaded) if cascaded else None
    latencies = sorted(r.latency_ms for r in served)
    tiers: dict[str, int] = defaultdict(int)
    for r in served:
        tiers[r.tier or "?"] += 1
    scores = [s for r in records for s in feedback.get(r.request_id, [])]
    return {
        "requests": len(records),
        "errors": sum(1 for r in records if r.status == "error"),
        # Served, but only after an upstream attempt failed (a retry, another model or tier took over). Not
        # the design's fallback rate: that is the escalation rate seen from the gates.
        "upstream_fallbacks": sum(1 for r in served if any(a.status != "ok" for a in r.attempts)),
        "rejected": sum(1 for r in records if r.status == "rejected"),
        "tier_mix": {t: n / len(served) for t, n in sorted(tiers.items())} if served else {},
        "cost_usd": cost,
        "baseline_cost_usd": baseline,
        "saving": 1 - cost / baseline if baseline > 0 else None,
        "cost_per_request_usd": cost / len(records) if records else 0.0,
        "routing_tax_share": sum(r.routing_cost_usd for r in records) / cost if cost > 0 else 0.0,
        "cascaded": len(cascaded),
        "escalation_rate": rate,
        "health": health(rate),
        "latency_ms": {
            "p50": _percentile(latencies, 50),
            "p95": _percentile(latencies, 95),
            "p99": _percentile(latencies, 99),
        },
        "gates": _gates(records),
        "quality": _quality(scores),
        "downgrades_held_feedback": _feedback_downgrades(served, feedback, premium_tier),
        "hints": _hints(records, feedback),
        "shadow": _shadow(pairs),
    }


def summarize(
    records: Sequence[RoutingRecord],
    feedback: Iterable[Feedback] = (),
    comparisons: Iterable[Comparison] = (),
    *,
    premium_tier: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Per request class, then ``overall``. Requests rejected before routing have no class: they count in
    ``overall`` only. Feedback counts for the class of the request it scores (the latest score of a source
    per request wins); comparisons carry their own class. With ``premium_tier``, feedback also gives a
    share of downgrades that held up (``downgrades_held_feedback``)."""
    by_class: dict[str, list[RoutingRecord]] = defaultdict(list)
    for record in records:
        if record.request_class is not None:
            by_class[record.request_class].append(record)
    latest: dict[tuple[str, str], float] = {}
    for item in feedback:
        latest[(item.request_id, item.source)] = item.score
    scores: dict[str, list[float]] = defaultdict(list)
    for (request_id, _), score in latest.items():
        scores[request_id].append(score)
    pairs_by_class: dict[str, list[Comparison]] = defaultdict(list)
    all_pairs = list(comparisons)
    for pair in all_pairs:
        pairs_by_class[pair.request_class or "unrouted"].append(pair)
    names = sorted(set(by_class) | set(pairs_by_class))
    out = {
        name: _figures(by_class.get(name, []), scores, pairs_by_class.get(name, []), premium_tier)
        for name in names
    }
    out["overall"] = _figures(records, scores, all_pairs, premium_tier)
    return out


def warnings(summary: dict[str, dict[str, Any]], *, premium_p95_ms: float | None = None) -> list[str]:
    """What deserves a look: classes escalating past the healthy band, costing more than premium-only,
    answering worse than the baseline (the preference interval below parity) or slower at p95 than the
    premium model's own requests."""
    out = []
    for name, row in summary.items():
        if name == "overall":
            continue
        shadow = row.get("shadow") or {}
        if shadow.get("preference_ci95") and shadow["preference_ci95"][1] < 0.5:
            out.append(
                f"{name}: quality below baseline: preference {shadow['preference']:.2f} "
                f"(95% CI {shadow['preference_ci95'][0]:.2f}-{shadow['preference_ci95'][1]:.2f}) "
                f"over {shadow['judged']} judged pairs"
            )
        p95 = row["latency_ms"]["p95"]
        if premium_p95_ms is not None and p95 is not None and p95 > premium_p95_ms:
            out.append(
                f"{name}: p95 latency {p95:.0f} ms is worse than the premium model's {premium_p95_ms:.0f} ms"
            )
        rate = row["escalation_rate"]
        if rate is not None and rate > HIGH:
            out.append(
                f"{name}: {rate:.0%} of cascaded requests escalate (over {HIGH:.0%}): "
                "start this class a tier higher"
            )
        if row["saving"] is not None and row["saving"] < 0:
            out.append(f"{name}: costs {-row['saving']:.0%} more than premium-only would have")
    return out


def premium_p95(records: Sequence[RoutingRecord], premium_tier: str) -> float | None:
    """The p95 latency of requests the premium tier answered: the yardstick for a class's p95."""
    return _percentile(
        sorted(r.latency_ms for r in records if r.status == "ok" and r.tier == premium_tier), 95
    )


def series(
    records: Sequence[RoutingRecord], *, start: float, end: float, buckets: int = 24
) -> list[dict[str, Any]]:
    """Cost against the premium-only baseline over time, in equal buckets from ``start`` to ``end``."""
    width = max((end - start) / buckets, 1e-9)
    rows = [
        {"start": start + i * width, "requests": 0, "cost_usd": 0.0, "baseline_cost_usd": 0.0, "escalated": 0}
        for i in range(buckets)
    ]
    for r in records:
        i = min(buckets - 1, max(0, int((r.ts - start) / width)))
        row = rows[i]
        row["requests"] += 1
        row["cost_usd"] += r.cost_usd
        if r.status == "ok":
            row["baseline_cost_usd"] += r.baseline_cost_usd or 0.0
        row["escalated"] += 1 if escalated(r) else 0
    return rows


def recent(records: Sequence[RoutingRecord], limit: int = 50) -> list[dict[str, Any]]:
    """The latest decisions, newest first, with their reasons."""
    return [
        {
            "request_id": r.request_id,
            "ts": r.ts,
            "endpoint": r.endpoint,
            "status": r.status,
            "request_class": r.request_class,
            "tier": r.tier,
            "model": r.model,
            "reason": r.reason,
            "path": (r.decision or {}).get("path"),
            "cost_usd": r.cost_usd,
            "baseline_cost_usd": r.baseline_cost_usd,
            "latency_ms": r.latency_ms,
        }
        for r in sorted(records, key=lambda r: r.ts, reverse=True)[:limit]
    ]


def build_stats(
    records: Sequence[RoutingRecord],
    feedback: Iterable[Feedback],
    comparisons: Iterable[Comparison],
    *,
    start: float,
    end: float,
    premium_tier: str,
    request_class: str | None = None,
) -> dict[str, Any]:
    """Everything the stats endpoint and the dashboard show for one window, optionally for one class. The
    premium tier's p95, the yardstick for latency warnings, is over all the window's requests either way."""
    premium = premium_p95(records, premium_tier)
    if request_class is not None:
        records = [r for r in records if r.request_class == request_class]
        comparisons = [c for c in comparisons if c.request_class == request_class]
    summary = summarize(records, feedback, comparisons, premium_tier=premium_tier)
    return {
        "since": start,
        "until": end,
        "class": request_class,
        "premium_tier": premium_tier,
        "premium_p95_ms": premium,
        "classes": summary,
        "warnings": warnings(summary, premium_p95_ms=premium),
        "series": series(records, start=start, end=end),
        "recent": recent(records),
    }
