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

import dataclasses
import functools
import itertools
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tierwise.classify.families import (
    K_GRID,
    MIN_RISK,
    PRIOR_GRID,
    RISKS,
    Boosted,
    Neighbours,
    base_rate,
    check_family,
    fit_logreg,
    learnable,
    logreg_proba,
    nearest_others,
    neighbour_means,
    routing_scores,
    scores_from_risk,
    unit_rows,
)
from tierwise.config import TASK_TYPES
from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import FloatArray, OutcomeTable
from tierwise.features import Features, KeywordSet, TextWords, extract_features, keyword_pattern
from tierwise.messages import ChatRequest, Message

_TOKEN = re.compile(r"\w+")
_BLANK_LINE = re.compile(r"\n\s*\n")
Encoder = Callable[[Sequence[str]], Any]  # texts -> (len(texts), dimension) array of sentence embeddings
# The quality targets whose mean saving the knn family's leave-one-out search maximises.
SELECTION_TARGETS = (0.9, 0.925, 0.95, 0.975)
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


def query_text(request: ChatRequest) -> str:
    """What a sentence encoder reads of a request: the last block (after the last blank line) of the last user
    message, the request's own question. A few-shot prompt repeats the same worked examples before every
    question, and an encoder that reads only its first few hundred tokens would see nothing else."""
    users = [m.text() for m in request.messages if m.role == "user"]
    text = users[-1] if users else request.all_text()
    blocks = [b for b in _BLANK_LINE.split(text) if b.strip()]
    return blocks[-1].strip() if blocks else text


def request_features(request: ChatRequest) -> Features:
    return extract_features(request, domain_patterns=_DOMAINS, blacklist_patterns={})


def own_features(request: ChatRequest, features: Features) -> Features:
    """request_features(request) from ``features`` the engine extracted with the config's keyword sets: the
    rest is the same, so only the router's own domains are matched again (and what no router reads is
    dropped). Saves the proxy a second extraction per request."""
    words = TextWords.of(request.all_text())
    domains = tuple(name for name, pattern in _DOMAINS.items() if pattern.matches(words))
    return dataclasses.replace(features, domains=domains, user_tier=None, blacklist_hits=())


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
    the text), ``text_only`` (no request features: the plain TF-IDF baseline), ``cost_aware`` and ``risk``
    (how the cost-aware score prices a tier's quality risk: families.RISKS, or "auto").

    For ``knn``, ``k`` / ``prior`` None and ``risk="auto"`` are chosen in fit by leave-one-out on the training
    set: the values whose out-of-fold routing saves most at the SELECTION_TARGETS quality levels; the chosen
    ones are ``k_``, ``prior_``, ``risk_``. Other families use k = 30, prior = 1/3 and the binary risk.

    ``encoder`` (knn only): a callable turning texts into sentence embeddings (tierwise.classify.embeddings
    makes one from a local sentence-transformers model); the neighbours' similarity then mixes the TF-IDF
    cosine with the cosine of the embeddings of each prompt's query_text, the latter with weight
    ``embedding_weight``.
    """

    def __init__(
        self,
        *,
        min_df: int = 2,
        max_terms: int = 200_000,
        c: float = 1.0,
        min_examples: int = 2,
        family: str = "knn",
        k: int | None = None,
        prior: float | None = None,
        components: int = 32,
        dense_weight: float = 0.3,
        text_only: bool = False,
        cost_aware: bool = True,
        risk: str = "auto",
        encoder: Encoder | None = None,
        embedding_weight: float = 0.5,
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
        self.risk = risk
        self.encoder = encoder
        self.embedding_weight = embedding_weight

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

    def _embed(self, texts: Sequence[str]) -> FloatArray | None:
        """The encoder's embeddings of ``texts`` (query_text of each), checked; None without an encoder."""
        if self.encoder is None:
            return None
        out = np.asarray(self.encoder(list(texts)), dtype=np.float64)
        if out.ndim != 2 or out.shape[0] != len(texts):
            raise ValueError(
                f"the encoder must return one embedding row per text: got shape {out.shape} "
                f"for {len(texts)} texts"
            )
        width = getattr(self, "embedding_dimension_", out.shape[1])
        if out.shape[1] != width:
            raise ValueError(
                f"the encoder gives {out.shape[1]}-dimensional embeddings, the router has {width}"
            )
        if not np.all(np.isfinite(out)):
            raise ValueError("the encoder returned non-finite embeddings")
        return out

    # ---- fitting ----

    def _check(self) -> None:
        check_family(self.family)
        if self.risk not in ("auto", *RISKS):
            raise ValueError(f"unsupported risk {self.risk!r}; choose auto, {', '.join(RISKS)}")
        if self.risk == "signed" and self.family != "knn":
            raise ValueError("the signed risk needs the knn family (its neighbours give the shortfall)")
        if self.encoder is not None and self.family != "knn":
            raise ValueError("sentence embeddings (encoder) are used by the knn family only")
        if not 0.0 <= self.embedding_weight <= 1.0:
            raise ValueError(f"embedding_weight must be in [0, 1], got {self.embedding_weight}")

    def fit(self, records: Sequence[EvalRecord], table: OutcomeTable) -> LearnedRouter:
        from scipy.sparse import csr_matrix, hstack

        self._check()
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
        # A tier that never answered as well as premium is never a choice (families.routing_scores).
        self.usable_: npt.NDArray[np.bool_] = (
            np.asarray(labels.any(axis=0)) if n else np.ones(labels.shape[1], dtype=bool)
        )
        shortfall = table.scores[:, -1:] - table.scores[:, :-1]
        self.shortfall_mean_ = shortfall.mean(axis=0) if n else np.zeros(labels.shape[1])
        self.k_ = self.k if self.k is not None else 30
        self.prior_ = self.prior if self.prior is not None else 1 / 3
        self.risk_ = "binary" if self.risk == "auto" else self.risk
        if self.family in ("logreg", "blend"):
            self.coef_, self.intercept_ = fit_logreg(x, labels, self.c, self.min_examples)
        embedded = self._embed([query_text(record_request(r)) for r in records])
        if embedded is not None:
            self.embedding_dimension_ = embedded.shape[1]
        if self.family in ("knn", "blend"):
            targets = labels.astype(np.float64)
            for j in range(labels.shape[1]):
                if not learnable(labels[:, j], self.min_examples):
                    targets[:, j] = self.base_rate_[j]
            # Each neighbour tells, per tier, its 0/1 label and its shortfall against premium.
            targets = np.hstack([targets, shortfall])
            self.neighbours_ = Neighbours.build(text, dense, targets, embedded, self.embedding_weight)
        if self.family == "gbdt":
            boosted = Boosted(self.components, self.base_rate_)
            self.boosted_ = boosted.fit(text, dense, labels, self.min_examples)
        if self.cost_aware:
            self._fit_costs(x, table, labels)
        if self.family == "knn" and n >= 8 and (self.k is None or self.prior is None or self.risk == "auto"):
            self._select(x, embedded, table, targets)
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

    def _select(self, x: Any, embedded: FloatArray | None, table: OutcomeTable, targets: FloatArray) -> None:
        """Choose k, prior and the risk (those not given) by leave-one-out: every training prompt is scored
        from its nearest *other* prompts, with costs from a ridge regression fitted without it (5 folds), and
        the choice is the one whose routing of the training set saves most, on average over the
        SELECTION_TARGETS quality levels (ties: the higher APGR). What is compared is exactly what the router
        predicts, only out of fold: nothing of a test set is read."""
        from tierwise.evals.metrics import Baselines, apgr, saving_at_quality
        from tierwise.evals.sweep import sweep

        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        unit = x.multiply(1.0 / np.where(norms > 0, norms, 1.0)[:, None]).tocsr()
        emb = None if embedded is None else unit_rows(embedded)
        idx, sims = nearest_others(unit, emb, self.embedding_weight)
        costs = self._out_of_fold_costs(x, table) if self.cost_aware else None
        base = np.concatenate([self.base_rate_, self.shortfall_mean_])
        baselines = Baselines.of(table)
        width = len(self.base_rate_)
        results: dict[tuple[int, float, str], tuple[float, float]] = {}
        for k in (self.k,) if self.k is not None else K_GRID:
            for prior in (self.prior,) if self.prior is not None else PRIOR_GRID:
                estimates = neighbour_means(idx, sims, targets, k, prior, base)
                p, short = estimates[:, :width], estimates[:, width:]
                risks = (self.risk,) if self.risk != "auto" else RISKS if self.cost_aware else ("binary",)
                for risk in risks:
                    if costs is None:
                        scores = p
                    else:
                        scores = np.vstack(
                            [self._scores(p[i], short[i], costs[i], risk) for i in range(len(p))]
                        )
                    curve = [point for _, point in sweep(table, scores)]
                    saving = float(
                        np.mean([saving_at_quality(curve, baselines, q) for q in SELECTION_TARGETS])
                    )
                    results[(k, prior, risk)] = (saving, apgr(curve, baselines))
        self.k_, self.prior_, self.risk_ = max(results, key=results.__getitem__)
        self.selection_ = results

    def _out_of_fold_costs(self, x: Any, table: OutcomeTable, folds: int = 5) -> FloatArray:
        from sklearn.linear_model import Ridge

        log_cost = np.log(np.maximum(table.costs, 1e-12))
        out = np.zeros_like(log_cost)
        order = np.random.default_rng(0).permutation(table.n)
        for f in range(folds):
            held = order[f::folds]
            kept = np.setdiff1d(order, held)
            out[held] = Ridge(alpha=1.0).fit(x[kept], log_cost[kept]).predict(x[held]).reshape(len(held), -1)
        return np.exp(out)

    def _scores(
        self, p: FloatArray, shortfall: FloatArray | None, costs: FloatArray, risk: str
    ) -> FloatArray:
        """The cost-aware routing scores of one prompt from its estimates and predicted costs."""
        if risk == "signed" and shortfall is not None:
            return scores_from_risk(np.maximum(shortfall, MIN_RISK), costs, self.kappa_, self.usable_)
        return routing_scores(p, costs, self.risk_scale_, self.kappa_, self.usable_)

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
            "base_rate": self.base_rate_, "usable": self.usable_, "shortfall_mean": self.shortfall_mean_,
            "k": np.asarray(self.k_), "prior": np.asarray(self.prior_), "risk": np.asarray(self.risk_),
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
        self._check()
        self.idf_ = np.asarray(arrays["idf"], dtype=np.float64)
        self.dense_mean_ = np.asarray(arrays["dense_mean"], dtype=np.float64)
        self.dense_scale_ = np.asarray(arrays["dense_scale"], dtype=np.float64)
        self.base_rate_ = np.asarray(arrays["base_rate"], dtype=np.float64)
        self.usable_ = np.asarray(arrays["usable"], dtype=bool)
        self.shortfall_mean_ = np.asarray(arrays["shortfall_mean"], dtype=np.float64)
        self.k_ = int(arrays["k"])
        self.prior_ = float(arrays["prior"])
        self.risk_ = str(arrays["risk"])
        if self.risk_ not in RISKS:
            raise ValueError(f"unknown risk {self.risk_!r}")
        if self.family in ("logreg", "blend"):
            self.coef_ = np.asarray(arrays["coef"], dtype=np.float64)
            self.intercept_ = np.asarray(arrays["intercept"], dtype=np.float64)
        if self.family in ("knn", "blend"):
            self.neighbours_ = Neighbours.from_arrays(arrays)
            if self.neighbours_.embedded is not None:
                self.embedding_dimension_ = self.neighbours_.embedded.shape[1]
        if self.cost_aware:
            self.cost_coef_ = np.asarray(arrays["cost_coef"], dtype=np.float64)
            self.cost_intercept_ = np.asarray(arrays["cost_intercept"], dtype=np.float64)
            self.risk_scale_ = np.asarray(arrays["risk_scale"], dtype=np.float64)
            self.kappa_ = float(arrays["kappa"])

    # ---- predicting ----

    def proba_request(self, request: ChatRequest, features: Features | None = None) -> FloatArray:
        """P(tier j answers as well as premium) for one request."""
        return self._estimates(*self._row(request, features))[0]

    def predict_request(self, request: ChatRequest, features: Features | None = None) -> FloatArray:
        """The routing score per non-premium tier for one request: the proxy's hot path. ``features`` may be
        the engine's own, already computed for the request (as request_features computes them)."""
        row = self._row(request, features)
        return self._score(row, *self._estimates(*row))

    def score_and_proba_request(
        self, request: ChatRequest, features: Features | None = None
    ) -> tuple[FloatArray, FloatArray]:
        """Both the routing scores and the probabilities for one request, from one pass over its text
        (``features`` as predict_request takes them)."""
        row = self._row(request, features)
        p, shortfall = self._estimates(*row)
        return self._score(row, p, shortfall), p

    def predict_proba(self, records: Sequence[EvalRecord]) -> FloatArray:
        """P(tier j answers as well as premium), shape (n, tiers - 1)."""
        return self._batch(records, scores=False)

    def predict(self, records: Sequence[EvalRecord]) -> FloatArray:
        """Routing scores, shape (n, tiers - 1): the probabilities, or with cost_aware the cost-aware ones."""
        return self._batch(records, scores=True)

    Row = tuple[npt.NDArray[np.int64], FloatArray, FloatArray, FloatArray | None]

    def _row(self, request: ChatRequest, features: Features | None) -> Row:
        idx, val = self._weighted(term_frequencies(request.all_text(), self.vocabulary_))
        dense = self._scaled(np.asarray(dense_features(features or request_features(request))))
        embedded = self._embed([query_text(request)]) if self._uses_embeddings() else None
        return idx, val, dense, None if embedded is None else embedded[0]

    def _uses_embeddings(self) -> bool:
        neighbours = getattr(self, "neighbours_", None)
        return neighbours is not None and neighbours.embedded is not None

    def _estimates(
        self, idx: npt.NDArray[np.int64], val: FloatArray, dense: FloatArray, embedded: FloatArray | None
    ) -> tuple[FloatArray, FloatArray | None]:
        """P(tier j will do) per tier, and with knn the neighbours' mean shortfall against premium."""
        check_family(self.family)
        if self.family == "gbdt":
            one: FloatArray = self.boosted_.proba(self._text_one(idx, val), dense[None, :])[0]
            return one, None
        width = len(self.base_rate_)
        parts, shortfall = [], None
        if self.family in ("logreg", "blend"):
            parts.append(logreg_proba(self.coef_, self.intercept_, idx, val, dense))
        if self.family in ("knn", "blend"):
            sims = self.neighbours_.similarities(idx, val, dense, embedded)
            base = np.concatenate([self.base_rate_, self.shortfall_mean_])
            both = self.neighbours_.proba(sims, self.k_, self.prior_, base)
            parts.append(both[:width])
            shortfall = both[width:]
        out: FloatArray = parts[0] if len(parts) == 1 else np.mean(parts, axis=0)
        return out, shortfall

    def _text_one(self, idx: npt.NDArray[np.int64], val: FloatArray) -> Any:
        from scipy.sparse import csr_matrix

        return csr_matrix((val, idx, [0, len(idx)]), shape=(1, len(self.vocabulary_)))

    def _score(self, row: Row, p: FloatArray, shortfall: FloatArray | None) -> FloatArray:
        if not self.cost_aware:
            return p
        idx, val, dense, _ = row
        n_terms = len(self.vocabulary_)
        log_cost = self.cost_coef_[:, idx] @ val + self.cost_coef_[:, n_terms:] @ dense + self.cost_intercept_
        return self._scores(p, shortfall, np.exp(log_cost), self.risk_)

    def _batch(self, records: Sequence[EvalRecord], *, scores: bool) -> FloatArray:
        width = len(self.base_rate_)
        if not records:
            return np.zeros((0, width))
        parsed = [parsed_record(r) for r in records]
        frequencies = [known_frequencies(c, self.vocabulary_) for c, _ in parsed]
        embedded = (
            self._embed([query_text(record_request(r)) for r in records]) if self._uses_embeddings() else None
        )
        rows: list[LearnedRouter.Row] = [
            (
                *self._weighted(f),
                self._scaled(np.asarray(d, dtype=np.float64)),
                None if embedded is None else embedded[i],
            )
            for i, (f, (_, d)) in enumerate(zip(frequencies, parsed, strict=True))
        ]
        if self.family == "gbdt":
            dense = np.vstack([row[2] for row in rows])
            probs = self.boosted_.proba(self._text(frequencies), dense)
            if scores and self.cost_aware:
                probs = np.vstack([self._score(row, p, None) for row, p in zip(rows, probs, strict=True)])
            return probs.reshape(len(records), width)
        out = []
        for row in rows:
            p, shortfall = self._estimates(*row)
            out.append(self._score(row, p, shortfall) if scores else p)
        return np.vstack(out).reshape(len(records), width)
