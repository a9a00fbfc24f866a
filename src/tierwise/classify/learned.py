"""The learned router: per non-premium tier, P(the tier answers as well as premium | request).

Trained from a routing eval set's outcomes: a prompt's label for tier j is 1 when tier j's score is at least
premium's. The representation needs no downloaded weights: hashed word unigrams and bigrams (TF-IDF weighted)
plus the router's own request features. scikit-learn conventions: ``__init__`` stores hyperparameters,
``fit`` returns self, learned attributes end in ``_``. scikit-learn is imported only when a model is built.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from tierwise.config import TASK_TYPES
from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import FloatArray, OutcomeTable
from tierwise.evals.sweep import to_request
from tierwise.features import Features, extract_features, keyword_pattern

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

_DOMAINS = {
    name: keyword_pattern(words)
    for name, words in {
        "legal": ["contract", "lawsuit", "statute", "liability", "attorney", "court"],
        "medical": ["diagnos*", "symptom*", "dosage", "medication", "clinical", "patient*"],
        "finance": ["tax", "portfolio", "investment", "accounting", "valuation"],
        "security": ["vulnerability", "exploit", "malware", "encryption"],
    }.items()
}


def dense_features(f: Features) -> list[float]:
    """The request features as numbers, on scales a linear model can use."""
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
    row += [float(d in f.domains) for d in _DOMAINS]
    return row


class LearnedRouter:
    """A tier scorer (see tierwise.evals.sweep.TierScorer) learned from outcomes."""

    def __init__(self, *, n_features: int = 2**18, c: float = 1.0, min_positive: int = 2) -> None:
        self.n_features = n_features
        self.c = c
        self.min_positive = min_positive

    def _matrix(self, records: Sequence[EvalRecord]) -> csr_matrix:
        from scipy.sparse import csr_matrix, hstack

        texts, dense = [], []
        for record in records:
            request = to_request(record)
            texts.append(request.all_text())
            features = extract_features(request, domain_patterns=_DOMAINS, blacklist_patterns={})
            dense.append(dense_features(features))
        words = self.vectorizer_.transform(texts)
        if not hasattr(self, "tfidf_"):
            raise RuntimeError("fit before transforming")
        weighted = self.tfidf_.transform(words)
        scaled = (np.asarray(dense) - self.dense_mean_) / self.dense_scale_
        return hstack([weighted, csr_matrix(scaled)]).tocsr()

    def fit(self, records: Sequence[EvalRecord], table: OutcomeTable) -> LearnedRouter:
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
        from sklearn.linear_model import LogisticRegression

        self.vectorizer_ = HashingVectorizer(
            n_features=self.n_features, ngram_range=(1, 2), alternate_sign=False, norm=None
        )
        texts = [to_request(r).all_text() for r in records]
        self.tfidf_ = TfidfTransformer(sublinear_tf=True).fit(self.vectorizer_.transform(texts))
        dense = np.asarray(
            [
                dense_features(
                    extract_features(to_request(r), domain_patterns=_DOMAINS, blacklist_patterns={})
                )
                for r in records
            ]
        )
        self.dense_mean_ = dense.mean(axis=0)
        self.dense_scale_ = dense.std(axis=0) + 1e-6
        x = self._matrix(records)
        premium = table.scores[:, -1:]
        labels = table.scores[:, :-1] >= premium - 1e-9
        self.models_: list[Any] = []
        for j in range(labels.shape[1]):
            y = labels[:, j]
            if y.sum() < self.min_positive or (~y).sum() < self.min_positive:
                # Too few examples of one kind to learn from: predict the base rate.
                self.models_.append(float(y.mean()))
                continue
            model = LogisticRegression(C=self.c, max_iter=2000, solver="liblinear")
            self.models_.append(model.fit(x, y))
        return self

    def predict(self, records: Sequence[EvalRecord]) -> FloatArray:
        x = self._matrix(records)
        out = np.zeros((len(records), len(self.models_)))
        for j, model in enumerate(self.models_):
            out[:, j] = model if isinstance(model, float) else model.predict_proba(x)[:, 1]
        return out
