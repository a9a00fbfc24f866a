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
from tierwise.evals.cascade_sweep import GateScorer, choose, curve, has_answers, plan_for
from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import (
    Baselines,
    IntArray,
    OutcomeTable,
    Point,
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


def _policy_summary(
    table: OutcomeTable,
    base: Baselines,
    swept: Sequence[tuple[Any, IntArray, Point]],
    calibrated: tuple[Any, IntArray, Point],
) -> dict[str, Any]:
    """The figures of one policy: its curve on the test set, and its calibrated point."""
    curve = [p for _, _, p in swept]
    at_q95 = cheapest_at_quality(curve, base, 0.95)
    final_q95 = next((f for _, f, p in swept if p is at_q95), np.full(table.n, len(table.tiers) - 1))
    params, final, point = calibrated
    return {
        "apgr": apgr(curve, base),
        "cpt50": cpt(curve, base, 0.5),
        "cpt80": cpt(curve, base, 0.8),
        "saving_at_q95": saving_at_quality(curve, base, 0.95),
        "saving_at_q100": saving_at_quality(curve, base, 1.0),
        "routing_accuracy_at_q95": routing_accuracy(table, np.asarray(final_q95, dtype=np.int64)),
        "calibrated_q95": {
            "params": params,
            "quality": point.quality,
            "cost_usd": point.cost_usd,
            "saving": base.saving(point),
            "quality_vs_premium": point.quality / base.premium.quality if base.premium.quality else 1.0,
            "routing_accuracy": routing_accuracy(table, final),
        },
        "curve": [p.to_dict() for p in curve],
    }


def run_bench(
    train: Sequence[EvalRecord],
    test: Sequence[EvalRecord],
    models: Sequence[str],
    *,
    make_scorer: ScorerFactory = learned_scorer,
    quality_target: float = 0.95,
    folds: int = 5,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The bench result (the JSON `tierwise bench --json` writes) and each policy's calibrated decisions.

    ``direct`` is always measured; ``cascade``, ``auto`` and the ``voting`` baseline too when both sets kept
    the models' answers (the learned gate is trained on the training set's)."""
    config = config_for_tiers(models)
    tiers = config.tier_names
    train_table = OutcomeTable.from_records(train, models, tiers)
    test_table = OutcomeTable.from_records(test, models, tiers)
    base = Baselines.of(test_table)

    scorer = make_scorer(config).fit(train, train_table)
    test_scores = scorer.predict(test)
    out_of_fold = kfold_predict(lambda: make_scorer(config), train, train_table, folds=folds)
    threshold = calibrate_threshold(train_table, out_of_fold, quality_target)
    direct_final = assign(test_scores, threshold)
    swept = [(t, assign(test_scores, t), p) for t, p in sweep(test_table, test_scores)]
    direct = _policy_summary(
        test_table, base, swept, ({"threshold": threshold}, direct_final, point_for(test_table, direct_final))
    )
    direct["router"] = type(scorer).__name__
    direct["calibrated_q95"]["threshold"] = threshold
    policies: dict[str, Any] = {"direct": direct}
    decisions = [
        {"id": rid, "policy": "direct", "models_called": [models[j]], "final_model": models[j]}
        for rid, j in zip(test_table.ids, direct_final.tolist(), strict=True)
    ]

    if has_answers(train, models) and has_answers(test, models):
        gate_test = GateScorer().fit(train, train_table).predict(test)
        gate_oof = kfold_predict(GateScorer, train, train_table, folds=folds)
        for policy in ("cascade", "auto", "voting"):
            points = curve(test_table, policy, test_scores, gate_test)
            params = choose(train_table, policy, out_of_fold, gate_oof, quality_target)
            plan = plan_for(policy, params, test_scores, gate_test)
            chosen = (params, plan.final, point_for(test_table, plan.final, plan.paid))
            policies[policy] = _policy_summary(
                test_table, base, [(p, pl.final, pt) for p, pl, pt in points], chosen
            )
            decisions += [
                {
                    "id": rid,
                    "policy": policy,
                    "models_called": [models[int(j)] for j in np.flatnonzero(plan.paid[i])],
                    "final_model": models[int(plan.final[i])],
                }
                for i, rid in enumerate(test_table.ids)
            ]
        if "voting" in policies and "cascade" in policies:
            policies["voting"]["cost_vs_cascade_at_q95"] = (
                policies["voting"]["calibrated_q95"]["cost_usd"]
                / policies["cascade"]["calibrated_q95"]["cost_usd"]
                if policies["cascade"]["calibrated_q95"]["cost_usd"]
                else None
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
        "policies": policies,
    }
    return result, decisions


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for row in rows:
            handle.write(orjson.dumps(row) + b"\n")
