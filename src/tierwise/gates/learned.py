"""The learned gate: P(this answer is as good as premium's | prompt, answer), per non-premium tier.

Trained from routing eval sets that kept the models' answers: for each prompt and each non-premium tier, the
tier's recorded answer is an example, labelled 1 when its score is at least premium's. The representation is
TF-IDF over the answer's words and word pairs and over the prompt's words (kept apart by a prefix), plus
numbers about the answer that mean the same on any data (``ANSWER_FEATURES``: its length, against the
prompt's too, code fences, a refusal opening, hedging, an answer that only restates the prompt, repetition,
code missing where code was asked, a bare option label where the prompt lists options, a cut at the token
limit) and, for a tier above the cheapest, how far it agrees with the answer of the tier just below
(``JUNIOR_FEATURES``), which a cascade from the cheapest tier has in hand when it judges that tier.

Per tier there are two logistic regressions: one that sees the junior's answer and one that does not (used
when the junior's answer is not known, e.g. a cascade that starts above the cheapest tier). Their inverse
regularisation is chosen per tier by inner cross-validation on the training answers (log loss), and their
scores are then recalibrated (Platt scaling) on those inner out-of-fold scores, so that a threshold means
about the same on the scores of a gate trained on fewer answers. Predicting is numpy only, so the same gate
runs offline on recorded answers and live in the proxy. Saved as ``.twg`` (a NumPy archive, no pickle).
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

FORMAT = "tierwise-gate/2"
_TOKEN = re.compile(r"\w+")
ANSWER_FEATURES = (
    "log_answer_chars",
    "answer_to_prompt",
    "code_fences",
    "lines",
    "refusal",
    "truncated",
    "empty",
    "hedges",
    "restated",
    "repetition",
    "code_missing",
    "choice_prompt",
    "choice_answered",
)
JUNIOR_FEATURES = ("junior_same", "junior_overlap", "junior_length_ratio")
DENSE = ANSWER_FEATURES + JUNIOR_FEATURES
C_GRID = (0.3, 1.0, 3.0)

_HEDGES = re.compile(
    r"\b(?:i'?m not (?:sure|certain)|not (?:entirely )?sure|i think|i believe|maybe|perhaps|possibly|"
    r"might be|it depends|i don'?t know|hard to say|cannot (?:be )?determined?|unclear|as an ai|"
    r"i'?m unable|i cannot|i can'?t|i apologi[sz]e|without more (?:context|information))\b"
)
_CODE_ASKED = re.compile(
    r"\b(?:function|code|python|program|script|implement|javascript|sql|regex|class|method|algorithm)\b"
)
_CODE_GIVEN = re.compile(r"```|^\s*(?:def|class|import|from|return|function|const|let|var|public)\b", re.M)
_OPTION = re.compile(r"^\s*\(?([A-Ha-h1-9])[\).:]\s+\S", re.M)
_ANSWER_LABEL = re.compile(
    r"^\W*(?:(?:the )?(?:correct )?answer(?: is)?\W*)?\(?([A-Ha-h1-9])\)?(?:[\).:,\s]|$)", re.I
)


def _last_block(prompt: str) -> str:
    """The last blank-line block of the prompt: where a few-shot prompt's own question sits."""
    blocks = [b for b in re.split(r"\n\s*\n", prompt.strip()) if b.strip()]
    return blocks[-1] if blocks else ""


def _label(answer: str, options: set[str]) -> str | None:
    """The option an answer gives when it is (little more than) an option label, else None."""
    if len(answer) > 80:
        return None
    match = _ANSWER_LABEL.match(answer.strip())
    if match is None or match.group(1).upper() not in options:
        return None
    return match.group(1).upper()


def _terms(prompt: str, answer: str) -> list[str]:
    a = _TOKEN.findall(answer.lower())
    p = _TOKEN.findall(prompt.lower())
    return [
        *("a:" + w for w in a),
        *("a:" + x + " " + y for x, y in itertools.pairwise(a)),
        *("p:" + w for w in p),
    ]


def answer_features(prompt: str, answer: str, finish_reason: str = "stop") -> list[float]:
    """``ANSWER_FEATURES`` of one answer to ``prompt`` (every message's text, joined)."""
    refused = no_refusal(ChatRequest(messages=[]), ChatResponse(id="", model="", content=answer))[0] is False
    words = _TOKEN.findall(answer.lower())
    prompt_words = set(_TOKEN.findall(prompt.lower()))
    distinct = set(words)
    restated = len(distinct & prompt_words) / len(distinct) if len(distinct) >= 5 else 0.0
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    repetition = 1.0 - len(set(trigrams)) / len(trigrams) if len(trigrams) >= 20 else 0.0
    question = _last_block(prompt)
    options = {m.upper() for m in _OPTION.findall(question)}
    choice = len(options) >= 2
    code_missing = bool(_CODE_ASKED.search(question.lower())) and not _CODE_GIVEN.search(answer)
    return [
        math.log1p(len(answer)),
        math.log1p(len(answer)) - math.log1p(len(prompt)),
        float(answer.count("```") // 2),
        math.log1p(answer.count("\n")),
        float(refused),
        float(finish_reason == "length"),
        float(not answer.strip()),
        math.log1p(len(_HEDGES.findall(answer.lower()))),
        restated,
        repetition,
        float(code_missing),
        float(choice),
        float(choice and _label(answer, options) is not None),
    ]


def _normal(text: str) -> str:
    return " ".join(_TOKEN.findall(text.lower()))


def junior_features(prompt: str, answer: str, junior: str) -> list[float]:
    """``JUNIOR_FEATURES``: how far ``answer`` agrees with ``junior``, the answer of the tier below."""
    options = {m.upper() for m in _OPTION.findall(_last_block(prompt))}
    mine, theirs = _label(answer, options), _label(junior, options)
    same = (mine is not None and mine == theirs) or (
        bool(_normal(answer)) and _normal(answer) == _normal(junior)
    )
    a, b = set(_TOKEN.findall(answer.lower())), set(_TOKEN.findall(junior.lower()))
    overlap = len(a & b) / len(a | b) if a | b else 1.0
    return [float(same), overlap, math.log1p(len(answer)) - math.log1p(len(junior))]


def _prompt_text(record: EvalRecord) -> str:
    return "\n".join(str(m.get("content", "")) for m in record.messages)


def _sigmoid(z: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -35, 35))))


class AnswerScorer:
    """scikit-learn style: ``fit(records, table)`` on recorded answers, ``predict(prompt, answer, tier)``.

    ``c``: the logistic regressions' inverse regularisation; None (the default) chooses it per tier and per
    model from ``C_GRID`` by ``inner_folds``-fold cross-validation. ``calibrate``: Platt-scale each model's
    scores on its inner out-of-fold scores."""

    def __init__(
        self,
        *,
        min_df: int = 2,
        max_terms: int = 100_000,
        c: float | None = None,
        inner_folds: int = 3,
        calibrate: bool = True,
        junior: bool = True,
    ) -> None:
        self.min_df = min_df
        self.max_terms = max_terms
        self.c = c
        self.inner_folds = inner_folds
        self.calibrate = calibrate
        self.junior = junior

    def _vector(
        self, prompt: str, answer: str, finish: str, junior: str | None
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
        raw = answer_features(prompt, answer, finish)
        raw += junior_features(prompt, answer, junior) if junior is not None else [0.0] * len(JUNIOR_FEATURES)
        dense = (np.asarray(raw) - self.dense_mean_) / self.dense_scale_
        if junior is None:
            dense[len(ANSWER_FEATURES) :] = 0.0
        return idx, val / norm, dense

    def fit(self, records: Sequence[EvalRecord], table: OutcomeTable) -> AnswerScorer:
        from scipy.sparse import csr_matrix, hstack

        tiers = len(table.models) - 1
        examples: list[tuple[int, str, str, str | None]] = []  # (tier, prompt, answer, junior's answer)
        labels: list[bool] = []
        for i, record in enumerate(records):
            prompt = _prompt_text(record)
            for j in range(tiers):
                answer = record.outcomes[table.models[j]].response
                if answer is None:
                    continue
                junior = record.outcomes[table.models[j - 1]].response if j > 0 else None
                examples.append((j, prompt, answer, junior))
                labels.append(bool(table.scores[i, j] >= table.scores[i, -1] - 1e-9))
        if not examples:
            raise ValueError(
                "the data kept no answers (response is null everywhere): a learned gate needs them"
            )
        df: dict[str, int] = {}
        for _, prompt, answer, _ in examples:
            for term in set(_terms(prompt, answer)):
                df[term] = df.get(term, 0) + 1
        kept = sorted((t for t, d in df.items() if d >= self.min_df), key=lambda t: (-df[t], t))[
            : self.max_terms
        ]
        self.vocabulary_ = {t: i for i, t in enumerate(kept)}
        n = len(examples)
        self.idf_ = np.log((1 + n) / (1 + np.asarray([df[t] for t in kept], dtype=np.float64))) + 1
        plain = np.asarray([answer_features(p, a, "stop") for _, p, a, _ in examples])
        with_junior = [junior_features(p, a, jr) for _, p, a, jr in examples if jr is not None]
        juniors = np.asarray(with_junior) if with_junior else np.zeros((1, len(JUNIOR_FEATURES)))
        self.dense_mean_ = np.concatenate([plain.mean(axis=0), juniors.mean(axis=0)])
        self.dense_scale_ = np.concatenate([plain.std(axis=0), juniors.std(axis=0)]) + 1e-6
        width = len(kept) + len(DENSE)
        # coef_[0]: the model without the junior's answer; coef_[1]: with it (the same as [0] for tier 0).
        self.coef_ = np.zeros((2, tiers, width))
        self.intercept_ = np.zeros((2, tiers))
        self.platt_ = np.tile(np.asarray([1.0, 0.0]), (2, tiers, 1))
        self.chosen_c_ = np.zeros((2, tiers))
        y_all = np.asarray(labels)
        tier_of = np.asarray([j for j, _, _, _ in examples])
        for context in (0, 1):
            if context and not self.junior:
                self.coef_[1], self.intercept_[1] = self.coef_[0], self.intercept_[0]
                self.platt_[1], self.chosen_c_[1] = self.platt_[0], self.chosen_c_[0]
                break
            for j in range(tiers):
                mine = np.flatnonzero(tier_of == j)
                if context:
                    # The model that sees the junior's answer learns from the examples that have one: a
                    # missing answer here and there does not turn it off for the whole tier.
                    mine = np.asarray([k for k in mine if examples[k][3] is not None], dtype=np.int64)
                if context and (j == 0 or len(mine) == 0):
                    self.coef_[1, j], self.intercept_[1, j] = self.coef_[0, j], self.intercept_[0, j]
                    self.platt_[1, j], self.chosen_c_[1, j] = self.platt_[0, j], self.chosen_c_[0, j]
                    continue
                y = y_all[mine]
                if len(mine) == 0 or y.all() or not y.any():
                    rate = min(max(float(y.mean()) if len(mine) else 0.5, 1e-6), 1 - 1e-6)
                    self.intercept_[context, j] = math.log(rate / (1 - rate))
                    continue
                rows = [
                    self._vector(examples[k][1], examples[k][2], "stop", examples[k][3] if context else None)
                    for k in mine
                ]
                indptr = np.cumsum([0, *(len(r[0]) for r in rows)])
                text = csr_matrix(
                    (np.concatenate([r[1] for r in rows]), np.concatenate([r[0] for r in rows]), indptr),
                    shape=(len(mine), len(kept)),
                )
                x = hstack([text, csr_matrix(np.vstack([r[2] for r in rows]))]).tocsr()
                c, platt, coef, intercept = self._fit_one(x, y)
                self.coef_[context, j], self.intercept_[context, j] = coef, intercept
                self.platt_[context, j], self.chosen_c_[context, j] = platt, c
        self.models_ = tuple(table.models)
        return self

    def _fit_one(self, x: Any, y: np.ndarray[Any, Any]) -> tuple[float, FloatArray, FloatArray, float]:
        """One tier's model: C by inner cross-validation (log loss), Platt scaling on the inner out-of-fold
        scores at that C, and the coefficients refitted on every example."""
        from sklearn.linear_model import LogisticRegression

        def fit(c: float, rows: np.ndarray[Any, Any]) -> Any:
            return LogisticRegression(C=c, max_iter=2000, solver="liblinear").fit(x[rows], y[rows])

        grid = [self.c] if self.c is not None else list(C_GRID)
        minority = int(min(y.sum(), len(y) - y.sum()))
        folds = min(self.inner_folds, minority)
        platt = np.asarray([1.0, 0.0])
        best_c = grid[len(grid) // 2] if self.c is None else self.c
        if folds >= 2 and (len(grid) > 1 or self.calibrate):
            # Stratified folds, deterministic: every fold sees both labels.
            order = np.argsort(y, kind="stable")
            fold_of = np.empty(len(y), dtype=np.int64)
            fold_of[order] = np.arange(len(y)) % folds
            margins = np.zeros((len(grid), len(y)))
            for f in range(folds):
                held = fold_of == f
                for g, c in enumerate(grid):
                    margins[g, held] = fit(c, np.flatnonzero(~held)).decision_function(x[held])
            losses = [_log_loss(y, _sigmoid(m)) for m in margins]
            best = int(np.argmin(losses))
            best_c = grid[best]
            if self.calibrate:
                platt = _platt(margins[best], y)
        model = fit(best_c, np.arange(len(y)))
        return best_c, platt, model.coef_[0], float(model.intercept_[0])

    def predict(
        self, prompt: str, answer: str, tier: int, finish_reason: str = "stop", junior: str | None = None
    ) -> float:
        """P(``answer``, the ``tier``-th tier's, is as good as premium's); ``junior``: the answer of the tier
        below, when known (a cascade from the cheapest tier knows it)."""
        context = int(junior is not None and tier > 0 and self.junior)
        idx, val, dense = self._vector(prompt, answer, finish_reason, junior if context else None)
        w = self.coef_[context, tier]
        z = float(w[idx] @ val + w[len(self.vocabulary_) :] @ dense + self.intercept_[context, tier])
        a, b = self.platt_[context, tier]
        return 1.0 / (1.0 + math.exp(-max(min(a * z + b, 35.0), -35.0)))

    def predict_table(
        self, records: Sequence[EvalRecord], table: OutcomeTable, *, juniors: bool = True
    ) -> FloatArray:
        """Scores of every recorded non-premium answer, shape (n, tiers - 1); 0 where no answer was kept.
        With ``juniors`` a tier's answer is judged knowing the recorded answer of the tier below, as a cascade
        from the cheapest tier judges it."""
        out = np.zeros((len(records), len(table.models) - 1))
        for i, record in enumerate(records):
            prompt = _prompt_text(record)
            for j in range(out.shape[1]):
                answer = record.outcomes[table.models[j]].response
                junior = record.outcomes[table.models[j - 1]].response if j > 0 and juniors else None
                out[i, j] = self.predict(prompt, answer, j, junior=junior) if answer is not None else 0.0
        return out

    # ---- artifact ----

    def save(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        meta = {
            "format": FORMAT,
            "models": list(self.models_),
            "dense": list(DENSE),
            "hyperparameters": {
                "min_df": self.min_df,
                "max_terms": self.max_terms,
                "c": self.c,
                "inner_folds": self.inner_folds,
                "calibrate": self.calibrate,
                "junior": self.junior,
            },
            "chosen_c": self.chosen_c_.tolist(),
            **(extra or {}),
        }
        from tierwise.classify.artifact import write_archive

        arrays = {
            "idf": self.idf_,
            "coef": self.coef_.astype(np.float32),
            "intercept": self.intercept_,
            "platt": self.platt_,
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
                    found = meta.get("format") if isinstance(meta, dict) else None
                    if isinstance(found, str) and found.startswith("tierwise-gate/"):
                        raise ConfigError(
                            f"{p}: a {found} gate artifact, from an older tierwise; this one reads {FORMAT}: "
                            "train it again with `tierwise train-gate`"
                        )
                    raise ConfigError(
                        f"{p}: not a {FORMAT} gate artifact; train one with `tierwise train-gate`"
                    )
                if meta.get("dense") != list(DENSE):
                    raise ConfigError(
                        f"{p}: trained on other answer features than this tierwise computes; train it again "
                        "with `tierwise train-gate`"
                    )
                scorer = cls(**meta["hyperparameters"])
                scorer.vocabulary_ = {
                    t: i for i, t in enumerate(orjson.loads(archive["vocabulary"].tobytes()))
                }
                scorer.idf_ = archive["idf"]
                scorer.coef_ = archive["coef"].astype(np.float64)
                scorer.intercept_ = archive["intercept"]
                scorer.platt_ = archive["platt"]
                scorer.dense_mean_ = archive["dense_mean"]
                scorer.dense_scale_ = archive["dense_scale"]
                scorer.chosen_c_ = np.asarray(meta.get("chosen_c", np.zeros(scorer.intercept_.shape)))
                scorer.models_ = tuple(meta["models"])
        except ConfigError:
            raise
        except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{p}: cannot read the gate artifact ({exc.__class__.__name__}: {exc})"
            ) from None
        return scorer


def _log_loss(y: np.ndarray[Any, Any], p: FloatArray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))


def _platt(margin: FloatArray, y: np.ndarray[Any, Any]) -> FloatArray:
    """(a, b) of P = sigmoid(a * margin + b), fitted by Newton's method on log loss with Platt's smoothed
    targets; the identity (1, 0) when the fit does not converge to a positive slope."""
    n_pos = float(y.sum())
    n_neg = len(y) - n_pos
    target = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    a, b = 1.0, 0.0
    for _ in range(100):
        p = _sigmoid(a * margin + b)
        w = p * (1 - p) + 1e-12
        grad = np.asarray([np.sum((p - target) * margin), np.sum(p - target)])
        hess = np.asarray(
            [[np.sum(w * margin * margin), np.sum(w * margin)], [np.sum(w * margin), np.sum(w)]]
        )
        hess += np.eye(2) * 1e-9
        step = np.linalg.solve(hess, grad)
        a, b = a - float(step[0]), b - float(step[1])
        if float(np.abs(step).max()) < 1e-9:
            break
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0:
        return np.asarray([1.0, 0.0])
    return np.asarray([a, b])


class LearnedGate:
    """The learned gate in a cascade: passes when P(as good as premium) reaches the threshold.

    In a cascade the gate is told the position of the answering tier (``check_at``: 0 the cheapest), so the
    config's model names need not match the training data's, and, where the cascade passes it, the answer of
    the tier below (``junior``). Called as a plain gate (``check``), it tells the tier by the answering
    model's name, and scores a model it was not trained on as the cheapest tier."""

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

    async def check_at(
        self, request: ChatRequest, response: ChatResponse, tier: int, junior: str | None = None
    ) -> GateVerdict:
        """Judge ``response`` as the answer of the ``tier``-th tier (0: the cheapest); a tier past the ones
        the gate was trained for is scored as the highest of them. ``junior``: the answer of the tier below,
        when the caller has it."""
        prompt = "\n".join(m.text() for m in request.messages)
        tier = max(0, min(tier, len(self.scorer.models_) - 2))
        score = self.scorer.predict(prompt, response.content or "", tier, response.finish_reason, junior)
        passed = score >= self.threshold
        return GateVerdict(self.name, passed, score, f"P(as good as premium) = {score:.2f}")
