"""The evaluation numbers on a set whose answers are known by construction, worked out by hand.

The set: 20 prompts, three tiers (cheap, mid, premium) served by models m-cheap, m-mid, m-premium.

    group  prompts  scores (cheap, mid, premium)  costs $ (cheap, mid, premium)  ideal tier
    A      8        1    1    1                    0.001 0.004 0.010             cheap
    B      6        0    1    1                    0.001 0.004 0.010             mid
    C      4        0    0    1                    0.001 0.004 0.010             premium
    D1     1        0.5  0.7  0.7                  0.002 0.008 0.020             mid (ties premium's 0.7)
    D2     1        1    0    0                    0.002 0.008 0.020             cheap (beats premium)

Rows are in that order: A = 0..7, B = 8..13, C = 14..17, D1 = 18, D2 = 19.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pytest

from tierwise.evals.dataset import EvalRecord, Outcome
from tierwise.evals.metrics import (
    Baselines,
    OutcomeError,
    OutcomeTable,
    Point,
    apgr,
    cheapest_at_quality,
    cpt,
    frontier,
    ideal_tiers,
    oracle,
    point_for,
    routing_accuracy,
    saving_at_quality,
    tier_only,
)
from tierwise.evals.sweep import assign, calibrate_threshold, kfold_predict, sweep, thresholds

MODELS = ("m-cheap", "m-mid", "m-premium")
GROUPS = {  # name: (count, scores, costs)
    "A": (8, (1.0, 1.0, 1.0), (0.001, 0.004, 0.010)),
    "B": (6, (0.0, 1.0, 1.0), (0.001, 0.004, 0.010)),
    "C": (4, (0.0, 0.0, 1.0), (0.001, 0.004, 0.010)),
    "D1": (1, (0.5, 0.7, 0.7), (0.002, 0.008, 0.020)),
    "D2": (1, (1.0, 0.0, 0.0), (0.002, 0.008, 0.020)),
}
CHEAP, MID, PREMIUM = 0, 1, 2


def record(rid: str, scores: Sequence[float], costs: Sequence[float], category: str = "") -> EvalRecord:
    outcomes = {m: Outcome(s, c, None) for m, s, c in zip(MODELS, scores, costs, strict=True)}
    return EvalRecord(rid, category, [{"role": "user", "content": f"prompt {rid}"}], outcomes)


def records() -> list[EvalRecord]:
    return [
        record(f"{name}{i}", scores, costs, category=name)
        for name, (count, scores, costs) in GROUPS.items()
        for i in range(count)
    ]


@pytest.fixture
def table() -> OutcomeTable:
    return OutcomeTable.from_records(records(), MODELS)


def by_group(**tiers: int) -> np.ndarray:
    """An assignment giving each group's prompts one tier: by_group(A=0, B=1, C=2, D1=1, D2=0)."""
    return np.array([tiers[name] for name, (count, _, _) in GROUPS.items() for _ in range(count)])


# Hand-computed points of three assignments (a router's curve), used below.
# P1: A, D2 cheap; B, D1, C mid (misses C).
#     quality = (8 + 1 + 6 + 0.7 + 0) / 20 = 15.7 / 20 = 0.785
#     cost    = 8*.001 + .002 + 6*.004 + .008 + 4*.004 = .008 + .002 + .024 + .008 + .016 = 0.058
# P3: A cheap, B mid, C premium, D1 cheap, D2 premium.
#     quality = (8 + 6 + 4 + 0.5 + 0) / 20 = 18.5 / 20 = 0.925
#     cost    = .008 + .024 + .040 + .002 + .020 = 0.094
# P2: A cheap, B mid, C, D1, D2 premium.
#     quality = (8 + 6 + 4 + 0.7 + 0) / 20 = 18.7 / 20 = 0.935 (premium's exactly)
#     cost    = .008 + .024 + .040 + .020 + .020 = 0.112
P1 = {"A": CHEAP, "B": MID, "C": MID, "D1": MID, "D2": CHEAP}
P3 = {"A": CHEAP, "B": MID, "C": PREMIUM, "D1": CHEAP, "D2": PREMIUM}
P2 = {"A": CHEAP, "B": MID, "C": PREMIUM, "D1": PREMIUM, "D2": PREMIUM}


def curve(table: OutcomeTable) -> list[Point]:
    return [point_for(table, by_group(**p)) for p in (P1, P3, P2)]


def test_table_holds_scores_and_costs_per_prompt_and_tier(table: OutcomeTable) -> None:
    assert table.tiers == ("cheap", "mid", "premium")
    assert table.n == 20
    assert table.ids[18] == "D10" and table.categories[19] == "D2"
    assert table.scores[18].tolist() == [0.5, 0.7, 0.7]
    assert table.costs[19].tolist() == [0.002, 0.008, 0.020]


def test_missing_outcome_or_cost_is_named() -> None:
    with pytest.raises(OutcomeError, match=r"record 'x' has no outcome for model 'm-other'"):
        OutcomeTable.from_records([record("x", (1, 1, 1), (1, 1, 1))], ("m-cheap", "m-other"))
    no_cost = record("y", (1, 1, 1), (1, 1, 1))
    no_cost.outcomes["m-mid"] = Outcome(1.0, None, None)
    with pytest.raises(OutcomeError, match=r"record 'y': outcomes.m-mid.cost_usd is missing"):
        OutcomeTable.from_records([no_cost], MODELS)


def test_single_tier_baselines(table: OutcomeTable) -> None:
    base = Baselines.of(table)
    # premium-only: quality (8 + 6 + 4 + 0.7 + 0) / 20 = 0.935; cost 18*.010 + 2*.020 = 0.22
    assert base.premium.quality == pytest.approx(0.935)
    assert base.premium.cost_usd == pytest.approx(0.22)
    assert base.premium.tier_mix == {"cheap": 0.0, "mid": 0.0, "premium": 1.0}
    # cheap-only: quality (8 + 0 + 0 + 0.5 + 1) / 20 = 0.475; cost 18*.001 + 2*.002 = 0.022
    assert base.cheap.quality == pytest.approx(0.475)
    assert base.cheap.cost_usd == pytest.approx(0.022)
    # mid-only: quality (8 + 6 + 0 + 0.7 + 0) / 20 = 0.735; cost 18*.004 + 2*.008 = 0.088
    mid = tier_only(table, MID)
    assert (mid.quality, mid.cost_usd) == pytest.approx((0.735, 0.088))
    # saving of cheap-only: 1 - 0.022 / 0.22 = 0.9
    assert base.saving(base.cheap) == pytest.approx(0.9)


def test_ideal_tier_is_the_cheapest_at_least_as_good_as_premium(table: OutcomeTable) -> None:
    # A cheap, B mid, C premium, D1 mid (0.7 ties premium; cheap's 0.5 does not), D2 cheap (1 beats 0).
    assert ideal_tiers(table).tolist() == [0] * 8 + [1] * 6 + [2] * 4 + [1, 0]


def test_oracle_sends_every_prompt_to_its_ideal_tier(table: OutcomeTable) -> None:
    point = oracle(table)
    # quality: A 8*1 + B 6*1 + C 4*1 + D1 0.7 + D2 1 = 19.7 -> 19.7 / 20 = 0.985 (above premium's 0.935)
    assert point.quality == pytest.approx(0.985)
    # cost: A 8*.001 + D2 .002 + B 6*.004 + D1 .008 + C 4*.010 = .008 + .002 + .024 + .008 + .040 = 0.082
    assert point.cost_usd == pytest.approx(0.082)
    # mix: cheap 9 (A, D2), mid 7 (B, D1), premium 4 (C) of 20
    assert point.tier_mix == pytest.approx({"cheap": 0.45, "mid": 0.35, "premium": 0.2})
    # saving: 1 - 0.082 / 0.22 = 0.62727...
    base = Baselines.of(table)
    assert base.oracle == point
    assert base.saving(point) == pytest.approx(1 - 0.082 / 0.22)


def test_routing_accuracy_counts_prompts_answered_at_their_ideal_tier(table: OutcomeTable) -> None:
    # Everything at mid: right for B (6) and D1 (1) -> 7 / 20.
    assert routing_accuracy(table, np.full(20, MID)) == pytest.approx(0.35)
    # A cheap (8 right), B premium, C premium (4 right), D1 cheap, D2 mid -> 12 / 20.
    assert routing_accuracy(table, by_group(A=0, B=2, C=2, D1=0, D2=1)) == pytest.approx(0.6)
    assert routing_accuracy(table, ideal_tiers(table)) == 1.0


def test_points_of_assignments(table: OutcomeTable) -> None:
    p1, p3, p2 = curve(table)
    assert (p1.quality, p1.cost_usd) == pytest.approx((0.785, 0.058))
    assert (p3.quality, p3.cost_usd) == pytest.approx((0.925, 0.094))
    assert (p2.quality, p2.cost_usd) == pytest.approx((0.935, 0.112))
    # P1's mix: cheap A + D2 = 9, mid B + C + D1 = 11.
    assert p1.tier_mix == pytest.approx({"cheap": 0.45, "mid": 0.55, "premium": 0.0})
    # A cascade that paid for cheap and premium on C's prompts, answering with premium:
    # cost = P3's 0.094 + 4 * 0.001 = 0.098, quality unchanged.
    paid = np.zeros((20, 3), dtype=bool)
    final = by_group(**P3)
    paid[np.arange(20), final] = True
    paid[14:18, CHEAP] = True
    cascade = point_for(table, final, paid)
    assert (cascade.quality, cascade.cost_usd) == pytest.approx((0.925, 0.098))


def hand_point(base: Baselines, share: float, pgr: float) -> Point:
    """The point at ``share`` of the way from cheap-only to premium-only cost, recovering ``pgr`` of the gap."""
    cost = base.cheap.cost_usd + share * (base.premium.cost_usd - base.cheap.cost_usd)
    quality = base.cheap.quality + pgr * (base.premium.quality - base.cheap.quality)
    return Point(cost, quality)


def test_apgr_and_cpt_of_a_hand_made_curve(table: OutcomeTable) -> None:
    base = Baselines.of(table)
    point = hand_point(base, 0.5, 0.8)
    # cost 0.022 + 0.5 * (0.22 - 0.022) = 0.121; quality 0.475 + 0.8 * (0.935 - 0.475) = 0.843
    assert (point.cost_usd, point.quality) == pytest.approx((0.121, 0.843))
    assert base.cost_share(point) == pytest.approx(0.5)
    assert base.gap_recovered(point) == pytest.approx(0.8)
    # Frontier (0, 0) -> (0.5, 0.8) -> (1, 1). Area = 0.5 * 0.8 / 2 + 0.5 * (0.8 + 1) / 2 = 0.2 + 0.45 = 0.65
    assert apgr([point], base) == pytest.approx(0.65)
    # CPT(50%): on the first segment, 0.5 * (0.5 / 0.8) = 0.3125
    assert cpt([point], base, 0.5) == pytest.approx(0.3125)
    # CPT(80%): the point itself, 0.5
    assert cpt([point], base, 0.8) == pytest.approx(0.5)
    # CPT(90%): on (0.5, 0.8) -> (1, 1), 0.5 + 0.5 * (0.9 - 0.8) / (1 - 0.8) = 0.75
    assert cpt([point], base, 0.9) == pytest.approx(0.75)


def test_apgr_and_cpt_of_a_router_curve(table: OutcomeTable) -> None:
    base = Baselines.of(table)
    # Cost share = (cost - 0.022) / 0.198; PGR = (quality - 0.475) / 0.46.
    # P1: (0.036 / 0.198, 0.31 / 0.46) = (2/11, 31/46); P3: (0.072 / 0.198, 0.45 / 0.46) = (4/11, 45/46);
    # P2: (0.09 / 0.198, 1) = (5/11, 1).
    assert frontier(curve(table), base) == [
        (0.0, 0.0),
        (pytest.approx(2 / 11), pytest.approx(31 / 46)),
        (pytest.approx(4 / 11), pytest.approx(45 / 46)),
        (pytest.approx(5 / 11), pytest.approx(1.0)),
        (1.0, pytest.approx(1.0)),
    ]
    # Area = 2/11 * (31/46) / 2 + 2/11 * (31/46 + 45/46) / 2 + 1/11 * (45/46 + 1) / 2 + 6/11 * 1
    #      = 107/506 + 91/1012 + 6/11 = (214 + 91 + 552) / 1012 = 857/1012
    assert apgr(curve(table), base) == pytest.approx(857 / 1012)
    # CPT(50%) on (0, 0) -> (2/11, 31/46): 2/11 * 0.5 / (31/46) = 46/341
    assert cpt(curve(table), base, 0.5) == pytest.approx(46 / 341)
    # CPT(80%) on (2/11, 31/46) -> (4/11, 45/46): 2/11 + 2/11 * (0.8 - 31/46) / (14/46) = 2/11 * 99/70 = 9/35
    assert cpt(curve(table), base, 0.8) == pytest.approx(9 / 35)


def test_saving_at_q95_and_q100(table: OutcomeTable) -> None:
    base = Baselines.of(table)
    points = curve(table)
    # Q95 needs quality >= 0.95 * 0.935 = 0.88825: P3 (0.925, $0.094) and P2 (0.935, $0.112) qualify.
    # Cheapest is P3: saving = 1 - 0.094 / 0.22 = 0.572727...
    assert cheapest_at_quality(points, base, 0.95) is points[1]
    assert saving_at_quality(points, base, 0.95) == pytest.approx(1 - 0.094 / 0.22)
    # Q100 needs quality >= 0.935: only P2 (and premium-only). Saving = 1 - 0.112 / 0.22 = 0.490909...
    assert cheapest_at_quality(points, base, 1.0) is points[2]
    assert saving_at_quality(points, base, 1.0) == pytest.approx(1 - 0.112 / 0.22)
    # A curve that never reaches Q95 saves nothing: premium-only is the cheapest point that does.
    assert cheapest_at_quality(points[:1], base, 0.95) == base.premium
    assert saving_at_quality(points[:1], base, 0.95) == 0.0


def test_random_mixing_scores_half(table: OutcomeTable) -> None:
    base = Baselines.of(table)
    # Sending a share s of prompts, picked at random, to premium costs share s and recovers s of the gap.
    line = [hand_point(base, s, s) for s in (0.1, 0.25, 0.5, 0.75, 0.9)]
    assert apgr(line, base) == pytest.approx(0.5)
    assert cpt(line, base, 0.5) == pytest.approx(0.5)
    assert cpt(line, base, 0.8) == pytest.approx(0.8)
    # The two ends alone, or nothing at all, are the same straight line.
    assert apgr([base.cheap, base.premium], base) == pytest.approx(0.5)
    assert apgr([], base) == pytest.approx(0.5)


def test_dominated_points_do_not_lower_apgr(table: OutcomeTable) -> None:
    base = Baselines.of(table)
    good = hand_point(base, 0.5, 0.8)
    # Costlier than the good point and worse: a deployer would pick the good point (or mix it with premium)
    # instead, so the frontier runs straight from (0.5, 0.8) to (1, 1) and the area stays 0.65.
    costlier = [hand_point(base, 0.7, 0.6), hand_point(base, 0.9, 0.3)]
    assert apgr([good, *costlier], base) == pytest.approx(0.65)
    # CPT(90%) stays on the straight segment: 0.5 + 0.5 * (0.9 - 0.8) / 0.2 = 0.75
    assert cpt([good, *costlier], base, 0.9) == pytest.approx(0.75)
    # Same cost, worse quality: the frontier goes from (0, 0) straight to (0.5, 0.8) all the same.
    assert apgr([good, hand_point(base, 0.5, 0.4)], base) == pytest.approx(0.65)
    assert cpt([good, hand_point(base, 0.5, 0.4)], base, 0.5) == pytest.approx(0.3125)


def test_points_beyond_premium_cost_and_better_points(table: OutcomeTable) -> None:
    base = Baselines.of(table)
    good = hand_point(base, 0.5, 0.8)
    # Dearer than premium-only: outside the [0, 1] cost share range, it does not count.
    assert apgr([good, hand_point(base, 1.2, 0.9)], base) == pytest.approx(0.65)
    # The order in which the points come does not matter.
    better = hand_point(base, 0.4, 0.9)
    assert apgr([good, better], base) == apgr([better, good], base)
    # A better point raises it: (0.5, 0.9) alone gives 0.5*0.9/2 + 0.5*(0.9+1)/2 = 0.225 + 0.475 = 0.7
    assert apgr([hand_point(base, 0.5, 0.9)], base) == pytest.approx(0.7)
    # A point recovering more than the whole gap (better than premium) counts above 1:
    # (0.5, 1.2) -> 0.5*1.2/2 + 0.5*(1.2+1.2)/2 = 0.3 + 0.6 = 0.9
    assert apgr([hand_point(base, 0.5, 1.2)], base) == pytest.approx(0.9)


# A tiny table for the threshold sweep: four prompts, costs 1 / 2 / 10 per tier.
#   row  scores (cheap, mid, premium)  router's scores (cheap, mid)
#   0    1 1 1                          0.9  0.95
#   1    0 1 1                          0.2  0.8
#   2    0 0 1                          0.1  0.3
#   3    1 1 1                          0.6  0.4
TINY_SCORES = np.array([[0.9, 0.95], [0.2, 0.8], [0.1, 0.3], [0.6, 0.4]])


@pytest.fixture
def tiny() -> OutcomeTable:
    rows = [(1, 1, 1), (0, 1, 1), (0, 0, 1), (1, 1, 1)]
    return OutcomeTable.from_records([record(f"t{i}", s, (1, 2, 10)) for i, s in enumerate(rows)], MODELS)


def test_assign_picks_the_cheapest_tier_at_or_above_the_threshold() -> None:
    assert assign(TINY_SCORES, 0.0).tolist() == [0, 0, 0, 0]
    # 0.5: row 0 cheap (0.9), row 1 mid (0.8), row 2 premium (none), row 3 cheap (0.6, mid's 0.4 is below)
    assert assign(TINY_SCORES, 0.5).tolist() == [0, 1, 2, 0]
    # 0.85: only row 0's cheap score reaches it
    assert assign(TINY_SCORES, 0.85).tolist() == [0, 2, 2, 2]
    assert assign(TINY_SCORES, 0.95).tolist() == [1, 2, 2, 2]
    assert assign(TINY_SCORES, 1.0 + 1e-9).tolist() == [2, 2, 2, 2]


def test_sweep_visits_every_distinct_operating_point(tiny: OutcomeTable) -> None:
    assert thresholds(TINY_SCORES) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0 + 1e-9]
    swept = sweep(tiny, TINY_SCORES)
    # t     final        quality             cost
    # 0     0 0 0 0      (1+0+0+1)/4 = 0.5   4      (0.1 gives the same point: kept once)
    # 0.2   0 0 1 0      0.5                 5
    # 0.3   0 1 1 0      0.75                6
    # 0.4   0 1 2 0      1.0                 14     (0.6 gives the same point)
    # 0.8   0 1 2 2      1.0                 23
    # 0.9   0 2 2 2      1.0                 31
    # 0.95  1 2 2 2      1.0                 32
    # >1    2 2 2 2      1.0                 40
    assert [t for t, _ in swept] == [0.0, 0.2, 0.3, 0.4, 0.8, 0.9, 0.95, 1.0 + 1e-9]
    assert [(p.quality, p.cost_usd) for _, p in swept] == [
        (0.5, 4), (0.5, 5), (0.75, 6), (1.0, 14), (1.0, 23), (1.0, 31), (1.0, 32), (1.0, 40),
    ]  # fmt: skip
    assert swept[0][1] == tier_only(tiny, CHEAP)
    assert swept[-1][1] == tier_only(tiny, PREMIUM)


def test_calibrate_threshold_picks_the_cheapest_point_reaching_the_target(tiny: OutcomeTable) -> None:
    # Premium quality is 1. Q95 needs 0.95: the cheapest such point is t = 0.4 ($14, quality 1).
    assert calibrate_threshold(tiny, TINY_SCORES, 0.95) == 0.4
    # 70% needs 0.7: t = 0.3 ($6, quality 0.75). 50%: t = 0, cheap-only ($4, quality 0.5).
    assert calibrate_threshold(tiny, TINY_SCORES, 0.7) == 0.3
    assert calibrate_threshold(tiny, TINY_SCORES, 0.5) == 0.0
    # Scores that never separate the prompts reach Q95 only with everything at premium.
    flat = np.full((4, 2), 0.5)
    assert assign(flat, calibrate_threshold(tiny, flat, 0.95)).tolist() == [2, 2, 2, 2]


class _HeldOutScorer:
    """Predicts, per prompt, whether it was in the training data (column 0) and its row (column 1)."""

    fits: ClassVar[list[set[str]]] = []

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def fit(self, records: Sequence[EvalRecord], table: OutcomeTable) -> _HeldOutScorer:
        assert [r.id for r in records] == list(table.ids)
        self.seen = {r.id for r in records}
        _HeldOutScorer.fits.append(self.seen)
        return self

    def predict(self, records: Sequence[EvalRecord]) -> np.ndarray:
        return np.array([[float(r.id in self.seen), float(ROW[r.id])] for r in records]).reshape(-1, 2)


ROW = {r.id: i for i, r in enumerate(records())}


def test_kfold_predict_scores_every_row_out_of_fold(table: OutcomeTable) -> None:
    _HeldOutScorer.fits = []
    out = kfold_predict(_HeldOutScorer, records(), table, folds=5, seed=3)
    assert out.shape == (20, 2)
    # Every row was scored by a scorer that had not seen it, and its score landed in its own row.
    assert out[:, 0].tolist() == [0.0] * 20
    assert out[:, 1].tolist() == [float(i) for i in range(20)]
    # Five fits, each on the 16 prompts outside its fold; every prompt is held out exactly once.
    assert len(_HeldOutScorer.fits) == 5
    assert all(len(seen) == 16 for seen in _HeldOutScorer.fits)
    held_out = [set(ROW) - seen for seen in _HeldOutScorer.fits]
    assert sorted(i for fold in held_out for i in fold) == sorted(ROW)
