"""Offline cascade, auto and voting plans: who answers, and what is paid, worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tierwise.evals.cascade_sweep import auto_plan, cascade_plan, choose, voting_plan
from tierwise.evals.metrics import OutcomeTable, point_for

# Gate scores of three prompts' cheap and mid answers (premium is always the last resort).
GATE = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.3]])


def test_cascade_pays_every_tier_up_to_the_first_that_passes() -> None:
    plan = cascade_plan(GATE, 0.5)
    assert plan.final.tolist() == [0, 1, 2]
    assert plan.paid.tolist() == [[True, False, False], [True, True, False], [True, True, True]]


def test_cascade_thresholds_at_the_ends() -> None:
    assert cascade_plan(GATE, 0.0).final.tolist() == [0, 0, 0]
    assert cascade_plan(GATE, 1.0 + 1e-9).final.tolist() == [2, 2, 2]


def test_cascade_from_a_start_tier_pays_nothing_below_it() -> None:
    plan = cascade_plan(GATE, 0.5, start=np.array([1, 1, 0]))
    assert plan.final.tolist() == [2, 1, 2]
    assert plan.paid.tolist() == [[False, True, True], [False, True, False], [True, True, True]]


def test_auto_goes_direct_where_the_router_is_sure() -> None:
    router = np.array([[0.95, 0.99], [0.5, 0.6], [0.05, 0.1]])
    plan = auto_plan(router, GATE, hi=0.9, lo=0.2, threshold=0.5)
    # Prompt 0: sure of cheap -> cheap alone. Prompt 2: sure nothing below premium will do -> premium alone.
    # Prompt 1: unsure -> cascade: cheap fails its gate (0.2), mid passes (0.8).
    assert plan.final.tolist() == [0, 1, 2]
    assert plan.paid.tolist() == [[True, False, False], [True, True, False], [False, False, True]]


def test_voting_pays_for_everything() -> None:
    plan = voting_plan(GATE, 0.5)
    assert plan.final.tolist() == [0, 1, 2]
    assert plan.paid.all()


def test_choose_wants_the_target_to_hold_on_most_resamples_not_just_once() -> None:
    """40 prompts, cheap ($1) then premium ($10, always right); the gate ranks them, and the cheap answer is
    wrong on the prompts ranked 5, 15 and 30. Q95 allows two wrong answers of 40: the plain cheapest point
    keeps prompts 6 and up at cheap (two wrong, exactly 95%); it holds on only about 2/3 of resamples, so with
    confidence 0.8 the choice keeps prompts 16 and up (one wrong)."""
    n = 40
    gate = np.linspace(0.025, 1.0, n)[:, None]
    cheap = np.ones(n)
    cheap[[5, 15, 30]] = 0.0
    table = OutcomeTable(
        ("cheap", "premium"),
        ("c", "p"),
        tuple(f"p{i}" for i in range(n)),
        ("t",) * n,
        np.column_stack([cheap, np.ones(n)]),
        np.column_stack([np.ones(n), np.full(n, 10.0)]),
    )
    router = np.zeros((n, 1))
    plain = choose(table, "cascade", router, gate, 0.95, confidence=0.0)
    assert plain["gate"] == pytest.approx(gate[6, 0])
    plan = cascade_plan(gate, plain["gate"])
    assert point_for(table, plan.final, plan.paid).quality == pytest.approx(0.95)
    safe = choose(table, "cascade", router, gate, 0.95)
    assert safe["gate"] == pytest.approx(gate[16, 0])
    # Nothing reaches the target: everything to premium.
    assert choose(table, "cascade", router, gate, 1.01)["gate"] > 1.0
