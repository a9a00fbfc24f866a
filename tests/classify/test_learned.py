"""The learned router on a synthetic routing set whose signal is known: it must learn who can answer what.

Three models, cheapest first. "Translate"/"rephrase" prompts are answered as well as premium by every model;
"write a python function" prompts by mid and premium; "prove the theorem" prompts by premium only. A few
labels are flipped, so the set is learnable but not trivially separable. Held-out prompts use filler words the
training set never saw, so the router has to rely on the task cues, not memorise prompts.

The default router (knn, cost-aware) is what `tierwise train` fits and the proxy serves: its probabilities
(predict_proba, proba_request) must separate the kinds, and its routing scores (predict, predict_request),
thresholded at 0.5 as LearnedStart does, must send each kind to its ideal tier. Cheap costs a hundredth of
premium and mid three tenths, so sending an easy prompt to cheap rather than mid saves enough to be worth its
risk (were mid nearly as cheap as cheap, the safer mid would rightly win: see test_families.py).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from tests.helpers_config import request, routing_config
from tierwise.classify.learned import (
    DENSE_FEATURES,
    LearnedRouter,
    own_features,
    record_request,
    request_features,
)
from tierwise.evals.dataset import EvalRecord, Outcome
from tierwise.evals.metrics import OutcomeTable
from tierwise.policy.engine import Engine
from tierwise.policy.learned_start import LearnedStart

MODELS = ("m-cheap", "m-mid", "m-premium")
TRAIN_NOUNS = (
    "garden", "river", "window", "teacher", "kitchen", "bicycle", "mountain", "letter", "orchard", "lantern",
    "harbor", "violin", "meadow", "candle", "pillow", "basket", "forest", "ladder", "island", "tunnel",
)  # fmt: skip
HELD_OUT_NOUNS = ("comet", "glacier", "parrot", "compass", "volcano", "saddle", "anchor", "prairie")
TEMPLATES: dict[str, tuple[str, ...]] = {
    "easy": (
        "Translate this sentence into French: the {a} is next to the {b}.",
        "Rephrase politely: please bring the {a} and the {b} tomorrow.",
        "Translate to German: my {a} is older than your {b}.",
        "Rephrase in plain words: the {a} was moved behind the {b}.",
    ),
    "medium": (
        "Write a python function that sorts a list of {a} objects by their {b} field.",
        "Write a python function to parse {a} records and group them by {b}.",
        "Implement a python class that caches {a} lookups keyed by {b}.",
    ),
    "hard": (
        "Prove the theorem that every finite {a} graph contains a {b} cycle.",
        "Prove that the {a} lemma implies the {b} theorem for all integers.",
        "Give a rigorous proof of the theorem relating {a} sequences and {b} limits.",
    ),
}
SCORES = {"easy": (1.0, 1.0, 1.0), "medium": (0.0, 1.0, 1.0), "hard": (0.0, 0.0, 1.0)}
COSTS = (0.0001, 0.003, 0.01)


def make_record(rid: str, kind: str, text: str, scores: Sequence[float]) -> EvalRecord:
    outcomes = {
        m: Outcome(score=s, cost_usd=c, response=f"answer from {m}")
        for m, s, c in zip(MODELS, scores, COSTS, strict=True)
    }
    return EvalRecord(rid, kind, [{"role": "user", "content": text}], outcomes)


def synthetic_records(
    n: int, *, seed: int, nouns: Sequence[str] = TRAIN_NOUNS, noise: float = 0.03
) -> list[EvalRecord]:
    """``n`` prompts, a third of each kind; with probability ``noise`` a cheaper tier's label is flipped."""
    rng = random.Random(seed)
    kinds = list(TEMPLATES)
    records = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        a, b = rng.sample(list(nouns), 2)
        text = rng.choice(TEMPLATES[kind]).format(a=a, b=b)
        scores = list(SCORES[kind])
        for j in range(len(scores) - 1):
            if rng.random() < noise:
                scores[j] = 1.0 - scores[j]
        records.append(make_record(f"{kind}-{seed}-{i}", kind, text, scores))
    return records


def synthetic_jsonl_rows(records: Sequence[EvalRecord]) -> list[dict[str, Any]]:
    """The records as routing eval set lines (docs/datasets.md)."""
    return [
        {
            "id": r.id,
            "category": r.category,
            "messages": r.messages,
            "outcomes": {
                m: {"score": o.score, "cost_usd": o.cost_usd, "response": o.response}
                for m, o in r.outcomes.items()
            },
        }
        for r in records
    ]


def fit_synthetic(
    n: int = 200, seed: int = 0, models: Sequence[str] = MODELS, **hyperparameters: Any
) -> LearnedRouter:
    """A router fitted on ``n`` synthetic prompts: the default one unless ``hyperparameters`` say otherwise."""
    records = synthetic_records(n, seed=seed)
    return LearnedRouter(**hyperparameters).fit(records, OutcomeTable.from_records(records, list(models)))


def fit_logreg(records: Sequence[EvalRecord], models: Sequence[str] = MODELS, **hyper: Any) -> LearnedRouter:
    """The plain logistic router (scores are its probabilities), for what is specific to a linear model."""
    table = OutcomeTable.from_records(records, list(models))
    return LearnedRouter(family="logreg", cost_aware=False, **hyper).fit(records, table)


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a random positive scores above a random negative), ties counting half."""
    diff = positive[:, None] - negative[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


@pytest.fixture(scope="module")
def router() -> LearnedRouter:
    return fit_synthetic()


@pytest.fixture(scope="module")
def held_out() -> list[EvalRecord]:
    return synthetic_records(60, seed=99, nouns=HELD_OUT_NOUNS, noise=0.0)


def by_kind(records: Sequence[EvalRecord], probs: np.ndarray) -> dict[str, np.ndarray]:
    return {k: probs[[i for i, r in enumerate(records) if r.category == k]] for k in TEMPLATES}


# ---- it learns the signal ----


def test_cheap_tier_probability_separates_easy_from_hard_prompts(
    router: LearnedRouter, held_out: list[EvalRecord]
) -> None:
    probs = by_kind(held_out, router.predict_proba(held_out)[:, 0])
    assert probs["easy"].min() > 0.6, probs["easy"]
    assert probs["hard"].max() < 0.4, probs["hard"]
    assert probs["medium"].max() < 0.4, probs["medium"]
    assert probs["easy"].mean() > probs["medium"].mean() + 0.4
    assert auc(probs["easy"], np.concatenate([probs["medium"], probs["hard"]])) == 1.0


def test_mid_tier_probability_separates_code_from_proofs(
    router: LearnedRouter, held_out: list[EvalRecord]
) -> None:
    probs = by_kind(held_out, router.predict_proba(held_out)[:, 1])
    assert probs["medium"].min() > 0.6, probs["medium"]
    assert probs["easy"].min() > 0.6, probs["easy"]
    assert probs["hard"].max() < 0.4, probs["hard"]
    assert auc(np.concatenate([probs["easy"], probs["medium"]]), probs["hard"]) == 1.0


def test_more_data_does_not_hurt_the_ordering(held_out: list[EvalRecord]) -> None:
    small, large = fit_synthetic(n=60, seed=1), fit_synthetic(n=300, seed=2)
    for fitted in (small, large):
        probs = by_kind(held_out, fitted.predict_proba(held_out)[:, 0])
        assert auc(probs["easy"], probs["hard"]) >= 0.95
        scores = by_kind(held_out, fitted.predict(held_out))
        # Routed by score, every easy prompt leaves premium at a higher threshold than any proof.
        assert scores["easy"].max(axis=1).min() > scores["hard"].max(axis=1).max()


def test_learned_start_orders_tiers_like_the_data(router: LearnedRouter) -> None:
    """Thresholding the routing scores at 0.5 per tier, as LearnedStart does, gives each kind its ideal tier."""
    cases = {
        "Translate this sentence into French: the comet is next to the parrot.": "cheap",
        "Write a python function that sorts a list of glacier objects by their anchor field.": "mid",
        "Prove the theorem that every finite saddle graph contains a prairie cycle.": "premium",
    }
    start = LearnedStart(router, ["cheap", "mid", "premium"], [0.5, 0.5])
    for text, ideal in cases.items():
        req = request(text)
        tier, reason = start.start(req, request_features(req))
        scores = router.predict_request(req)
        assert tier == ideal, (text, reason)
        assert tier == next((t for t, v in zip(("cheap", "mid"), scores, strict=True) if v >= 0.5), "premium")


def test_held_out_prompts_start_at_their_ideal_tier(
    router: LearnedRouter, held_out: list[EvalRecord]
) -> None:
    scores = router.predict(held_out)
    ideal = {"easy": 0, "medium": 1, "hard": 2}
    for record, row in zip(held_out, scores, strict=True):
        start = next((j for j, v in enumerate(row) if v >= 0.5), len(row))
        assert start == ideal[record.category], (record.messages, row)


# ---- shapes and the two prediction paths ----


def test_predict_shapes(router: LearnedRouter, held_out: list[EvalRecord]) -> None:
    probs = router.predict_proba(held_out)
    assert probs.shape == (len(held_out), len(MODELS) - 1)
    assert probs.dtype == np.float64
    assert np.all((probs > 0) & (probs < 1))
    # The routing scores: lam / (lam + kappa), 0 where a tier is never the best choice, never 1.
    scores = router.predict(held_out)
    assert scores.shape == probs.shape and scores.dtype == np.float64
    assert np.all((scores >= 0) & (scores < 1))
    assert not np.array_equal(scores, probs)  # cost-aware: the scores are not the probabilities
    assert router.predict(held_out[:1]).shape == router.predict_proba(held_out[:1]).shape == (1, 2)
    req = record_request(held_out[0])
    assert router.predict_request(req).shape == router.proba_request(req).shape == (2,)


def test_predict_of_no_records_is_empty(router: LearnedRouter) -> None:
    assert router.predict([]).shape == (0, 2)
    assert router.predict_proba([]).shape == (0, 2)


def test_two_tier_router_predicts_one_column() -> None:
    fitted = fit_synthetic(n=90, models=("m-cheap", "m-premium"))
    records = synthetic_records(9, seed=5, nouns=HELD_OUT_NOUNS)
    assert fitted.predict(records).shape == (9, 1)
    assert fitted.tiers_ == ("cheap", "premium")
    assert fitted.models_ == ("m-cheap", "m-premium")


def test_predict_request_equals_predict(router: LearnedRouter, held_out: list[EvalRecord]) -> None:
    batch, probs = router.predict(held_out), router.predict_proba(held_out)
    for i, record in enumerate(held_out):
        req = record_request(record)
        np.testing.assert_allclose(router.predict_request(req), batch[i], rtol=1e-12)
        np.testing.assert_allclose(router.proba_request(req), probs[i], rtol=1e-12)
    # The same prompt built as the proxy builds requests (helpers_config.request) gives the same numbers.
    text = held_out[0].messages[0]["content"]
    np.testing.assert_allclose(router.predict_request(request(text)), batch[0], rtol=1e-12)
    np.testing.assert_allclose(router.proba_request(request(text)), probs[0], rtol=1e-12)


def test_score_and_proba_request_is_both_in_one_pass(
    router: LearnedRouter, held_out: list[EvalRecord]
) -> None:
    for record in held_out[:12]:
        req = record_request(record)
        scores, probs = router.score_and_proba_request(req)
        np.testing.assert_array_equal(scores, router.predict_request(req))
        np.testing.assert_array_equal(probs, router.proba_request(req))


def test_unknown_words_and_empty_text_still_predict(router: LearnedRouter) -> None:
    for text in ("zzzz qqqq xyzzy", "", "?!"):
        scores, p = router.score_and_proba_request(request(text))
        assert p.shape == (2,) and np.all(np.isfinite(p)) and np.all((p > 0) & (p < 1))
        assert scores.shape == (2,) and np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores < 1))


def test_engine_features_give_the_same_probabilities_as_training_features(router: LearnedRouter) -> None:
    """The proxy passes the engine's own features to predict_request; with the default config they must
    describe the request as the router's training saw it, or the served P differs from the evaluated P."""
    engine = Engine(routing_config(), providers={})
    for text in (
        "Translate this sentence into French: the comet is next to the parrot.",
        "Write a python function that sorts a list of glacier objects by their anchor field.",
    ):
        req = request(text)
        features = engine.classifier.features(req, None)
        np.testing.assert_allclose(router.predict_request(req, features), router.predict_request(req))
        np.testing.assert_allclose(router.proba_request(req, features), router.proba_request(req))


def domain_router() -> LearnedRouter:
    """Trained where the legal-domain prompts ("... the court ...") need premium, so the domain feature
    carries weight."""
    rng = random.Random(7)
    records = []
    for i in range(120):
        a, b = rng.sample(list(TRAIN_NOUNS), 2)
        if i % 2:
            text = f"Summarize what the court said about the {a} and the {b}."
            scores = (0.0, 0.0, 1.0)
        else:
            text = f"Summarize what the teacher said about the {a} and the {b}."
            scores = (1.0, 1.0, 1.0)
        records.append(make_record(f"d{i}", "d", text, scores))
    return LearnedRouter().fit(records, OutcomeTable.from_records(records, list(MODELS)))


def test_the_engine_scores_with_the_routers_own_features() -> None:
    """No train/serve skew: the config's domain keywords ("court ruling") differ from the router's ("court"),
    and the engine's learned start must still see what the router saw in training."""
    fitted = domain_router()
    engine = Engine(routing_config(), providers={})
    req = request("Summarize what the court said about the comet and the parrot.")
    features = engine.classifier.features(req, None)
    start = LearnedStart(fitted, ["cheap", "mid", "premium"], [0.5, 0.5])
    tier, reason = start.start(req, features)
    scores, p = fitted.predict_request(req), fitted.proba_request(req)
    assert reason == (
        f"learned:score(cheap:{scores[0]:.2f},mid:{scores[1]:.2f})<thresholds;p(cheap:{p[0]:.2f},mid:{p[1]:.2f})"
    )
    assert tier == "premium"
    assert p[0] < 0.2 and p[1] < 0.2  # the court prompts needed premium in training
    # The teacher prompts did not: the same sentence about a teacher leaves premium.
    teacher = request("Summarize what the teacher said about the comet and the parrot.")
    assert start.start(teacher, engine.classifier.features(teacher, None))[0] != "premium"


# ---- degenerate labels fall back to the base rate ----


def without_negatives_for_mid(n: int = 60) -> list[EvalRecord]:
    records = synthetic_records(n, seed=3, noise=0.0)
    # Mid answers everything as well as premium: no negative example for mid.
    for r in records:
        r.outcomes["m-mid"] = r.outcomes["m-premium"]
    return records


def one_negative_for_cheap(n: int = 50) -> list[EvalRecord]:
    records = synthetic_records(n, seed=3, noise=0.0)
    for i, r in enumerate(records):
        premium = r.outcomes["m-premium"]
        # Cheap matches premium on every prompt but one: below min_examples=2 negatives.
        r.outcomes["m-cheap"] = premium if i else Outcome(0.0, premium.cost_usd, None)
    return records


def no_positives_for_cheap(n: int = 30) -> list[EvalRecord]:
    records = synthetic_records(n, seed=3, noise=0.0)
    for r in records:
        r.outcomes["m-cheap"] = Outcome(0.0, 0.0001, None)
        r.outcomes["m-premium"] = Outcome(1.0, 0.01, None)
    return records


def test_tier_without_negative_examples_predicts_the_base_rate() -> None:
    records = without_negatives_for_mid()
    fitted = LearnedRouter().fit(records, OutcomeTable.from_records(records, list(MODELS)))
    probs = fitted.predict_proba(synthetic_records(12, seed=4, nouns=HELD_OUT_NOUNS))
    np.testing.assert_allclose(probs[:, 1], 1.0, atol=1e-5)
    # The cheap tier is still learned.
    assert np.ptp(probs[:, 0]) > 0.5


def test_logistic_tier_without_negative_examples_has_no_weights() -> None:
    fitted = fit_logreg(without_negatives_for_mid())
    assert not np.any(fitted.coef_[1])
    probs = fitted.predict(synthetic_records(12, seed=4, nouns=HELD_OUT_NOUNS))
    np.testing.assert_allclose(probs[:, 1], 1.0, atol=1e-5)
    # The cheap tier is still learned.
    assert np.any(fitted.coef_[0])
    assert np.ptp(probs[:, 0]) > 0.5


@pytest.mark.parametrize("family", ["knn", "logreg"])
def test_tier_with_too_few_negatives_predicts_its_base_rate(family: str) -> None:
    records = one_negative_for_cheap()
    table = OutcomeTable.from_records(records, list(MODELS))
    fitted = LearnedRouter(family=family, min_examples=2).fit(records, table)
    probs = fitted.predict_proba(records[:10])
    np.testing.assert_allclose(probs[:, 0], 49 / 50, rtol=1e-6)
    np.testing.assert_allclose(fitted.base_rate_[0], 49 / 50)


def test_logistic_tier_with_too_few_negatives_has_no_weights() -> None:
    fitted = fit_logreg(one_negative_for_cheap(), min_examples=2)
    assert not np.any(fitted.coef_[0])
    # Without cost awareness its scores are the base rate too.
    np.testing.assert_allclose(fitted.predict(one_negative_for_cheap()[:10])[:, 0], 49 / 50, rtol=1e-9)


@pytest.mark.parametrize("family", ["knn", "logreg"])
def test_tier_with_no_positive_examples_predicts_near_zero(family: str) -> None:
    records = no_positives_for_cheap()
    fitted = LearnedRouter(family=family).fit(records, OutcomeTable.from_records(records, list(MODELS)))
    probs = fitted.predict_proba(records[:5])
    assert np.all(probs[:, 0] < 1e-5)
    assert np.all(np.isfinite(probs))
    scores = fitted.predict(records[:5])
    assert np.all(np.isfinite(scores)) and np.all((scores >= 0) & (scores < 1))


def test_labels_compare_with_premium_score_not_with_one() -> None:
    """A tier is right when it scores at least premium's score, even when premium scores below 1."""
    records = synthetic_records(30, seed=3, noise=0.0)
    for r in records:
        r.outcomes["m-cheap"] = Outcome(0.4, 0.0001, None)
        r.outcomes["m-premium"] = Outcome(0.4, 0.01, None)
    fitted = LearnedRouter().fit(records, OutcomeTable.from_records(records, list(MODELS)))
    assert np.all(fitted.predict_proba(records[:5])[:, 0] > 0.99)


# ---- scikit-learn estimator conventions ----


DEFAULTS = {
    "min_df": 2, "max_terms": 200_000, "c": 1.0, "min_examples": 2, "family": "knn", "k": None, "prior": None,
    "components": 32, "dense_weight": 0.3, "text_only": False, "cost_aware": True, "risk": "auto",
    "embedding_weight": 0.5,
}  # fmt: skip  # every constructor argument but the encoder (a callable, never saved)


def test_init_stores_only_hyperparameters() -> None:
    r = LearnedRouter(min_df=3, max_terms=50, c=0.5, min_examples=4, family="logreg", k=5, cost_aware=False)
    assert vars(r) == {
        **DEFAULTS, "min_df": 3, "max_terms": 50, "c": 0.5, "min_examples": 4, "family": "logreg", "k": 5,
        "cost_aware": False, "encoder": None,
    }  # fmt: skip
    assert vars(LearnedRouter()) == {**DEFAULTS, "encoder": None}


def test_fit_returns_self_and_learned_attributes_end_in_underscore() -> None:
    r = LearnedRouter()
    before = set(vars(r))
    records = synthetic_records(45, seed=6)
    assert r.fit(records, OutcomeTable.from_records(records, list(MODELS))) is r
    learned = set(vars(r)) - before
    assert learned, "fit learned nothing"
    assert all(name.endswith("_") and not name.startswith("_") for name in learned), learned
    assert {
        "vocabulary_", "idf_", "dense_mean_", "dense_scale_", "base_rate_", "neighbours_", "cost_coef_",
        "cost_intercept_", "risk_scale_", "kappa_", "tiers_", "models_", "k_", "prior_", "risk_", "usable_",
        "shortfall_mean_",
    } <= learned  # fmt: skip
    assert not hasattr(r, "coef_")  # a knn router has no linear model
    # Hyperparameters are not changed by fitting.
    assert {k: vars(r)[k] for k in before} == {**DEFAULTS, "encoder": None}
    assert r.base_rate_.shape == (2,) and r.risk_scale_.shape == (2,)
    # One cost model per tier, premium included, over the same representation.
    assert r.cost_coef_.shape == (3, len(r.vocabulary_) + len(DENSE_FEATURES))
    assert r.cost_intercept_.shape == (3,)


def test_a_plain_logistic_router_learns_coefficients() -> None:
    records = synthetic_records(45, seed=6)
    r = fit_logreg(records)
    assert r.coef_.shape == (2, len(r.vocabulary_) + len(DENSE_FEATURES))
    assert r.intercept_.shape == (2,)
    assert not hasattr(r, "neighbours_") and not hasattr(r, "cost_coef_")
    # Without cost awareness its routing scores are its probabilities.
    np.testing.assert_array_equal(r.predict(records), r.predict_proba(records))


def test_min_df_and_max_terms_bound_the_vocabulary() -> None:
    records = synthetic_records(60, seed=8)
    table = OutcomeTable.from_records(records, list(MODELS))
    full = LearnedRouter(min_df=1).fit(records, table)
    pruned = LearnedRouter(min_df=5).fit(records, table)
    capped = LearnedRouter(min_df=1, max_terms=10).fit(records, table)
    assert len(pruned.vocabulary_) < len(full.vocabulary_)
    assert len(capped.vocabulary_) == 10
    assert sorted(capped.vocabulary_.values()) == list(range(10))
    assert "translate" in full.vocabulary_ and "prove" in pruned.vocabulary_


def test_refitting_replaces_what_was_learned() -> None:
    a = synthetic_records(45, seed=10)
    r = LearnedRouter()
    r.fit(a, OutcomeTable.from_records(a, list(MODELS)))
    r.fit(a, OutcomeTable.from_records(a, ["m-cheap", "m-premium"]))
    assert r.base_rate_.shape == (1,) and r.tiers_ == ("cheap", "premium")
    assert r.cost_coef_.shape[0] == 2
    assert r.predict(a).shape == r.predict_proba(a).shape == (45, 1)


def test_refitting_as_another_family_forgets_the_old_one() -> None:
    a = synthetic_records(45, seed=10)
    table = OutcomeTable.from_records(a, list(MODELS))
    r = LearnedRouter(family="logreg", cost_aware=False).fit(a, table)
    assert hasattr(r, "coef_")
    r.family, r.cost_aware = "knn", True
    r.fit(a, table)
    assert not hasattr(r, "coef_") and not hasattr(r, "intercept_")
    assert hasattr(r, "neighbours_") and hasattr(r, "cost_coef_")


def test_own_features_from_the_engines_equal_the_routers_own_extraction() -> None:
    """The proxy derives the router's features from the engine's (only the domains matched again): for every
    kind of prompt they must equal what training computed, whatever keyword sets the config has."""
    engine = Engine(routing_config(), providers={})
    texts = [
        "Translate this sentence into French: the comet is next to the parrot.",
        "Review this contract clause for liability and indemnification under Delaware law.",
        "What dosage of this medication is safe? The patient has symptoms of a rash.",
        "Write a python function that computes the tax on an investment portfolio.\n```python\nx = 1\n```",
        "Prove that the sum of two even integers is even: $2a + 2b = 2(a+b)$.",
        "Find the vulnerability in this authentication code; is it an exploit for malware?",
        "",
    ]
    for text in texts:
        req = request(text)
        engine_features = engine.classifier.features(req, "paid")
        assert own_features(req, engine_features) == request_features(req), text
