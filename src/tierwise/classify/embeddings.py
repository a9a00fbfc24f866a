"""Optional sentence embeddings for the learned router's ``knn`` family.

Installed with ``pip install 'tierwise[embeddings]'``. The router takes any *encoder*: a callable turning a
list of texts into a 2-D array, one row per text (tierwise.classify.learned.Encoder). ``SentenceEncoder`` is
one made from a sentence-transformers model that is already on disk: a directory path. Nothing is ever
downloaded (the Hugging Face hub is switched to offline and only local files are read), and
sentence-transformers (with torch) is imported only when such an encoder is made, so the router without
embeddings never needs either.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tierwise.errors import ConfigError

INSTALL_HINT = "pip install 'tierwise[embeddings]'"


class SentenceEncoder:
    """A local sentence-transformers model as an encoder: ``encoder(texts)`` -> (len(texts), dimension)
    float array of unit-length embeddings. ``path``: the model's directory. A path that is not a directory,
    a missing sentence-transformers, or a model that cannot be loaded from it is a ConfigError naming the
    path."""

    def __init__(self, path: str | Path, *, batch_size: int = 32) -> None:
        self.path = str(Path(path).expanduser())
        self.batch_size = batch_size
        if not Path(self.path).is_dir():
            raise ConfigError(
                f"embedding model {self.path}: not a directory; give the local directory of a "
                "sentence-transformers model (it is never downloaded)"
            )
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            library = importlib.import_module("sentence_transformers")
        except ImportError:
            raise ConfigError(
                f"embedding model {self.path}: sentence-transformers is not installed ({INSTALL_HINT})"
            ) from None
        try:
            self.model: Any = library.SentenceTransformer(self.path, device="cpu", local_files_only=True)
        except Exception as exc:  # the library raises many kinds for a bad model directory
            raise ConfigError(f"embedding model {self.path}: cannot load it ({exc})") from None
        self.name = Path(self.path).name
        card = getattr(self.model, "model_card_data", None)
        base = getattr(card, "base_model", None)
        if isinstance(base, str) and base:
            self.name = base
        get_dimension = getattr(self.model, "get_embedding_dimension", None) or getattr(
            self.model, "get_sentence_embedding_dimension", None
        )
        dimension = get_dimension() if get_dimension is not None else None
        self.dimension = int(dimension) if dimension else int(self(["dimension probe"]).shape[1])

    def __call__(self, texts: Sequence[str]) -> Any:
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float64).reshape(len(texts), -1)


def describe(encoder: Any, dimension: int) -> dict[str, Any]:
    """What an artifact records of the encoder a router was trained with: its path (None for an encoder that
    is not a SentenceEncoder, which then has to be passed again when loading), name and dimension."""
    path = getattr(encoder, "path", None)
    name = getattr(encoder, "name", None) or type(encoder).__name__
    return {"path": str(path) if path is not None else None, "name": str(name), "dimension": dimension}
