"""The model families of the learned router (tierwise.classify.learned) and its cost-aware routing score.

Every family turns the same representation into P(tier j answers as well as premium), per non-premium tier:

- ``logreg``: one logistic regression per tier over the TF-IDF terms and the scaled request features.
- ``knn``: the k most cosine-similar training prompts; P is their similarity-weighted share of label 1, shrunk
  towards the tier's base rate by ``prior`` pseudo-neighbours (a prompt with no close neighbour gets the base
  rate, not a guess). The same neighbours also give the tier's expected shortfall against premium (the
  *signed* risk). k, prior and which risk to use are chosen in fit by leave-one-out on the training set
  (``select_neighbours``), unless given.
- ``gbdt``: gradient-boosted trees (scikit-learn's HistGradientBoostingClassifier) over the request features
  and a TruncatedSVD projection of the TF-IDF.
- ``blend``: the mean of ``logreg`` and ``knn``.

Fitting uses scikit-learn and scipy. Predicting ``logreg``, ``knn`` and ``blend`` is numpy only (what the
proxy runs on every request and what a saved artifact holds); ``gbdt`` predicts with its scikit-learn models.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from tierwise.evals.metrics import FloatArray

FAMILIES = ("logreg", "knn", "gbdt", "blend")
# How a tier's quality risk is estimated: "binary" = (1 - P(as good as premium)) x the tier's mean shortfall
# when worse; "signed" = the neighbours' mean of (premium's score - the tier's), so a prompt where the tier
# tends to beat premium counts as such (knn only).
RISKS = ("binary", "signed")
MIN_RISK = 0.01  # a signed risk never goes below this: the saving per unit of risk stays finite
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
F32Array = npt.NDArray[np.float32]


def check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unsupported learned router family {family!r}; choose one of {', '.join(FAMILIES)}")


def learnable(y: BoolArray, min_examples: int) -> bool:
    """Whether a tier has ``min_examples`` prompts of each label; if not, it predicts its base rate."""
    return int(y.sum()) >= min_examples and int((~y).sum()) >= min_examples


def base_rate(y: BoolArray) -> float:
    return min(max(float(y.mean()) if len(y) else 0.5, 1e-6), 1 - 1e-6)


# ---- logistic regression ----


def fit_logreg(x: Any, labels: BoolArray, c: float, min_examples: int) -> tuple[FloatArray, FloatArray]:
    """(coef, intercept), one row per tier; a tier it cannot learn gets the log-odds of its base rate."""
    from sklearn.linear_model import LogisticRegression

    coef = np.zeros((labels.shape[1], x.shape[1]))
    intercept = np.zeros(labels.shape[1])
    for j in range(labels.shape[1]):
        y = labels[:, j]
        if not learnable(y, min_examples):
            rate = base_rate(y)
            intercept[j] = math.log(rate / (1 - rate))
            continue
        model = LogisticRegression(C=c, max_iter=2000, solver="liblinear").fit(x, y)
        coef[j] = model.coef_[0]
        intercept[j] = model.intercept_[0]
    return coef, intercept


def logreg_proba(
    coef: FloatArray, intercept: FloatArray, idx: IntArray, val: FloatArray, dense: FloatArray
) -> FloatArray:
    n_terms = coef.shape[1] - len(dense)
    z = coef[:, idx] @ val + coef[:, n_terms:] @ dense + intercept
    out: FloatArray = 1.0 / (1.0 + np.exp(-z))
    return out


# ---- k nearest neighbours ----


class Neighbours:
    """The training prompts as unit vectors, laid out to find a query's cosine similarities with numpy alone.

    Terms found in at least ``FREQUENT`` of the prompts (instructions, function words) are a dense block,
    term by prompt, so a long prompt's common words cost one matrix-vector product; the other terms are
    postings (per term, the prompts holding it and their weights); the request features are rows. Stored in
    float32, which is what a saved artifact holds, so a loaded router predicts exactly what it did in memory.

    With sentence embeddings (tierwise.classify.embeddings), each prompt also has a unit embedding row and the
    similarity is ``(1 - w) * cos(text + features) + w * cos(embeddings)``, ``w`` the embedding weight.
    ``labels`` holds what each neighbour says per column: the routers put each tier's 0/1 label and its
    shortfall against premium side by side.
    """

    FREQUENT = 0.05

    def __init__(
        self,
        frequent: IntArray,
        block: F32Array,
        term_ptr: IntArray,
        docs: npt.NDArray[np.int32],
        weights: F32Array,
        dense: F32Array,
        labels: F32Array,
        embedded: F32Array | None = None,
        embedding_weight: float = 0.0,
    ) -> None:
        self.frequent, self.block, self.term_ptr, self.docs = frequent, block, term_ptr, docs
        self.weights, self.dense, self.labels = weights, dense, labels
        self.embedded, self.embedding_weight = embedded, embedding_weight
        # Feature by prompt: a query's feature product over it took about half the time of one over dense's
        # prompt-by-feature layout, in isolation (numpy 2.4).
        self.dense_by_feature = np.ascontiguousarray(dense.T)

    @classmethod
    def build(
        cls,
        text: Any,
        dense: FloatArray,
        labels: FloatArray,
        embedded: FloatArray | None = None,
        embedding_weight: float = 0.0,
    ) -> Neighbours:
        """``text``: scipy sparse (n, terms), rows L2-normalised; ``dense``: (n, features), already scaled;
        ``labels``: (n, columns), what each neighbour says of each column; ``embedded``: (n, dimension)
        sentence embeddings or None."""
        norms = np.sqrt(np.asarray(text.multiply(text).sum(axis=1)).ravel() + (dense * dense).sum(axis=1))
        norms[norms == 0] = 1.0
        by_term = text.multiply(1.0 / norms[:, None]).tocsc().astype(np.float32)
        by_term.sort_indices()
        df = np.diff(by_term.indptr)
        common = np.flatnonzero(df >= max(2.0, cls.FREQUENT * text.shape[0]))
        frequent = np.full(text.shape[1], -1, dtype=np.int64)
        frequent[common] = np.arange(len(common))
        block = np.asarray(by_term[:, common].T.todense(), dtype=np.float32).reshape(len(common), -1)
        in_block = np.repeat(frequent >= 0, df)  # per stored entry: is its term in the block?
        by_term.data[in_block] = 0  # then its postings go
        by_term.eliminate_zeros()
        return cls(
            frequent,
            block,
            np.asarray(by_term.indptr, dtype=np.int64),
            np.asarray(by_term.indices, dtype=np.int32),
            np.asarray(by_term.data, dtype=np.float32),
            (dense / norms[:, None]).astype(np.float32),
            labels.astype(np.float32),
            None if embedded is None else unit_rows(embedded).astype(np.float32),
            embedding_weight if embedded is not None else 0.0,
        )

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        out: dict[str, npt.NDArray[Any]] = {
            "knn_frequent": self.frequent, "knn_block": self.block, "knn_term_ptr": self.term_ptr,
            "knn_docs": self.docs, "knn_weights": self.weights, "knn_dense": self.dense,
            "knn_labels": self.labels,
        }  # fmt: skip
        if self.embedded is not None:
            out |= {"knn_embedded": self.embedded, "knn_embedding_weight": np.asarray(self.embedding_weight)}
        return out

    @classmethod
    def from_arrays(cls, a: Any) -> Neighbours:
        embedded = np.asarray(a["knn_embedded"]) if "knn_embedded" in a else None
        weight = float(a["knn_embedding_weight"]) if embedded is not None else 0.0
        frequent, block, term_ptr, docs, weights, dense, labels = (
            np.asarray(a[f"knn_{n}"]) for n in cls.NAMES
        )
        return cls(frequent, block, term_ptr, docs, weights, dense, labels, embedded, weight)

    NAMES = ("frequent", "block", "term_ptr", "docs", "weights", "dense", "labels")

    def similarities(
        self, idx: IntArray, val: FloatArray, dense: FloatArray, embedded: FloatArray | None = None
    ) -> FloatArray:
        """Cosine similarity of a query (term indices and weights, scaled dense features, and its embedding
        when the prompts have one) with each prompt."""
        norm = math.sqrt(float(val @ val) + float(dense @ dense)) or 1.0
        val = val / norm
        # float32 throughout the products: a float64 operand would make numpy convert the stored matrices on
        # every call. Only the block rows of the query's own terms are multiplied, which also keeps each
        # product too small for BLAS to hand to its threads.
        sims: FloatArray = ((dense / norm).astype(np.float32) @ self.dense_by_feature).astype(np.float64)
        rows = self.frequent[idx]
        common = rows >= 0
        if common.any():
            # np.dot, not @: numpy's matmul took ~5 µs longer on a vector and a few rows, in isolation.
            sims += np.dot(val[common].astype(np.float32), self.block.take(rows[common], axis=0))
        starts, ends = self.term_ptr[idx], self.term_ptr[idx + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        if total:
            offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
            weights = self.weights[offsets] * np.repeat(val, lengths)
            sims += np.bincount(self.docs[offsets], weights=weights, minlength=len(sims))
        if self.embedded is not None:
            if embedded is None:
                raise ValueError(
                    "this router was trained with sentence embeddings: give the query's embedding"
                )
            w = self.embedding_weight
            sims = (1 - w) * sims + w * (self.embedded @ unit_rows(embedded[None, :])[0].astype(np.float32))
        return sims

    def proba(self, sims: FloatArray, k: int, prior: float, base: FloatArray) -> FloatArray:
        """Similarity-weighted share of label 1 among the k most similar prompts (at most a quarter of them),
        with ``prior * k`` pseudo-neighbours at the tier's base rate."""
        k = max(1, min(k, len(sims) // 4))
        prior *= k
        n = len(sims)
        top = np.argpartition(sims, n - k)[n - k :] if k < n else np.arange(n)
        w = np.maximum(sims[top], 0.0)
        out: FloatArray = (w @ self.labels[top] + prior * base) / (w.sum() + prior)
        return out


def unit_rows(x: FloatArray) -> FloatArray:
    norms = np.sqrt((x * x).sum(axis=1, keepdims=True))
    out: FloatArray = x / np.where(norms > 0, norms, 1.0)
    return out


# ---- choosing k, the prior and the risk by leave-one-out ----

K_GRID = (30, 100)
PRIOR_GRID = (1 / 3, 1.0, 3.0)
LOO_NEIGHBOURS = 200  # each training prompt's nearest others kept for the search (k at most this)


def nearest_others(
    x: Any, embedded: FloatArray | None = None, weight: float = 0.0
) -> tuple[IntArray, FloatArray]:
    """Each training prompt's ``LOO_NEIGHBOURS`` most similar *other* prompts, most similar first: indices and
    similarities, shape (n, K). ``x``: scipy sparse (n, d) with unit rows (text + request features);
    ``embedded``: (n, e) unit rows or None, mixed in with ``weight`` exactly as Neighbours.similarities does.
    Computed by blocks of rows, so memory stays at a block times n."""
    n = x.shape[0]
    width = max(1, min(LOO_NEIGHBOURS, n - 1))
    idx = np.zeros((n, width), dtype=np.int64)
    sims = np.zeros((n, width))
    xt = x.T.tocsc()
    step = max(1, min(n, 2_000_000 // max(n, 1)))
    for start in range(0, n, step):
        stop = min(n, start + step)
        block = np.asarray((x[start:stop] @ xt).todense(), dtype=np.float64)
        if embedded is not None:
            block = (1 - weight) * block + weight * (embedded[start:stop] @ embedded.T)
        block[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not itself
        if n == 1:
            continue
        top = np.argpartition(-block, width - 1, axis=1)[:, :width]
        values = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(top, order, axis=1)
        sims[start:stop] = np.take_along_axis(values, order, axis=1)
    return idx, sims


def neighbour_means(
    idx: IntArray, sims: FloatArray, targets: FloatArray, k: int, prior: float, base: FloatArray
) -> FloatArray:
    """Neighbours.proba for every training prompt at once, from its nearest *other* prompts: what the prompt
    would be told by a router trained without it (the same cap of k at a quarter of the prompts)."""
    k = max(1, min(k, len(idx) // 4, idx.shape[1]))
    w = np.maximum(sims[:, :k], 0.0)
    pseudo = prior * k
    out: FloatArray = (np.einsum("nk,nkj->nj", w, targets[idx[:, :k]]) + pseudo * base) / (
        w.sum(axis=1, keepdims=True) + pseudo
    )
    return out


# ---- gradient boosting ----


class Boosted:
    """TruncatedSVD of the TF-IDF plus the dense features, then a HistGradientBoostingClassifier per tier."""

    def __init__(self, components: int, rates: FloatArray) -> None:
        self.components, self.rates = components, rates
        self.svd: Any = None
        self.models: list[Any] = []

    def inputs(self, text: Any, dense: FloatArray) -> FloatArray:
        projected = self.svd.transform(text) if self.svd is not None else np.zeros((text.shape[0], 0))
        return np.hstack([projected, dense])

    def fit(self, text: Any, dense: FloatArray, labels: BoolArray, min_examples: int) -> Boosted:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.ensemble import HistGradientBoostingClassifier

        n_components = min(self.components, text.shape[1] - 1, text.shape[0] - 1)
        if n_components >= 1:
            self.svd = TruncatedSVD(n_components, random_state=0).fit(text)
        x = self.inputs(text, dense)
        self.models = []
        for j in range(labels.shape[1]):
            y = labels[:, j]
            if not learnable(y, min_examples) or x.shape[1] == 0:
                self.models.append(None)
                continue
            model = HistGradientBoostingClassifier(
                max_iter=50, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=10,
                l2_regularization=1.0, early_stopping=False, random_state=0,
            )  # fmt: skip
            self.models.append(model.fit(x, y))
        return self

    def proba(self, text: Any, dense: FloatArray) -> FloatArray:
        x = self.inputs(text, dense)
        out = np.tile(self.rates, (x.shape[0], 1))
        for j, model in enumerate(self.models):
            if model is not None:
                out[:, j] = model.predict_proba(x)[:, 1]
        return out


# ---- the cost-aware routing score ----


def routing_scores(
    p: FloatArray,
    costs: FloatArray,
    risk_scale: FloatArray,
    kappa: float,
    usable: BoolArray | None = None,
) -> FloatArray:
    """Per non-premium tier, a score in [0, 1) that orders routing by dollars saved per unit of quality
    risked.

    Sending a prompt to tier j instead of premium saves ``costs[-1] - costs[j]`` (predicted) and risks
    ``(1 - p[j]) * risk_scale[j]`` of quality (the tier's mean shortfall when it does worse). At an
    exchange rate lam (dollars per unit of quality) the best choice maximises saving - lam * risk; as lam
    grows, it moves from cheap tiers to dearer, safer ones and finally to premium. A tier's score is
    lam / (lam + kappa) at the rate where it stops being the best choice (0 if it never is), so "the cheapest
    tier whose score reaches t", the rule every threshold applies, picks the best tier at the rate
    kappa * t / (1 - t). kappa, the training set's rate for mixing cheap-only with premium-only, puts 0.5
    where the router beats that mixing.

    ``usable`` (per tier) False: the tier never answered as well as premium in training. Such a tier is
    never a choice and scores 0: otherwise its risk, the training mean, would price it at exactly the mixing
    rate, a score of 0.5, which the default threshold (0.5) admits.
    """
    return scores_from_risk(np.maximum(1.0 - p, 1e-9) * risk_scale, costs, kappa, usable)


def scores_from_risk(
    risk: FloatArray, costs: FloatArray, kappa: float, usable: BoolArray | None = None
) -> FloatArray:
    """routing_scores from each tier's expected quality loss against premium (``risk``, > 0) directly.

    Plain Python over the few tiers: it runs once per request, and numpy's per-call overhead on arrays of
    two or three numbers is most of its cost."""
    r = risk.tolist()
    dearest = -math.inf
    capped = []
    for cost in costs.tolist():  # a dearer tier never costs less than a cheaper one
        dearest = max(dearest, cost)
        capped.append(dearest)
    saving = [capped[-1] - c for c in capped[:-1]]
    if usable is not None:
        saving = [s if u else 0.0 for s, u in zip(saving, usable.tolist(), strict=True)]
    out = np.zeros(len(r))
    candidates = [j for j, s in enumerate(saving) if s > 0]
    if not candidates:
        return out
    # The first tier at the highest saving (ties broken towards the lower risk) is the best at rate 0.
    current = max(candidates, key=lambda j: (saving[j] - 1e-12 * r[j], -j))
    rate = 0.0
    while True:
        leave, nxt = saving[current] / r[current], -1
        for j in candidates:
            if r[j] < r[current]:
                cross = (saving[current] - saving[j]) / (r[current] - r[j])
                if rate <= cross < leave:
                    leave, nxt = cross, j
        out[current] = leave / (leave + kappa)
        if nxt < 0:
            return out
        rate, current = leave, nxt
