"""The numbers every evaluation reports, exactly as docs/evaluation.md defines them.

An *outcome table* holds, for n prompts and k tiers (cheapest first, premium last), the score and the cost of
each tier's model on each prompt. An *assignment* says which models each prompt paid for and which one's
answer was final; a direct router pays for one model, a cascade for every attempt. Every figure here is
computed from those two things alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tierwise.evals.dataset import EvalRecord

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class OutcomeError(ValueError):
    """A record lacks what the evaluation needs (an outcome for a tier's model, a cost)."""


@dataclass(frozen=True)
class OutcomeTable:
    """Scores and costs, ``[prompt, tier]``, for the models the tiers map to."""

    tiers: tuple[str, ...]
    models: tuple[str, ...]
    ids: tuple[str, ...]
    categories: tuple[str, ...]
    scores: FloatArray
    costs: FloatArray

    @property
    def n(self) -> int:
        return len(self.ids)

    @classmethod
    def from_records(
        cls, records: Sequence[EvalRecord], models: Sequence[str], tiers: Sequence[str] | None = None
    ) -> OutcomeTable:
        tiers = tuple(tiers) if tiers is not None else default_tier_names(len(models))
        scores = np.empty((len(records), len(models)))
        costs = np.empty((len(records), len(models)))
        for i, record in enumerate(records):
            for j, model in enumerate(models):
                outcome = record.outcomes.get(model)
                if outcome is None:
                    raise OutcomeError(f"record {record.id!r} has no outcome for model {model!r}")
                if outcome.cost_usd is None:
                    raise OutcomeError(f"record {record.id!r}: outcomes.{model}.cost_usd is missing")
                scores[i, j] = outcome.score
                costs[i, j] = outcome.cost_usd
        return cls(
            tiers,
            tuple(models),
            tuple(r.id for r in records),
            tuple(r.category for r in records),
            scores,
            costs,
        )

    def subset(self, rows: IntArray | Sequence[int]) -> OutcomeTable:
        idx = np.asarray(rows, dtype=np.int64)
        return OutcomeTable(
            self.tiers,
            self.models,
            tuple(self.ids[i] for i in idx),
            tuple(self.categories[i] for i in idx),
            self.scores[idx],
            self.costs[idx],
        )


def default_tier_names(k: int) -> tuple[str, ...]:
    if k == 2:
        return ("cheap", "premium")
    if k == 3:
        return ("cheap", "mid", "premium")
    return (*(f"tier{i}" for i in range(k - 1)), "premium")


@dataclass
class Point:
    """One operating point: what a routing of the whole set costs and scores."""

    cost_usd: float
    quality: float
    tier_mix: dict[str, float] = field(default_factory=dict)
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"cost_usd": self.cost_usd, "quality": self.quality, "tier_mix": self.tier_mix}


def ideal_tiers(table: OutcomeTable) -> IntArray:
    """Per prompt, the cheapest tier whose score is at least premium's."""
    good = table.scores >= table.scores[:, -1:] - 1e-12
    return np.asarray(good.argmax(axis=1), dtype=np.int64)


def point_for(table: OutcomeTable, final: IntArray, paid: npt.NDArray[np.bool_] | None = None) -> Point:
    """The point of a routing where prompt i's final answer is tier ``final[i]``'s, having paid for the tiers
    marked in ``paid[i]`` (default: the final tier only, as direct routing does)."""
    rows = np.arange(table.n)
    cost = float(table.costs[rows, final].sum() if paid is None else (table.costs * paid).sum())
    quality = float(table.scores[rows, final].mean()) if table.n else 0.0
    counts = np.bincount(final, minlength=len(table.tiers))
    mix = {t: float(c) / max(1, table.n) for t, c in zip(table.tiers, counts, strict=True)}
    return Point(cost, quality, mix)


def tier_only(table: OutcomeTable, tier: int) -> Point:
    return point_for(table, np.full(table.n, tier, dtype=np.int64))


def oracle(table: OutcomeTable) -> Point:
    return point_for(table, ideal_tiers(table))


def routing_accuracy(table: OutcomeTable, final: IntArray) -> float:
    """Share of prompts finally answered at their ideal tier."""
    return float((np.asarray(final) == ideal_tiers(table)).mean()) if table.n else 0.0


@dataclass(frozen=True)
class Baselines:
    cheap: Point
    premium: Point
    oracle: Point

    @classmethod
    def of(cls, table: OutcomeTable) -> Baselines:
        return cls(tier_only(table, 0), tier_only(table, len(table.tiers) - 1), oracle(table))

    def cost_share(self, point: Point) -> float:
        """0 at cheap-only cost, 1 at premium-only cost."""
        span = self.premium.cost_usd - self.cheap.cost_usd
        return (point.cost_usd - self.cheap.cost_usd) / span if span > 0 else 0.0

    def gap_recovered(self, point: Point) -> float:
        """PGR: 0 at cheap-only quality, 1 at premium-only quality."""
        span = self.premium.quality - self.cheap.quality
        return (point.quality - self.cheap.quality) / span if span > 0 else 1.0

    def saving(self, point: Point) -> float:
        return 1 - point.cost_usd / self.premium.cost_usd if self.premium.cost_usd > 0 else 0.0


def frontier(curve: Sequence[Point], base: Baselines) -> list[tuple[float, float]]:
    """(cost share, PGR) from cheap-only (0, 0) to premium-only (1, 1) through the points that beat every
    cheaper one. A dominated point is left out: a deployer would mix the better points around it instead,
    which is what interpolating between the points that remain stands for."""
    # By cost, and at equal cost the best first, so that a worse point at the same cost is never a node.
    pts = sorted(((base.cost_share(p), base.gap_recovered(p)) for p in curve), key=lambda xy: (xy[0], -xy[1]))
    out = [(0.0, 0.0)]
    best = 0.0
    for x, y in pts:
        if 0 <= x <= 1 and y > best:
            best = y
            out.append((x, y))
    out.append((1.0, max(best, 1.0)))
    return out


def apgr(curve: Sequence[Point], base: Baselines) -> float:
    """Area under PGR against cost share on [0, 1], interpolating between points; random mixing gives 0.5."""
    pts = frontier(curve, base)
    area = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        area += (x1 - x0) * (y0 + y1) / 2
    return area


def cpt(curve: Sequence[Point], base: Baselines, recovered: float) -> float:
    """Cost share needed to recover ``recovered`` (0.5 for CPT(50%)) of the quality gap."""
    pts = frontier(curve, base)
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if y1 >= recovered:
            if y1 == y0 or y0 >= recovered:
                return x0 if y0 >= recovered else x1
            return x0 + (x1 - x0) * (recovered - y0) / (y1 - y0)
    return 1.0


def cheapest_at_quality(curve: Sequence[Point], base: Baselines, share: float) -> Point | None:
    """The cheapest point whose quality is at least ``share`` of premium-only's (premium-only counts)."""
    target = share * base.premium.quality - 1e-12
    ok = [p for p in [*curve, base.premium] if p.quality >= target]
    return min(ok, key=lambda p: p.cost_usd) if ok else None


def saving_at_quality(curve: Sequence[Point], base: Baselines, share: float) -> float:
    """Saving at Qx: 1 - cost of the cheapest point with quality >= x * premium / premium-only cost."""
    point = cheapest_at_quality(curve, base, share)
    return base.saving(point) if point is not None else 0.0
