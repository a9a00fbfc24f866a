"""Offline cascade, auto and parallel-voting policies over recorded answers, for `tierwise bench`.

The learned gate scores every recorded non-premium answer (G[i, j] = P(tier j's answer to prompt i is as good
as premium's)); a cascade at gate threshold t pays for each tier from its start up to the first whose answer
scores >= t (premium when none does). Offline, a hint cannot change a recorded senior answer: the senior's
recorded answer is what a hinted senior is scored as, so measured cascade quality is a lower bound on a hinted
one.

- cascade: start at the cheapest tier.
- auto: direct where the router is confident — P(cheap will do) >= hi goes to cheap alone, P(every tier
  will do) < lo goes to premium alone — and a cascade from the cheapest tier in between.
- voting: every tier answers (every tier is paid), the cheapest answer the gate passes is taken, else
  premium's: the brief's parallel-voting baseline.

A tier's answer is scored knowing the answer of the tier below (the cascade from the cheapest tier has it in
hand; in voting every answer is known), see `tierwise.gates.learned`.

`choose` calibrates a policy on out-of-fold scores of a training set. The cheapest point that merely reaches
the target there is, among the hundreds of points an auto sweep draws, most often one that was lucky on those
prompts; so a point qualifies only when it reaches the target in at least ``confidence`` (0.8) of bootstrap
resamples of the training prompts (paired: the point's and premium's quality on the same resample).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import FloatArray, IntArray, OutcomeTable, Point, point_for
from tierwise.gates.learned import AnswerScorer

BoolArray = np.ndarray[Any, np.dtype[np.bool_]]


@dataclass(frozen=True)
class Plan:
    """Per prompt: the tier whose answer is final, and every tier paid for."""

    final: IntArray
    paid: BoolArray


class GateScorer:
    """The learned answer gate in the TierScorer shape, for out-of-fold scores."""

    def fit(self, records: Sequence[EvalRecord], table: OutcomeTable) -> GateScorer:
        self.table_models_ = table.models
        self.scorer_ = AnswerScorer().fit(records, table)
        return self

    def predict(self, records: Sequence[EvalRecord]) -> FloatArray:
        table = OutcomeTable.from_records(records, self.table_models_)
        return self.scorer_.predict_table(records, table, juniors=True)


def has_answers(records: Sequence[EvalRecord], models: Sequence[str]) -> bool:
    """Whether the set kept the non-premium tiers' answers (a learned gate needs them)."""
    kept = sum(1 for r in records for m in models[:-1] if r.outcomes[m].response is not None)
    return kept >= 0.9 * len(records) * (len(models) - 1)


def cascade_plan(gate: FloatArray, threshold: float, start: IntArray | None = None) -> Plan:
    n, juniors = gate.shape
    start = np.zeros(n, dtype=np.int64) if start is None else start
    tiers = np.arange(juniors)
    ok = (gate >= threshold) & (tiers[None, :] >= start[:, None])
    final = np.where(ok.any(axis=1), ok.argmax(axis=1), juniors).astype(np.int64)
    all_tiers = np.arange(juniors + 1)
    paid = (all_tiers[None, :] >= start[:, None]) & (all_tiers[None, :] <= final[:, None])
    return Plan(final, paid)


def auto_plan(router: FloatArray, gate: FloatArray, hi: float, lo: float, threshold: float) -> Plan:
    juniors = gate.shape[1]
    cascade = cascade_plan(gate, threshold)
    cheap = router[:, 0] >= hi
    premium = ~cheap & (router.max(axis=1) < lo)
    final = np.where(cheap, 0, np.where(premium, juniors, cascade.final)).astype(np.int64)
    paid = cascade.paid.copy()
    paid[cheap | premium] = False
    paid[cheap, 0] = True
    paid[premium, juniors] = True
    return Plan(final, paid)


def voting_plan(gate: FloatArray, threshold: float) -> Plan:
    plan = cascade_plan(gate, threshold)
    return Plan(plan.final, np.ones_like(plan.paid))


def _grid(values: FloatArray, n: int) -> list[float]:
    flat = np.unique(values)
    if len(flat) > n:
        flat = np.unique(np.quantile(flat, np.linspace(0, 1, n)))
    return [float(v) for v in flat]


def plans(policy: str, router: FloatArray, gate: FloatArray) -> list[tuple[dict[str, float], Plan]]:
    """Every operating point of ``policy`` worth drawing, with its parameters."""
    thresholds = [0.0, *_grid(gate, 41), 1.0 + 1e-9]
    if policy == "cascade":
        return [({"gate": t}, cascade_plan(gate, t)) for t in thresholds]
    if policy == "voting":
        return [({"gate": t}, voting_plan(gate, t)) for t in thresholds]
    his = [*_grid(router[:, 0], 7), 1.0 + 1e-9]
    los = [0.0, *_grid(router.max(axis=1), 7)]
    coarse = [0.0, *_grid(gate, 13), 1.0 + 1e-9]
    return [
        ({"hi": hi, "lo": lo, "gate": t}, auto_plan(router, gate, hi, lo, t))
        for hi in his
        for lo in los
        if lo <= hi
        for t in coarse
    ]


def curve(
    table: OutcomeTable, policy: str, router: FloatArray, gate: FloatArray
) -> list[tuple[dict[str, float], Plan, Point]]:
    return [
        (params, plan, point_for(table, plan.final, plan.paid))
        for params, plan in plans(policy, router, gate)
    ]


def choose(
    table: OutcomeTable,
    policy: str,
    router: FloatArray,
    gate: FloatArray,
    quality_share: float,
    **options: Any,
) -> dict[str, float]:
    """``cheapest_reaching``'s point (same ``options``), or everything to premium when no point qualifies."""
    found = cheapest_reaching(table, policy, router, gate, quality_share, **options)
    return {"gate": 1.0 + 1e-9, "hi": 1.0 + 1e-9, "lo": 1.0 + 1e-9} if found is None else found


def cheapest_reaching(
    table: OutcomeTable,
    policy: str,
    router: FloatArray,
    gate: FloatArray,
    quality_share: float,
    *,
    confidence: float = 0.8,
    resamples: int = 200,
    seed: int = 0,
) -> dict[str, float] | None:
    """The parameters of the cheapest point that reaches ``quality_share`` of premium-only quality in at least
    ``confidence`` of ``resamples`` bootstrap resamples of the prompts (``confidence`` 0: on the prompts as
    they are, the plain cheapest point reaching it); None when no point qualifies (``choose`` then sends
    everything to premium; ``tierwise calibrate`` says so instead)."""
    candidates = plans(policy, router, gate)
    rows = np.arange(table.n)
    quality = np.stack([table.scores[rows, plan.final] for _, plan in candidates])  # (points, n)
    cost = np.asarray([float((table.costs * plan.paid).sum()) for _, plan in candidates])
    premium = table.scores[:, -1]
    qualifies = quality.mean(axis=1) >= quality_share * premium.mean() - 1e-12
    if confidence > 0 and table.n:
        rng = np.random.default_rng(seed)
        weights = rng.multinomial(table.n, np.full(table.n, 1.0 / table.n), size=resamples).astype(np.float64)
        share = (weights @ quality.T) / np.maximum(weights @ premium, 1e-12)[:, None]  # (resamples, points)
        qualifies &= (share >= quality_share - 1e-12).mean(axis=0) >= confidence
    if not qualifies.any():
        return None
    best = int(np.flatnonzero(qualifies)[np.argmin(cost[qualifies])])
    return candidates[best][0]


def plan_for(policy: str, params: dict[str, float], router: FloatArray, gate: FloatArray) -> Plan:
    if policy == "cascade":
        return cascade_plan(gate, params["gate"])
    if policy == "voting":
        return voting_plan(gate, params["gate"])
    return auto_plan(router, gate, params["hi"], params["lo"], params["gate"])
