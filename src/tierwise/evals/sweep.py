"""Operating points of a direct router: scores per tier, a threshold, and the curve a sweep draws.

A *tier scorer* gives, for each prompt and each non-premium tier j, a number in [0, 1]: how sure it is
that tier j answers as well as premium. At threshold t a prompt goes to the cheapest tier whose score is
>= t, or to premium when none is. t = 0 sends everything to the cheapest tier, t > 1 everything to premium;
the sweep in between draws the router's cost-quality curve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from tierwise.classify.rules import RulesClassifier
from tierwise.config import RouterConfig
from tierwise.errors import RequestError
from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import Baselines, FloatArray, IntArray, OutcomeTable, Point, point_for
from tierwise.messages import ChatRequest, Message
from tierwise.policy.direct import plan_from_tier


class TierScorer(Protocol):
    """What the offline evaluator needs of a router (scikit-learn style: fit returns self)."""

    def fit(self, records: Sequence[EvalRecord], table: OutcomeTable) -> TierScorer: ...

    def predict(self, records: Sequence[EvalRecord]) -> FloatArray:
        """Shape (n, tiers - 1): per prompt, per non-premium tier, how sure the tier will do."""
        ...


def to_request(record: EvalRecord, model: str = "tierwise/auto") -> ChatRequest:
    messages = [Message(role=m["role"], content=m["content"]) for m in record.messages]
    return ChatRequest(messages=messages, model=model)


class RulesScorer:
    """The rules classifier (plus the models' hard limits) as a scorer: 1 for the tier it picks and those
    above, 0 below. It learns nothing; its curve has one point between cheap-only and premium-only."""

    def __init__(self, config: RouterConfig) -> None:
        self.config = config
        self.classifier = RulesClassifier(config)

    def fit(self, records: Sequence[EvalRecord], table: OutcomeTable) -> RulesScorer:
        return self

    def tier_index(self, record: EvalRecord) -> int:
        request = to_request(record)
        features = self.classifier.features(request, None)
        choice = self.classifier.classify(request, features)
        try:
            plan, _ = plan_from_tier(self.config, choice.tier, features, fallback_up=True)
            tier = plan[0].tier
        except RequestError:
            tier = self.config.premium_tier
        return self.config.tier_names.index(tier)

    def predict(self, records: Sequence[EvalRecord]) -> FloatArray:
        k = len(self.config.tiers)
        out = np.zeros((len(records), k - 1))
        for i, record in enumerate(records):
            out[i, self.tier_index(record) :] = 1.0
        return out


def assign(scores: FloatArray, threshold: float) -> IntArray:
    """Final tier per prompt at ``threshold``: the cheapest tier scoring >= threshold, else premium."""
    ok = scores >= threshold
    has = ok.any(axis=1)
    final: IntArray = np.where(has, ok.argmax(axis=1), scores.shape[1]).astype(np.int64)
    return final


def thresholds(scores: FloatArray, n_points: int = 101) -> list[float]:
    """Thresholds that visit each distinct operating point (at most ``n_points`` quantiles), both ends too."""
    flat = np.unique(scores)
    if len(flat) > n_points:
        flat = np.unique(np.quantile(flat, np.linspace(0, 1, n_points)))
    return [0.0, *(float(v) for v in flat), 1.0 + 1e-9]


def sweep(table: OutcomeTable, scores: FloatArray, n_points: int = 101) -> list[tuple[float, Point]]:
    """(threshold, point) along the curve, in threshold order; duplicate points are kept once."""
    seen: set[tuple[float, float]] = set()
    out = []
    for t in thresholds(scores, n_points):
        point = point_for(table, assign(scores, t))
        key = (round(point.cost_usd, 12), round(point.quality, 12))
        if key not in seen:
            seen.add(key)
            out.append((t, point))
    return out


def calibrate_threshold(table: OutcomeTable, scores: FloatArray, quality_share: float) -> float:
    """The threshold of the cheapest point whose quality reaches ``quality_share`` of premium-only's."""
    base = Baselines.of(table)
    target = quality_share * base.premium.quality - 1e-12
    best_t, best_cost = 1.0 + 1e-9, base.premium.cost_usd
    for t, point in sweep(table, scores, n_points=201):
        if point.quality >= target and point.cost_usd < best_cost:
            best_t, best_cost = t, point.cost_usd
    return best_t


def kfold_predict(
    make: Callable[[], TierScorer],
    records: Sequence[EvalRecord],
    table: OutcomeTable,
    folds: int = 5,
    seed: int = 0,
) -> FloatArray:
    """Out-of-fold scores: each prompt scored by a scorer fitted without it; ``make()`` builds a scorer."""
    n = len(records)
    order = np.random.default_rng(seed).permutation(n)
    out: FloatArray | None = None
    for f in range(folds):
        held = order[f::folds]
        kept = np.setdiff1d(order, held)
        scorer = make()
        scorer.fit([records[i] for i in kept], table.subset(kept))
        pred = scorer.predict([records[i] for i in held])
        if out is None:
            out = np.zeros((n, pred.shape[1]))
        out[held] = pred
    assert out is not None
    return out
