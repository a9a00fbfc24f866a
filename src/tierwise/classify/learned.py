"""The learned router: per non-premium tier, P(the tier answers as well as premium | request).

Trained from a routing eval set's outcomes: a prompt's label for tier j is 1 when tier j's score is at least
premium's. The representation needs no downloaded weights: TF-IDF over the words and word pairs seen at least
twice in training (L2-normalised), plus the router's own request features. One logistic regression per
non-premium tier.

scikit-learn conventions: ``__init__`` stores hyperparameters, ``fit`` returns self, learned attributes end in
``_``. scikit-learn (and scipy) are used to fit only; predicting is a sparse dot product in numpy, which is
what the proxy runs on every request, and what a saved artifact (tierwise.classify.artifact) holds.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

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


class LearnedRouter:
    """A tier scorer (tierwise.evals.sweep.TierScorer) learned from outcomes."""

    def __init__(
        self, *, min_df: int = 2, max_terms: int = 200_000, c: float = 1.0, min_examples: int = 2
    ) -> None:
        self.min_df = min_df
        self.max_terms = max_terms
        self.c = c
        self.min_examples = min_examples

    # ---- the representation ----

    def _rows(self, requests: Sequence[ChatRequest]) -> tuple[list[dict[int, float]], FloatArray]:
        rows = [term_frequencies(r.all_text(), self.vocabulary_) for r in requests]
        dense = np.asarray([dense_features(request_features(r)) for r in requests], dtype=np.float64)
        return rows, dense.reshape(len(requests), len(DENSE_FEATURES))

    def _weighted(self, terms: dict[int, float]) -> tuple[npt.NDArray[np.int64], FloatArray]:
        idx = np.fromiter(terms.keys(), dtype=np.int64, count=len(terms))
        val = np.fromiter(terms.values(), dtype=np.float64, count=len(terms)) * self.idf_[idx]
        norm = float(np.sqrt(val @ val)) or 1.0
        return idx, val / norm

    def _matrix(self, terms: list[dict[int, float]], dense: FloatArray) -> Any:
        from scipy.sparse import csr_matrix, hstack

        indptr, indices, data = [0], [], []
        for row in terms:
            idx, val = self._weighted(row)
            indices.append(idx)
            data.append(val)
            indptr.append(indptr[-1] + len(idx))
        text = csr_matrix(
            (
                np.concatenate(data) if data else np.zeros(0),
                np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64),
                np.asarray(indptr),
            ),
            shape=(len(terms), len(self.vocabulary_)),
        )
        scaled = (dense - self.dense_mean_) / self.dense_scale_
        return hstack([text, csr_matrix(scaled)]).tocsr()

    # ---- fitting and predicting ----

    def fit(self, records: Sequence[EvalRecord], table: OutcomeTable) -> LearnedRouter:
        from sklearn.linear_model import LogisticRegression

        requests = [record_request(r) for r in records]
        df: dict[str, int] = {}
        for request in requests:
            for term in set(terms(request.all_text())):
                df[term] = df.get(term, 0) + 1
        kept = sorted((t for t, d in df.items() if d >= self.min_df), key=lambda t: (-df[t], t))[
            : self.max_terms
        ]
        self.vocabulary_ = {t: i for i, t in enumerate(kept)}
        n = len(records)
        self.idf_ = np.log((1 + n) / (1 + np.asarray([df[t] for t in kept], dtype=np.float64))) + 1
        rows, dense = self._rows(requests)
        self.dense_mean_ = dense.mean(axis=0)
        self.dense_scale_ = dense.std(axis=0) + 1e-6
        x = self._matrix(rows, dense)
        labels = table.scores[:, :-1] >= table.scores[:, -1:] - 1e-9
        width = len(self.vocabulary_) + len(DENSE_FEATURES)
        self.coef_ = np.zeros((labels.shape[1], width))
        self.intercept_ = np.zeros(labels.shape[1])
        for j in range(labels.shape[1]):
            y = labels[:, j]
            if y.sum() < self.min_examples or (~y).sum() < self.min_examples:
                # Too few examples of one kind to learn from: predict the base rate.
                rate = min(max(float(y.mean()), 1e-6), 1 - 1e-6)
                self.intercept_[j] = math.log(rate / (1 - rate))
                continue
            model = LogisticRegression(C=self.c, max_iter=2000, solver="liblinear").fit(x, y)
            self.coef_[j] = model.coef_[0]
            self.intercept_[j] = model.intercept_[0]
        self.tiers_ = tuple(table.tiers)
        self.models_ = tuple(table.models)
        return self

    def predict_request(self, request: ChatRequest, features: Features | None = None) -> FloatArray:
        """P(tier j will do) for one request: the proxy's hot path (a sparse dot product per tier).
        ``features`` may be the engine's own, already computed for the request."""
        row = term_frequencies(request.all_text(), self.vocabulary_)
        idx, val = self._weighted(row)
        dense = np.asarray(dense_features(features or request_features(request)))
        scaled = (dense - self.dense_mean_) / self.dense_scale_
        z = self.coef_[:, idx] @ val + self.coef_[:, len(self.vocabulary_) :] @ scaled + self.intercept_
        out: FloatArray = 1.0 / (1.0 + np.exp(-z))
        return out

    def predict(self, records: Sequence[EvalRecord]) -> FloatArray:
        return np.vstack([self.predict_request(record_request(r)) for r in records]).reshape(
            len(records), len(self.intercept_)
        )
