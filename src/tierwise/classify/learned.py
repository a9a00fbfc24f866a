"""The learned router: per non-premium tier, how worthwhile it is to send a request there instead of premium.

Trained from a routing eval set's outcomes: a prompt's label for tier j is 1 when tier j's score is at least
premium's. The representation needs no downloaded weights: TF-IDF over the words and word pairs seen at least
twice in training (L2-normalised), plus the router's own request features (centred, scaled to at most
``dense_weight`` in training). A model *family* (tierwise.classify.families: ``knn``, the default, ``logreg``,
``gbdt``, ``blend``) turns that into P(tier j answers as well as premium).

With ``cost_aware`` (the default) the router also learns what each tier's answer costs (a ridge regression of
log cost per tier) and scores each tier by the dollars it saves per unit of quality it risks
(families.routing_scores), which is what "saving at a quality target" rewards; without it, the scores are the
probabilities themselves. docs/learned-router.md compares the families and says why the default won.

scikit-learn conventions: ``__init__`` stores hyperparameters, ``fit`` returns self, learned attributes end in
``_``. scikit-learn (and scipy) are used to fit only; predicting with ``knn``, ``logreg`` or ``blend`` is
numpy only, which is what the proxy runs on every request and what a saved artifact
(tierwise.classify.artifact) holds.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tierwise.classify.families import (
    Boosted,
    Neighbours,
    base_rate,
    check_family,
    fit_logreg,
    learnable,
    logreg_proba,
    routing_scores,
)
from tierwise.config import TASK_TYPES
from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import FloatArray, OutcomeTable
from tierwise.features import Features, KeywordSet, extract_features, keyword_pattern
from tierwise.messages import ChatRequest, Message

_TOKEN = re.compile(r"\w+")
DOMAIN_KEYWORDS: dict[str, list[str]] = {
    "legal": ["contract", "lawsuit", "statute", "liability", "attorney", "court"],
    "medical": ["diagnos*", "symptom*", "dosage", "medication", "clinical", "patient*"],
    "finance": ["tax", "portfolio", "investment", "accounting", "valuation"],
    "security": ["vulnerability", "exploit", "malware", "encryption"],
}
_DOMAINS: dict[str, KeywordSet] = {name: keyword_pattern(words) for name, words in DOMAIN_KEYWORDS.items()}
DENSE_FEATURES = (
    "log_input_tokens", "log_expected_output_tokens", "tools", "depth", "has_code", "has_math", "wants_json",
    "expert", "log_last_user_chars",
    *(f"task={t}" for t in TASK_TYPES),
    *(f"domain={d}" for d in DOMAIN_KEYWORDS),
)  # fmt: skip


def dense_features(f: Features) -> list[float]:
    """The request features as numbers, on scales a linear model can use (names in DENSE_FEATURES)."""
    row = [
        math.log1p(f.input_tokens),
        math.log1p(f.expected_output_tokens),
        float(f.tools),
        float(f.depth),
        float(f.has_code),
        float(f.has_math),
        float(f.wants_json),
        float(f.expertise == "expert"),
        math.log1p(f.last_user_chars),
    ]
    row += [float(f.task == t) for t in TASK_TYPES]
    row += [float(d in f.domains) for d in DOMAIN_KEYWORDS]
    return row


def terms(text: str) -> list[str]:
    """The text's lower-case words and adjacent word pairs."""
    words = _TOKEN.findall(text.lower())
    return [*words, *(a + " " + b for a, b in itertools.pairwise(words))]


def term_frequencies(text: str, vocabulary: dict[str, int]) -> dict[int, float]:
    """Sublinear term frequencies (1 + log count) of the text's known terms, by vocabulary index."""
    counts: dict[int, int] = {}
    get = vocabulary.get
    for term in terms(text):
        i = get(term)
        if i is not None:
            counts[i] = counts.get(i, 0) + 1
    return {i: 1.0 + math.log(c) for i, c in counts.items()}


def request_features(request: ChatRequest) -> Features:
    return extract_features(request, domain_patterns=_DOMAINS, blacklist_patterns={})


def record_request(record: EvalRecord) -> ChatRequest:
    return ChatRequest(messages=[Message(role=m["role"], content=m["content"]) for m in record.messages])


@functools.lru_cache(maxsize=1 << 15)
def _parsed(messages: tuple[tuple[Any, Any], ...]) -> tuple[dict[str, int], tuple[float, ...]]:
    request = ChatRequest(messages=[Message(role=role, content=content) for role, content in messages])
    counts: dict[str, int] = {}
    for term in terms(request.all_text()):
        counts[term] = counts.get(term, 0) + 1
    return counts, tuple(dense_features(request_features(request)))


def parsed_record(record: EvalRecord) -> tuple[dict[str, int], tuple[float, ...]]:
    """An eval record's term counts (in order of first occurrence) and dense features, computed once per
    distinct prompt: fitting and cross-validation see the same prompts many times."""
    return _parsed(tuple((m["role"], m["content"]) for m in record.messages))


def known_frequencies(counts: dict[str, int], vocabulary: dict[str, int]) -> dict[int, float]:
    """term_frequencies from term counts: the same numbers, in the same order."""
    out: dict[int, float] = {}
    get = vocabulary.get
    for term, c in counts.items():
        i = get(term)
        if i is not None:
            out[i] = 1.0 + math.log(c)
    return out


class LearnedRouter:
    """A tier scorer (tierwise.evals.sweep.TierScorer) learned from outcomes.

    Hyperparameters: the vocabulary (``min_df``, ``max_terms``), the family and its own (``c`` for logreg,
    ``k`` and ``prior`` for knn, ``components`` for gbdt), ``min_examples`` (fewer examples of a label than
    this and the tier predicts its base rate), ``dense_weight`` (how much the request features count beside
    the text), ``text_only`` (no request features: the plain TF-IDF baseline) and ``cost_aware``.
    """

    def __init__(
        self,
        *,
        min_df: int = 2,
        max_terms: int = 200_000,
        c: float = 1.0,
        min_examples: int = 2,
        family: str = "knn",
        k: int = 30,
        prior: float = 1 / 3,
        components: int = 32,
        dense_weight: float = 0.3,
        text_only: bool = False,
        cost_aware: bool = True,
    ) -> None:
        self.min_df = min_df
        self.max_terms = max_terms
        self.c = c
        self.min_examples = min_examples
        self.family = family
        self.k = k
        self.prior = prior
        self.components = components
        self.dense_weight = dense_weight
        self.text_only = text_only
        self.cost_aware = cost_aware

    # ---- the representation ----

    def _scaled(self, dense: FloatArray) -> FloatArray:
        out: FloatArray = (dense - self.dense_mean_) / self.dense_scale_
        return out

    def _weighted(self, terms: dict[int, float]) -> tuple[npt.NDArray[np.int64], FloatArray]:
        idx = np.fromiter(terms.keys(), dtype=np.int64, count=len(terms))
        val = np.fromiter(terms.values(), dtype=np.float64, count=len(terms)) * self.idf_[idx]
        norm = float(np.sqrt(val @ val)) or 1.0
        return idx, val / norm

    def _text(self, terms: list[dict[int, float]]) -> Any:
        """The TF-IDF rows as a scipy CSR matrix (n, vocabulary)."""
        from scipy.sparse import csr_matrix

        indptr, indices, data = [0], [], []
        for row in terms:
            idx, val = self._weighted(row)
            indices.append(idx)
            data.append(val)
            indptr.append(indptr[-1] + len(idx))
        return csr_matrix(
            (
                np.concatenate(data) if data else np.zeros(0),
                np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64),
                np.asarray(indptr),
            ),
            shape=(len(terms), len(self.vocabulary_)),
        )

    # ---- fitting ----

    def fit(self, records: Sequence[EvalRecord], table: OutcomeTable) -> LearnedRouter:
        from scipy.sparse import csr_matrix, hstack

        check_family(self.family)
        for name in [n for n in vars(self) if n.endswith("_")]:
            delattr(self, name)  # refitting starts afresh
        parsed = [parsed_record(r) for r in records]
        df: dict[str, int] = {}
        for counts, _ in parsed:
            for term in counts:
                df[term] = df.get(term, 0) + 1
        kept = sorted((t for t, d in df.items() if d >= self.min_df), key=lambda t: (-df[t], t))[
            : self.max_terms
        ]
        self.vocabulary_ = {t: i for i, t in enumerate(kept)}
        n = len(records)
        self.idf_ = np.log((1 + n) / (1 + np.asarray([df[t] for t in kept], dtype=np.float64))) + 1
        raw = np.asarray([d for _, d in parsed], dtype=np.float64)
        raw = raw.reshape(n, len(DENSE_FEATURES))
        self.dense_mean_ = raw.mean(axis=0) if n else np.zeros(len(DENSE_FEATURES))
        spread = np.abs(raw - self.dense_mean_).max(axis=0) if n else np.zeros(len(DENSE_FEATURES))
        # Scaled so that no training value exceeds dense_weight: rare indicators stay small (a standard
        # deviation would blow one seen once up to ~sqrt(n)); a constant feature, or all with text_only, is 0.
        off = self.text_only or self.dense_weight <= 0
        self.dense_scale_ = np.where((spread > 0) & (not off), spread / max(self.dense_weight, 1e-12), np.inf)
        text = self._text([known_frequencies(c, self.vocabulary_) for c, _ in parsed])
        dense = self._scaled(raw)
        x = hstack([text, csr_matrix(dense)]).tocsr()
        labels = table.scores[:, :-1] >= table.scores[:, -1:] - 1e-9
        self.base_rate_ = np.asarray([base_rate(labels[:, j]) for j in range(labels.shape[1])])
        if self.family in ("logreg", "blend"):
            self.coef_, self.intercept_ = fit_logreg(x, labels, self.c, self.min_examples)
        if self.family in ("knn", "blend"):
            targets = labels.astype(np.float64)
            for j in range(labels.shape[1]):
                if not learnable(labels[:, j], self.min_examples):
                    targets[:, j] = self.base_rate_[j]
            self.neighbours_ = Neighbours.build(text, dense, targets)
        if self.family == "gbdt":
            boosted = Boosted(self.components, self.base_rate_)
            self.boosted_ = boosted.fit(text, dense, labels, self.min_examples)
        if self.cost_aware:
            self._fit_costs(x, table, labels)
        self.tiers_ = tuple(table.tiers)
        self.models_ = tuple(table.models)
        return self

    def _fit_costs(self, x: Any, table: OutcomeTable, labels: npt.NDArray[np.bool_]) -> None:
        """What each tier's answer costs (ridge regression of log cost), the mean quality a tier loses when it
        does worse than premium, and kappa: the training set's dollars per unit of quality for mixing
        cheap-only with premium-only."""
        from sklearn.linear_model import Ridge

        log_cost = np.log(np.maximum(table.costs, 1e-12))
        model = Ridge(alpha=1.0).fit(x, log_cost)
        self.cost_coef_ = np.atleast_2d(model.coef_)
        self.cost_intercept_ = np.atleast_1d(model.intercept_)
        shortfall = table.scores[:, -1:] - table.scores[:, :-1]
        worse = ~labels
        self.risk_scale_ = np.asarray(
            [float(shortfall[w, j].mean()) if w.any() else 1.0 for j, w in enumerate(worse.T)]
        )
        quality_gap = float(table.scores[:, -1].mean() - table.scores[:, 0].mean()) if table.n else 0.0
        cost_gap = float(table.costs[:, -1].mean() - table.costs[:, 0].mean()) if table.n else 0.0
        self.kappa_ = max(cost_gap, 1e-12) / max(quality_gap, 0.01)

    # ---- what a saved artifact holds ----

    def state(self) -> dict[str, npt.NDArray[Any]]:
        """The learned arrays (all but the vocabulary), at the precision predicting uses, so that a loaded
        router predicts exactly what this one does. gbdt's trees have no such form (scikit-learn keeps them
        by pickle, which artifacts refuse): saving one is a ValueError."""
        check_family(self.family)
        if self.family == "gbdt":
            raise ValueError(
                "only the logreg, knn and blend families of the learned router can be saved; gbdt's trees "
                "exist only as scikit-learn objects"
            )
        out: dict[str, npt.NDArray[Any]] = {
            "idf": self.idf_, "dense_mean": self.dense_mean_, "dense_scale": self.dense_scale_,
            "base_rate": self.base_rate_,
        }  # fmt: skip
        if self.family in ("logreg", "blend"):
            out |= {"coef": self.coef_, "intercept": self.intercept_}
        if self.family in ("knn", "blend"):
            out |= self.neighbours_.arrays()
        if self.cost_aware:
            out |= {
                "cost_coef": self.cost_coef_, "cost_intercept": self.cost_intercept_,
                "risk_scale": self.risk_scale_, "kappa": np.asarray(self.kappa_),
            }  # fmt: skip
        return out

    def set_state(self, arrays: Any) -> None:
        """Restore what state() gave (``arrays``: a mapping of name to array, such as an open .npz archive);
        a missing array is a KeyError naming it."""
        check_family(self.family)
        self.idf_ = np.asarray(arrays["idf"], dtype=np.float64)
        self.dense_mean_ = np.asarray(arrays["dense_mean"], dtype=np.float64)
        self.dense_scale_ = np.asarray(arrays["dense_scale"], dtype=np.float64)
        self.base_rate_ = np.asarray(arrays["base_rate"], dtype=np.float64)
        if self.family in ("logreg", "blend"):
            self.coef_ = np.asarray(arrays["coef"], dtype=np.float64)
            self.intercept_ = np.asarray(arrays["intercept"], dtype=np.float64)
        if self.family in ("knn", "blend"):
            self.neighbours_ = Neighbours.from_arrays(arrays)
        if self.cost_aware:
            self.cost_coef_ = np.asarray(arrays["cost_coef"], dtype=np.float64)
            self.cost_intercept_ = np.asarray(arrays["cost_intercept"], dtype=np.float64)
            self.risk_scale_ = np.asarray(arrays["risk_scale"], dtype=np.float64)
            self.kappa_ = float(arrays["kappa"])

    # ---- predicting ----

    def proba_request(self, request: ChatRequest, features: Features | None = None) -> FloatArray:
        """P(tier j answers as well as premium) for one request."""
        return self._proba_row(*self._row(request, features))

    def predict_request(self, request: ChatRequest, features: Features | None = None) -> FloatArray:
        """The routing score per non-premium tier for one request: the proxy's hot path. ``features`` may be
        the engine's own, already computed for the request (as request_features computes them)."""
        idx, val, dense = self._row(request, features)
        return self._score(idx, val, dense, self._proba_row(idx, val, dense))

    def score_and_proba_request(self, request: ChatRequest) -> tuple[FloatArray, FloatArray]:
        """Both the routing scores and the probabilities for one request, from one pass over its text."""
        idx, val, dense = self._row(request, None)
        p = self._proba_row(idx, val, dense)
        return self._score(idx, val, dense, p), p

    def predict_proba(self, records: Sequence[EvalRecord]) -> FloatArray:
        """P(tier j answers as well as premium), shape (n, tiers - 1)."""
        return self._batch(records, scores=False)

    def predict(self, records: Sequence[EvalRecord]) -> FloatArray:
        """Routing scores, shape (n, tiers - 1): the probabilities, or with cost_aware the cost-aware ones."""
        return self._batch(records, scores=True)

    def _row(
        self, request: ChatRequest, features: Features | None
    ) -> tuple[npt.NDArray[np.int64], FloatArray, FloatArray]:
        idx, val = self._weighted(term_frequencies(request.all_text(), self.vocabulary_))
        dense = self._scaled(np.asarray(dense_features(features or request_features(request))))
        return idx, val, dense

    def _proba_row(self, idx: npt.NDArray[np.int64], val: FloatArray, dense: FloatArray) -> FloatArray:
        check_family(self.family)
        if self.family == "gbdt":
            one: FloatArray = self.boosted_.proba(self._text_one(idx, val), dense[None, :])[0]
            return one
        parts = []
        if self.family in ("logreg", "blend"):
            parts.append(logreg_proba(self.coef_, self.intercept_, idx, val, dense))
        if self.family in ("knn", "blend"):
            sims = self.neighbours_.similarities(idx, val, dense)
            parts.append(self.neighbours_.proba(sims, self.k, self.prior, self.base_rate_))
        out: FloatArray = parts[0] if len(parts) == 1 else np.mean(parts, axis=0)
        return out

    def _text_one(self, idx: npt.NDArray[np.int64], val: FloatArray) -> Any:
        from scipy.sparse import csr_matrix

        return csr_matrix((val, idx, [0, len(idx)]), shape=(1, len(self.vocabulary_)))

    def _score(
        self, idx: npt.NDArray[np.int64], val: FloatArray, dense: FloatArray, p: FloatArray
    ) -> FloatArray:
        if not self.cost_aware:
            return p
        n_terms = len(self.vocabulary_)
        log_cost = self.cost_coef_[:, idx] @ val + self.cost_coef_[:, n_terms:] @ dense + self.cost_intercept_
        return routing_scores(p, np.exp(log_cost), self.risk_scale_, self.kappa_)

    def _batch(self, records: Sequence[EvalRecord], *, scores: bool) -> FloatArray:
        width = len(self.base_rate_)
        if not records:
            return np.zeros((0, width))
        parsed = [parsed_record(r) for r in records]
        frequencies = [known_frequencies(c, self.vocabulary_) for c, _ in parsed]
        rows = [
            (*self._weighted(f), self._scaled(np.asarray(d, dtype=np.float64)))
            for f, (_, d) in zip(frequencies, parsed, strict=True)
        ]
        if self.family == "gbdt":
            probs = self.boosted_.proba(self._text(frequencies), np.vstack([d for _, _, d in rows]))
        else:
            probs = np.vstack([self._proba_row(*row) for row in rows])
        if scores and self.cost_aware:
            probs = np.vstack([self._score(*row, p) for row, p in zip(rows, probs, strict=True)])
        return probs.reshape(len(records), width)
