"""Per-class figures from the request records: what `tierwise report` prints.

Everything is computed from the records alone: cost against the premium-only baseline, escalation rate with
the brief's health bands, errors, latency percentiles and the routing tax. Quality by class needs quality
scores (feedback, judges, shadow comparisons), which later work adds.
"""

from __future__ import annotations

import re
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from tierwise.store.records import RoutingRecord

# The brief's bands for a class's escalation rate.
GOOD, HIGH = 0.20, 0.60
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


def _figures(records: Sequence[RoutingRecord]) -> dict[str, Any]:
    served = [r for r in records if r.status == "ok"]
    cost = sum(r.cost_usd for r in records)
    baseline = sum(r.baseline_cost_usd or 0.0 for r in served)
    cascaded = [e for r in records if (e := escalated(r)) is not None]
    rate = sum(cascaded) / len(cascaded) if cascaded else None
    latencies = sorted(r.latency_ms for r in served)
    tiers: dict[str, int] = defaultdict(int)
    for r in served:
        tiers[r.tier or "?"] += 1
    return {
        "requests": len(records),
        "errors": sum(1 for r in records if r.status == "error"),
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
    }


def summarize(records: Sequence[RoutingRecord]) -> dict[str, dict[str, Any]]:
    """Per request class, then ``overall``. Requests rejected before routing have no class: they count in
    ``overall`` only."""
    by_class: dict[str, list[RoutingRecord]] = defaultdict(list)
    for record in records:
        if record.request_class is not None:
            by_class[record.request_class].append(record)
    out = {name: _figures(rows) for name, rows in sorted(by_class.items())}
    out["overall"] = _figures(records)
    return out


def warnings(summary: dict[str, dict[str, Any]]) -> list[str]:
    """What deserves a look: classes escalating past the healthy band, or costing more than premium-only."""
    out = []
    for name, row in summary.items():
        if name == "overall":
            continue
        rate = row["escalation_rate"]
        if rate is not None and rate > HIGH:
            out.append(
                f"{name}: {rate:.0%} of cascaded requests escalate (over {HIGH:.0%}): "
                "start this class a tier higher"
            )
        if row["saving"] is not None and row["saving"] < 0:
            out.append(f"{name}: costs {-row['saving']:.0%} more than premium-only would have")
    return out
