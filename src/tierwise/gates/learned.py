"""The learned gate: P(this answer is as good as premium's | prompt, answer), per non-premium tier.

Trained from routing eval sets that kept the models' answers: for each prompt and each non-premium tier, the
tier's recorded answer is an example, labelled 1 when its score is at least premium's. The representation is
TF-IDF over the answer's words and word pairs and over the prompt's words (kept apart by a prefix), plus a few
numbers about the answer (its length, its length against the prompt's, code fences, a refusal opening,
whether it was cut at the token limit). One logistic regression per tier; predicting is numpy only, so the
same gate runs offline on recorded answers and live in the proxy. Saved as ``.twg`` (a NumPy archive, no
pickle).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tierwise.config import GateSpec
from tierwise.errors import ConfigError
from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import FloatArray, OutcomeTable
from tierwise.gates.base import GateVerdict
from tierwise.gates.programmatic import no_refusal
from tierwise.messages import ChatRequest, ChatResponse

FORMAT = "tierwise-gate/1"
_TOKEN = re.compile(r"\w+")
DENSE = ("log_answer_chars", "answer_to_prompt", "code_fences", "lines", "refusal", "truncated", "empty")


def _terms(prompt: str, answer: str) -> list[str]:
    a = _TOKEN.findall(answer.lower())
    p = _TOKEN.findall(prompt.lower())
    return [
        *("a:" + w for w in a),
        *("a:" + x + " " + y for x, y in itertools.pairwise(a)),
        *("p:" + w for w in p),
    ]


def _dense(prompt: str, answer: str, finish_reason: str) -> list[float]:
    refused = no_refusal(ChatRequest(messages=[]), ChatResponse(id="", model="", content=answer))[0] is False
    return [
        math.log1p(len(answer)),
        math.log1p(len(answer)) - math.log1p(len(prompt)),
        float(answer.count("```") // 2),
        math.log1p(answer.count("\n")),
        float(refused),
        float(finish_reason == "length"),
        float(not answer.strip()),
    ]


class AnswerScorer:
    """scikit-learn style: ``fit(records, table)`` on recorded answers, ``predict(prompt, answer, tier)``."""

    def __init__(self, *, min_df: int = 2, max_terms: int = 100_000, c: float = 1.0) -> None:
        self.min_df = min_df
        self.max_terms = max_terms
        self.c = c

    def _vector(
        self, prompt: str, answer: str, finish: str
    ) -> tuple[np.ndarray[Any, Any], FloatArray, FloatArray]:
        counts: dict[int, int] = {}
        for term in _terms(prompt, answer):
            i = self.vocabulary_.get(term)
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        val = np.fromiter((1 + math.log(c) for c in counts.values()), dtype=np.float64, count=len(counts))
        val = val * self.idf_[idx]
        norm = float(np.sqrt(val @ val)) or 1.0
        dense = (np.asarray(_dense(prompt, answer, finish)) - self.dense_mean_) / self.dense_scale_
        return idx, val / norm, dense

    def fit(self, records: Sequence[EvalRecord], table: OutcomeTable) -> AnswerScorer:
        from scipy.sparse import csr_matrix, hstack
        from sklearn.linear_model import LogisticRegression

        tiers = len(table.models) - 1
        examples: list[tuple[int, str, str]] = []  # (tier, prompt, answer)
        labels: list[bool] = []
        for i, record in enumerate(records):
            prompt = "\n".join(str(m.get("content", "")) for m in record.messages)
            for j in range(tiers):
                answer = record.outcomes[table.models[j]].response
                if answer is None:
                    continue
                examples.append((j, prompt, answer))
                labels.append(bool(table.scores[i, j] >= table.scores[i, -1] - 1e-9))
        if not examples:
            raise ValueError(
                "the data kept no answers (response is null everywhere): a learned gate needs them"
            )
        df: dict[str, int] = {}
        for _, prompt, answer in examples:
            for term in set(_terms(prompt, answer)):
                df[term] = df.get(term, 0) + 1
        kept = sorted((t for t, d in df.items() if d >= self.min_df), key=lambda t: (-df[t], t))[
            : self.max_terms
        ]
        self.vocabulary_ = {t: i for i, t in enumerate(kept)}
        n = len(examples)
        self.idf_ = np.log((1 + n) / (1 + np.asarray([df[t] for t in kept], dtype=np.float64))) + 1
        dense_raw = np.asarray([_dense(p, a, "stop") for _, p, a in examples])
        self.dense_mean_ = dense_raw.mean(axis=0)
        self.dense_scale_ = dense_raw.std(axis=0) + 1e-6
        width = len(kept) + len(DENSE)
        self.coef_ = np.zeros((tiers, width))
        self.intercept_ = np.zeros(tiers)
        y_all = np.asarray(labels)
        tier_of = np.asarray([j for j, _, _ in examples])
        rows = [self._vector(p, a, "stop") for _, p, a in examples]
        for j in range(tiers):
            mine = np.flatnonzero(tier_of == j)
            y = y_all[mine]
            if len(mine) == 0 or y.all() or not y.any():
                rate = min(max(float(y.mean()) if len(mine) else 0.5, 1e-6), 1 - 1e-6)
                self.intercept_[j] = math.log(rate / (1 - rate))
                continue
            indptr = np.cumsum([0, *(len(rows[k][0]) for k in mine)])
            text = csr_matrix(
                (
                    np.concatenate([rows[k][1] for k in mine]),
                    np.concatenate([rows[k][0] for k in mine]),
                    indptr,
                ),
                shape=(len(mine), len(kept)),
            )
            x = hstack([text, csr_matrix(np.vstack([rows[k][2] for k in mine]))]).tocsr()
            model = LogisticRegression(C=self.c, max_iter=2000, solver="liblinear").fit(x, y)
            self.coef_[j], self.intercept_[j] = model.coef_[0], model.intercept_[0]
        self.models_ = tuple(table.models)
        return self

    def predict(self, prompt: str, answer: str, tier: int, finish_reason: str = "stop") -> float:
        idx, val, dense = self._vector(prompt, answer, finish_reason)
        w = self.coef_[tier]
        z = float(w[idx] @ val + w[len(self.vocabulary_) :] @ dense + self.intercept_[tier])
        return 1.0 / (1.0 + math.exp(-z))

    def predict_table(self, records: Sequence[EvalRecord], table: OutcomeTable) -> FloatArray:
        """Scores of every recorded non-premium answer, shape (n, tiers - 1); 0 where no answer was kept."""
        out = np.zeros((len(records), len(table.models) - 1))
        for i, record in enumerate(records):
            prompt = "\n".join(str(m.get("content", "")) for m in record.messages)
            for j in range(out.shape[1]):
                answer = record.outcomes[table.models[j]].response
                out[i, j] = self.predict(prompt, answer, j) if answer is not None else 0.0
        return out

    # ---- artifact ----

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        meta = {
            "format": FORMAT,
            "models": list(self.models_),
            "dense": list(DENSE),
            "hyperparameters": {"min_df": self.min_df, "max_terms": self.max_terms, "c": self.c},
            **(extra or {}),
        }
        from tierwise.classify.artifact import write_archive

        arrays = {
            "idf": self.idf_,
            "coef": self.coef_.astype(np.float32),
            "intercept": self.intercept_,
            "dense_mean": self.dense_mean_,
            "dense_scale": self.dense_scale_,
        }
        return write_archive(path, meta, self.vocabulary_, arrays)

    @classmethod
    def load(cls, path: str | Path) -> AnswerScorer:
        p = Path(path).expanduser()
        try:
            with np.load(p, allow_pickle=False) as archive:
                meta = orjson.loads(archive["meta"].tobytes())
                if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                    raise ConfigError(
                        f"{p}: not a {FORMAT} gate artifact; train one with `tierwise train-gate`"
                    )
                if meta.get("dense") != list(DENSE):
                    raise ConfigError(f"{p}: trained on other answer features than this tierwise computes")
                scorer = cls(**meta["hyperparameters"])
                scorer.vocabulary_ = {
                    t: i for i, t in enumerate(orjson.loads(archive["vocabulary"].tobytes()))
                }
                scorer.idf_ = archive["idf"]
                scorer.coef_ = archive["coef"].astype(np.float64)
                scorer.intercept_ = archive["intercept"]
                scorer.dense_mean_ = archive["dense_mean"]
                scorer.dense_scale_ = archive["dense_scale"]
                scorer.models_ = tuple(meta["models"])
        except ConfigError:
            raise
        except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{p}: cannot read the gate artifact ({exc.__class__.__name__}: {exc})"
            ) from None
        return scorer


class LearnedGate:
    """The learned gate in a cascade: passes when P(as good as premium) reaches the threshold.

    In a cascade the gate is told the position of the answering tier (``check_at``: 0 the cheapest), so the
    config's model names need not match the training data's. Called as a plain gate (``check``), it tells the
    tier by the answering model's name, and scores a model it was not trained on as the cheapest tier."""

    name = "learned"

    def __init__(self, scorer: AnswerScorer, threshold: float) -> None:
        self.scorer = scorer
        self.threshold = threshold

    @classmethod
    def from_spec(cls, spec: GateSpec) -> LearnedGate:
        assert spec.artifact is not None
        return cls(AnswerScorer.load(spec.artifact), spec.threshold)

    async def check(self, request: ChatRequest, response: ChatResponse) -> GateVerdict:
        tiers = self.scorer.models_[:-1]
        return await self.check_at(
            request, response, tiers.index(response.model) if response.model in tiers else 0
        )

    async def check_at(self, request: ChatRequest, response: ChatResponse, tier: int) -> GateVerdict:
        """Judge ``response`` as the answer of the ``tier``-th tier (0: the cheapest); a tier past the ones
        the gate was trained for is scored as the highest of them."""
        prompt = "\n".join(m.text() for m in request.messages)
        tier = max(0, min(tier, len(self.scorer.models_) - 2))
        score = self.scorer.predict(prompt, response.content or "", tier, response.finish_reason)
        passed = score >= self.threshold
        return GateVerdict(self.name, passed, score, f"P(as good as premium) = {score:.2f}")
