"""Offline cascade, auto and voting plans: who answers, and what is paid, worked out by hand."""

from __future__ import annotations

import numpy as np

from tierwise.evals.cascade_sweep import auto_plan, cascade_plan, voting_plan

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
