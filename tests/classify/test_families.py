"""Every model family of the learned router learns the synthetic routing set of test_learned.py, predicts the
right shapes and ranges, and the default family survives a save and a load unchanged, predicting with numpy
alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.classify.test_learned import HELD_OUT_NOUNS, MODELS, make_record, synthetic_records
from tests.helpers_config import request
from tierwise.classify.artifact import load_router, save_router
from tierwise.classify.families import FAMILIES, routing_scores
from tierwise.classify.learned import LearnedRouter, record_request
from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import OutcomeTable

EASY = "Translate this sentence into French: the comet is next to the parrot."
CODE = "Write a python function that sorts a list of glacier objects by their anchor field."
HARD = "Prove the theorem that every finite saddle graph contains a prairie cycle."
DEFAULT = LearnedRouter().family


def fit(n: int = 150, seed: int = 0, **hyper: Any) -> LearnedRouter:
    records = synthetic_records(n, seed=seed)
    return LearnedRouter(**hyper).fit(records, OutcomeTable.from_records(records, list(MODELS)))


@pytest.fixture(scope="module", params=FAMILIES)
def fitted(request: pytest.FixtureRequest) -> LearnedRouter:
    return fit(family=request.param)


@pytest.fixture(scope="module")
def held_out() -> list[EvalRecord]:
    return synthetic_records(30, seed=99, nouns=HELD_OUT_NOUNS, noise=0.0)


def test_the_default_family_is_one_of_the_families() -> None:
    assert DEFAULT in FAMILIES


def test_predictions_have_the_right_shape_and_range(
    fitted: LearnedRouter, held_out: list[EvalRecord]
) -> None:
    for scores in (fitted.predict(held_out), fitted.predict_proba(held_out)):
        assert scores.shape == (len(held_out), len(MODELS) - 1)
        assert scores.dtype == np.float64
        assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores <= 1))
    assert fitted.predict([]).shape == (0, 2)
    assert fitted.predict_request(request(EASY)).shape == (2,)


def test_easy_prompts_rank_above_hard_ones(fitted: LearnedRouter) -> None:
    easy, code, hard = (fitted.proba_request(request(text)) for text in (EASY, CODE, HARD))
    assert easy[0] > code[0] and easy[0] > hard[0], (easy, code, hard)  # cheap will do: easy only
    assert code[1] > hard[1], (code, hard)  # mid will do: code, not proofs
    # Routed by score, an easy prompt leaves premium at a higher threshold than a proof does.
    assert fitted.predict_request(request(EASY)).max() > fitted.predict_request(request(HARD)).max()


def test_probabilities_separate_the_kinds_on_held_out_prompts(
    fitted: LearnedRouter, held_out: list[EvalRecord]
) -> None:
    p = fitted.predict_proba(held_out)
    kinds = np.asarray([r.category for r in held_out])
    assert p[kinds == "easy", 0].min() > p[kinds == "hard", 0].max()
    assert p[kinds == "medium", 1].min() > p[kinds == "hard", 1].max()


def test_predict_request_equals_predict(fitted: LearnedRouter, held_out: list[EvalRecord]) -> None:
    batch = fitted.predict(held_out)
    for i, record in enumerate(held_out[:10]):
        np.testing.assert_allclose(fitted.predict_request(record_request(record)), batch[i], rtol=1e-9)


def test_without_cost_awareness_the_scores_are_the_probabilities(held_out: list[EvalRecord]) -> None:
    plain = fit(family="logreg", text_only=True, cost_aware=False)
    np.testing.assert_array_equal(plain.predict(held_out), plain.predict_proba(held_out))
    assert not hasattr(plain, "cost_coef_")


def test_text_only_ignores_the_request_features() -> None:
    plain = fit(family="knn", text_only=True)
    assert np.all(np.isinf(plain.dense_scale_))
    short, long = request("Translate: the comet."), request("Translate: the comet." + " " * 4000)
    np.testing.assert_allclose(plain.proba_request(short), plain.proba_request(long))


def test_unsupported_family_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'forest'"):
        fit(n=30, family="forest")
    router = fit(n=30, family="knn")
    router.family = "forest"
    with pytest.raises(ValueError, match="'forest'"):
        router.predict_request(request(EASY))


def test_the_default_family_round_trips_through_an_artifact(
    tmp_path: Path, held_out: list[EvalRecord]
) -> None:
    router = fit()
    loaded, meta = load_router(save_router(router, tmp_path / "router.tw"))
    assert meta["hyperparameters"]["family"] == DEFAULT
    np.testing.assert_array_equal(loaded.predict(held_out), router.predict(held_out))
    for text in (EASY, CODE, HARD, ""):
        np.testing.assert_array_equal(
            loaded.predict_request(request(text)), router.predict_request(request(text))
        )


@pytest.mark.parametrize("family", ["logreg", "blend"])
def test_other_numpy_families_round_trip_too(family: str, tmp_path: Path, held_out: list[EvalRecord]) -> None:
    router = fit(family=family)
    loaded, _ = load_router(save_router(router, tmp_path / f"{family}.tw"))
    np.testing.assert_array_equal(loaded.predict(held_out), router.predict(held_out))


def test_gbdt_cannot_be_saved_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gbdt"):
        save_router(fit(n=60, family="gbdt"), tmp_path / "gbdt.tw")
    assert not (tmp_path / "gbdt.tw").exists()


def test_a_loaded_default_router_predicts_without_scikit_learn(tmp_path: Path) -> None:
    path = save_router(fit(), tmp_path / "router.tw")
    code = (
        "import sys\n"
        "from tierwise.classify.artifact import load_router\n"
        "from tierwise.messages import ChatRequest, Message\n"
        f"router, _ = load_router({str(path)!r})\n"
        "p = router.predict_request(ChatRequest(messages=[Message(role='user', content='Translate: hi')]))\n"
        "assert p.shape == (2,), p\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ---- the cost-aware score ----


def test_routing_scores_prefer_the_tier_worth_its_risk() -> None:
    costs = np.asarray([0.001, 0.002, 0.1])
    # Cheap and mid equally safe: cheap saves more, so cheap wins for every threshold mid would pass.
    same = routing_scores(np.asarray([0.9, 0.9]), costs, np.ones(2), kappa=0.1)
    assert same[0] >= same[1]
    # Cheap much riskier for a tiny extra saving: mid is where the prompt goes unless money is all that counts.
    risky = routing_scores(np.asarray([0.2, 0.95]), costs, np.ones(2), kappa=0.1)
    assert risky[1] > 0.5 > risky[0]
    # Dearer prompts (more saved at premium's expense) score higher at the same risk.
    dear = routing_scores(np.asarray([0.5, 0.5]), costs * 10, np.ones(2), kappa=0.1)
    cheap = routing_scores(np.asarray([0.5, 0.5]), costs, np.ones(2), kappa=0.1)
    assert dear.max() > cheap.max()
    # Nothing to save: premium.
    assert not routing_scores(np.asarray([0.9, 0.9]), np.full(3, 0.01), np.ones(2), kappa=0.1).any()


def test_cost_aware_scores_follow_what_each_prompt_costs() -> None:
    """Two kinds equally easy for cheap; one kind is ten times dearer at premium: it scores higher."""
    records = []
    for i in range(80):
        dear = i % 2 == 0
        text = f"{'Summarise this long report' if dear else 'Say hello'} number {i % 7}."
        record = make_record(f"r{i}", "k", text, (1.0 if i % 3 else 0.0, 1.0, 1.0))
        if dear:
            for model, outcome in record.outcomes.items():
                record.outcomes[model] = type(outcome)(outcome.score, outcome.cost_usd * 10, None)
        records.append(record)
    router = LearnedRouter().fit(records, OutcomeTable.from_records(records, list(MODELS)))
    dear = router.predict_request(request("Summarise this long report number 3.")).max()
    cheap = router.predict_request(request("Say hello number 3.")).max()
    assert dear > cheap


def test_a_tier_that_never_matched_premium_scores_zero_not_the_mixing_rate() -> None:
    """Its risk would be the training mean, which prices it at exactly kappa: a score of 0.5, which the
    default threshold admits. Marked unusable, it scores 0 and the other tiers keep theirs."""
    # One cheap tier that never matched premium: it loses 0.6 everywhere, premium's mean shortfall.
    costs, kappa = np.asarray([0.001, 0.1]), (0.1 - 0.001) / 0.6
    tied = routing_scores(np.asarray([0.0]), costs, np.asarray([0.6]), kappa)
    assert tied[0] == pytest.approx(0.5)  # the tie the guard removes
    assert routing_scores(np.asarray([0.0]), costs, np.asarray([0.6]), kappa, np.asarray([False]))[0] == 0.0
    # With a mid tier that did match, only the never-matched tier goes to 0.
    costs3 = np.asarray([0.001, 0.01, 0.1])
    usable = np.asarray([False, True])
    guarded = routing_scores(np.asarray([0.0, 0.5]), costs3, np.asarray([0.6, 0.6]), kappa, usable)
    assert guarded[0] == 0.0 and guarded[1] > 0.5


@pytest.mark.parametrize("risk", ["binary", "signed"])
def test_a_router_never_sends_to_a_tier_that_never_matched_premium(risk: str) -> None:
    records = synthetic_records(80, seed=2)
    for r in records:
        r.outcomes["m-cheap"] = type(r.outcomes["m-cheap"])(0.0, r.outcomes["m-cheap"].cost_usd, None)
        r.outcomes["m-premium"] = type(r.outcomes["m-premium"])(1.0, r.outcomes["m-premium"].cost_usd, None)
    router = LearnedRouter(risk=risk).fit(records, OutcomeTable.from_records(records, list(MODELS)))
    assert not router.usable_[0] and router.usable_[1]
    scores = router.predict(records)
    assert np.all(scores[:, 0] == 0.0)
    assert router.predict_request(request(EASY))[0] == 0.0


def test_k_prior_and_risk_are_chosen_by_leave_one_out_unless_given() -> None:
    router = fit(n=120)
    assert router.k is None and router.prior is None and router.risk == "auto"
    assert (router.k_, router.risk_) in {(k, r) for k in (30, 100) for r in ("binary", "signed")}
    assert len(router.selection_) == 12 and max(router.selection_, key=router.selection_.__getitem__) == (
        router.k_,
        router.prior_,
        router.risk_,
    )
    given = fit(n=120, k=7, prior=0.5, risk="binary")
    assert (given.k_, given.prior_, given.risk_) == (7, 0.5, "binary")
    assert not hasattr(given, "selection_")


def test_the_signed_risk_needs_knn_and_an_unknown_risk_is_refused() -> None:
    with pytest.raises(ValueError, match="signed risk needs the knn family"):
        fit(family="logreg", risk="signed")
    with pytest.raises(ValueError, match="unsupported risk 'bold'"):
        fit(risk="bold")
