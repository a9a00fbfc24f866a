"""`tierwise bench`: train a router on one set, sweep its operating points on another, and report the figures
(APGR, CPT, saving at Q95/Q100, the calibrated Q95 point) beside the baselines.

The calibrated point is the honest, deployable number: its threshold is chosen on the training set alone, from
out-of-fold scores, to reach 95% of premium quality, and only then measured on the test set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tierwise.config import RouterConfig
from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import (
    Baselines,
    OutcomeTable,
    apgr,
    cheapest_at_quality,
    cpt,
    point_for,
    routing_accuracy,
    saving_at_quality,
)
from tierwise.evals.replay import config_for_tiers
from tierwise.evals.sweep import RulesScorer, TierScorer, assign, calibrate_threshold, kfold_predict, sweep

ScorerFactory = Callable[[RouterConfig], TierScorer]


def rules_scorer(config: RouterConfig) -> TierScorer:
    """The rules router (task types, domains, blacklist): it learns nothing, and has one operating point."""
    return RulesScorer(config)


def learned_scorer(config: RouterConfig) -> TierScorer:
    """The learned router (tierwise.classify.learned), the default `bench` trains."""
    from tierwise.classify.learned import LearnedRouter

    return LearnedRouter()


ROUTERS: dict[str, ScorerFactory] = {"learned": learned_scorer, "rules": rules_scorer}


def run_bench(
    train: Sequence[EvalRecord],
    test: Sequence[EvalRecord],
    models: Sequence[str],
    *,
    make_scorer: ScorerFactory = learned_scorer,
    quality_target: float = 0.95,
    folds: int = 5,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The bench result (the JSON `tierwise bench --json` writes) and the calibrated point's decisions."""
    config = config_for_tiers(models)
    tiers = config.tier_names
    train_table = OutcomeTable.from_records(train, models, tiers)
    test_table = OutcomeTable.from_records(test, models, tiers)
    base = Baselines.of(test_table)

    scorer = make_scorer(config).fit(train, train_table)
    test_scores = scorer.predict(test)
    swept = sweep(test_table, test_scores)
    curve = [p for _, p in swept]

    out_of_fold = kfold_predict(lambda: make_scorer(config), train, train_table, folds=folds)
    threshold = calibrate_threshold(train_table, out_of_fold, quality_target)
    calibrated_final = assign(test_scores, threshold)
    calibrated = point_for(test_table, calibrated_final)

    at_q95 = cheapest_at_quality(curve, base, 0.95)
    q95_threshold = next((t for t, p in swept if p is at_q95), None)
    accuracy_q95 = (
        routing_accuracy(test_table, assign(test_scores, q95_threshold))
        if q95_threshold is not None
        else routing_accuracy(test_table, np.full(test_table.n, len(tiers) - 1, dtype=np.int64))
    )

    result: dict[str, Any] = {
        "tiers": list(models),
        "n_train": len(train),
        "n_test": len(test),
        "baselines": {
            "premium": {"quality": base.premium.quality, "cost_usd": base.premium.cost_usd},
            "cheap": {"quality": base.cheap.quality, "cost_usd": base.cheap.cost_usd},
            "random": {"apgr": 0.5},
            "oracle": {
                "quality": base.oracle.quality,
                "cost_usd": base.oracle.cost_usd,
                "saving": base.saving(base.oracle),
            },
        },
        "policies": {
            "direct": {
                "router": type(scorer).__name__,
                "apgr": apgr(curve, base),
                "cpt50": cpt(curve, base, 0.5),
                "cpt80": cpt(curve, base, 0.8),
                "saving_at_q95": saving_at_quality(curve, base, 0.95),
                "saving_at_q100": saving_at_quality(curve, base, 1.0),
                "routing_accuracy_at_q95": accuracy_q95,
                "calibrated_q95": {
                    "threshold": threshold,
                    "quality": calibrated.quality,
                    "cost_usd": calibrated.cost_usd,
                    "saving": base.saving(calibrated),
                    "quality_vs_premium": calibrated.quality / base.premium.quality
                    if base.premium.quality
                    else 1.0,
                    "routing_accuracy": routing_accuracy(test_table, calibrated_final),
                },
                "curve": [p.to_dict() for p in curve],
            }
        },
    }
    decisions = [
        {"id": rid, "policy": "direct", "models_called": [models[j]], "final_model": models[j]}
        for rid, j in zip(test_table.ids, calibrated_final.tolist(), strict=True)
    ]
    return result, decisions


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for row in rows:
            handle.write(orjson.dumps(row) + b"\n")
