"""Saved learned routers: one ``.tw`` file (a NumPy ``.npz`` archive, no pickle) with versioned metadata.

The metadata records the format version, the tiers and the models they were trained on, the feature names,
the training data's SHA-256 and size, and the hyperparameters. Loading a file of another format version, or
one trained for other tiers than the config's, is an error that says which.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tierwise._version import __version__
from tierwise.classify.learned import DENSE_FEATURES, LearnedRouter
from tierwise.errors import ConfigError

FORMAT = "tierwise-router/1"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_router(router: LearnedRouter, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``router`` (fitted) to ``path``; ``extra`` adds to the metadata (data hash, metrics...)."""
    meta = {
        "format": FORMAT,
        "tierwise": __version__,
        "created": time.time(),
        "tiers": list(router.tiers_),
        "models": list(router.models_),
        "dense_features": list(DENSE_FEATURES),
        "hyperparameters": {"min_df": router.min_df, "max_terms": router.max_terms, "c": router.c},
        **(extra or {}),
    }
    vocabulary = sorted(router.vocabulary_, key=router.vocabulary_.__getitem__)
    out = Path(path)
    with out.open("wb") as handle:
        np.savez_compressed(
            handle,
            meta=np.frombuffer(orjson.dumps(meta), dtype=np.uint8),
            vocabulary=np.frombuffer(orjson.dumps(vocabulary), dtype=np.uint8),
            idf=router.idf_.astype(np.float32),
            coef=router.coef_.astype(np.float32),
            intercept=router.intercept_,
            dense_mean=router.dense_mean_,
            dense_scale=router.dense_scale_,
        )
    return out


def load_router(path: str | Path) -> tuple[LearnedRouter, dict[str, Any]]:
    """Read a saved router and its metadata; raises ConfigError naming what is wrong."""
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
        hyper = meta["hyperparameters"]
        router = LearnedRouter(min_df=hyper["min_df"], max_terms=hyper["max_terms"], c=hyper["c"])
        vocabulary = orjson.loads(archive["vocabulary"].tobytes())
        router.vocabulary_ = {t: i for i, t in enumerate(vocabulary)}
        router.idf_ = archive["idf"].astype(np.float64)
        router.coef_ = archive["coef"].astype(np.float64)
        router.intercept_ = archive["intercept"]
        router.dense_mean_ = archive["dense_mean"]
        router.dense_scale_ = archive["dense_scale"]
        router.tiers_ = tuple(meta["tiers"])
        router.models_ = tuple(meta["models"])
    return router, meta
