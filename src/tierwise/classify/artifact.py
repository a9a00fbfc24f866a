"""Saved learned routers: one ``.tw`` file (a NumPy ``.npz`` archive, no pickle) with versioned metadata.

The metadata records the format version, the tiers and the models they were trained on, the feature names,
the training data's SHA-256 and size, the hyperparameters and, for a router trained with sentence embeddings,
the embedding model (path, name, dimension). Loading a file of another format version, one trained for other
tiers than the config's, or one whose embedding model is not available, is an error that says which.
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tierwise._version import __version__
from tierwise.classify.learned import DENSE_FEATURES, LearnedRouter
from tierwise.errors import ConfigError
from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import OutcomeTable

# 2: the model family's own arrays (LearnedRouter.state); 3: k, prior and risk chosen in fit, each tier's
# shortfall beside its label in the neighbours, tiers that never matched premium, optional embeddings.
FORMAT = "tierwise-router/3"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def out_of_fold_metrics(
    records: Sequence[EvalRecord], table: OutcomeTable, *, folds: int = 5, encoder: Any = None
) -> dict[str, Any]:
    """How well the router does on prompts it was not trained on: k-fold out-of-fold APGR, saving at Q95, and
    per tier the ROC AUC of P(tier will do) against whether it did."""
    from tierwise.evals.metrics import Baselines, apgr, saving_at_quality
    from tierwise.evals.sweep import kfold_predict, sweep

    scores = kfold_predict(lambda: LearnedRouter(encoder=encoder), records, table, folds=folds)
    proba = kfold_predict(lambda: _Probabilities(encoder=encoder), records, table, folds=folds)
    base = Baselines.of(table)
    curve = [p for _, p in sweep(table, scores)]
    labels = table.scores[:, :-1] >= table.scores[:, -1:] - 1e-9
    return {
        "folds": folds,
        "apgr": apgr(curve, base),
        "saving_at_q95": saving_at_quality(curve, base, 0.95),
        "auc": {t: _auc(labels[:, j], proba[:, j]) for j, t in enumerate(table.tiers[:-1])},
    }


class _Probabilities(LearnedRouter):
    """The router predicting its probabilities (what an AUC is of), not its routing scores."""

    def predict(self, records: Sequence[EvalRecord]) -> Any:
        return self.predict_proba(records)


def _auc(labels: np.ndarray[Any, Any], scores: np.ndarray[Any, Any]) -> float:
    """ROC AUC by ranks (ties averaged); 0.5 when one class is missing."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return 0.5
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def hyperparameters(router: LearnedRouter) -> dict[str, Any]:
    """The constructor arguments of ``router`` (scikit-learn's get_params, for our estimator)."""
    names = [n for n in inspect.signature(LearnedRouter.__init__).parameters if n not in ("self", "encoder")]
    return {name: getattr(router, name) for name in names}


def write_archive(
    path: str | Path, meta: dict[str, Any], vocabulary: dict[str, int], arrays: dict[str, Any]
) -> Path:
    """One artifact file: JSON metadata, the vocabulary in index order, and named arrays (no pickle)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as handle:
        np.savez_compressed(
            handle,
            meta=np.frombuffer(orjson.dumps(meta), dtype=np.uint8),
            vocabulary=np.frombuffer(
                orjson.dumps(sorted(vocabulary, key=vocabulary.__getitem__)), dtype=np.uint8
            ),
            **arrays,
        )
    return out


def save_router(router: LearnedRouter, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``router`` (fitted) to ``path``; ``extra`` adds to the metadata (data hash, metrics...). A family
    that has no pickle-free form (gbdt) is a ValueError, raised before anything is written."""
    arrays: dict[str, Any] = router.state()
    meta = {
        "format": FORMAT,
        "tierwise": __version__,
        "created": time.time(),
        "tiers": list(router.tiers_),
        "models": list(router.models_),
        "dense_features": list(DENSE_FEATURES),
        "hyperparameters": hyperparameters(router),
        "selected": {"k": router.k_, "prior": router.prior_, "risk": router.risk_},
        **(extra or {}),
    }
    if router.encoder is not None:
        from tierwise.classify.embeddings import describe

        meta["embedding"] = describe(router.encoder, int(router.embedding_dimension_))
    return write_archive(path, meta, router.vocabulary_, arrays)


def load_router(path: str | Path, *, encoder: Any = None) -> tuple[LearnedRouter, dict[str, Any]]:
    """Read a saved router and its metadata; raises ConfigError naming what is wrong.

    A router trained with sentence embeddings needs its encoder: ``encoder`` if given (any callable, as in
    training), else the sentence-transformers model at the path the artifact recorded, which must be there
    (it is never downloaded)."""
    p = Path(path).expanduser()
    try:
        archive = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"{p}: cannot read the router artifact ({exc or exc.__class__.__name__})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ConfigError(f"{p}: not a tierwise router artifact (a single array, not an archive)")
    with archive:
        try:
            meta = orjson.loads(archive["meta"].tobytes())
        except (KeyError, orjson.JSONDecodeError):
            raise ConfigError(f"{p}: not a tierwise router artifact (no metadata)") from None
        if not isinstance(meta, dict):
            raise ConfigError(f"{p}: not a tierwise router artifact (its metadata is not an object)")
        if meta.get("format") != FORMAT:
            raise ConfigError(
                f"{p}: router artifact format {meta.get('format')!r}, this tierwise reads {FORMAT!r}; "
                "train it again with `tierwise train`"
            )
        if meta.get("dense_features") != list(DENSE_FEATURES):
            raise ConfigError(
                f"{p}: trained on other request features than this tierwise computes; retrain it"
            )
        encoder = _encoder_for(p, meta, encoder)
        try:
            router = LearnedRouter(**meta["hyperparameters"], encoder=encoder)
            vocabulary = orjson.loads(archive["vocabulary"].tobytes())
            router.vocabulary_ = {t: i for i, t in enumerate(vocabulary)}
            router.set_state(archive)
            router.tiers_ = tuple(meta["tiers"])
            router.models_ = tuple(meta["models"])
        except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"{p}: the router artifact is incomplete or damaged ({exc!r})") from None
    if encoder is not None and router.embedding_dimension_ != meta["embedding"]["dimension"]:
        raise ConfigError(f"{p}: the artifact's embeddings do not match its recorded dimension; retrain it")
    return router, meta


def _encoder_for(p: Path, meta: dict[str, Any], encoder: Any) -> Any:
    """The encoder a router needs (None for one trained without embeddings), checked against the artifact."""
    info = meta.get("embedding")
    if info is None:
        return None
    if not isinstance(info, dict) or not isinstance(info.get("dimension"), int):
        raise ConfigError(f"{p}: the router artifact's embedding record is damaged")
    if encoder is None:
        if not info.get("path"):
            raise ConfigError(
                f"{p}: trained with a custom sentence encoder ({info.get('name')}); pass the same encoder "
                "to load it"
            )
        from tierwise.classify.embeddings import SentenceEncoder

        try:
            encoder = SentenceEncoder(info["path"])
        except ConfigError as exc:
            raise ConfigError(
                f"{p}: trained with the sentence embeddings of {info.get('name')} at {info['path']}, "
                f"which cannot be used here: {exc}"
            ) from None
    dimension = getattr(encoder, "dimension", info["dimension"])
    if dimension != info["dimension"]:
        raise ConfigError(
            f"{p}: trained with {info['dimension']}-dimensional embeddings ({info.get('name')}), the encoder "
            f"gives {dimension}"
        )
    return encoder
