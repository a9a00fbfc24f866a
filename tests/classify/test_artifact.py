"""Saved routers: a ``.tw`` file round-trips the predictions, carries its metadata, holds no pickle, and every
kind of unreadable file is a ConfigError that names the file and what is wrong."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.classify.test_learned import DEFAULTS, HELD_OUT_NOUNS, MODELS, fit_synthetic, synthetic_records
from tests.helpers_config import request
from tierwise._version import __version__
from tierwise.classify.artifact import FORMAT, file_sha256, hyperparameters, load_router, save_router
from tierwise.classify.learned import DENSE_FEATURES, LearnedRouter
from tierwise.errors import ConfigError
from tierwise.evals.metrics import OutcomeTable


@pytest.fixture(scope="module")
def router() -> LearnedRouter:
    return fit_synthetic()


@pytest.fixture
def saved(router: LearnedRouter, tmp_path: Path) -> Path:
    return save_router(router, tmp_path / "router.tw", extra={"data": {"prompts": 200}, "note": "unit test"})


KNN_ARRAYS = tuple(
    f"knn_{name}" for name in ("frequent", "block", "term_ptr", "docs", "weights", "dense", "labels")
)
COST_ARRAYS = ("cost_coef", "cost_intercept", "risk_scale", "kappa")
COMMON_ARRAYS = (
    "idf",
    "dense_mean",
    "dense_scale",
    "base_rate",
    "usable",
    "shortfall_mean",
    "k",
    "prior",
    "risk",
)


def write_archive(path: Path, meta: Any, **arrays: np.ndarray) -> Path:
    """An ``.npz`` whose ``meta`` is the JSON of ``meta``, as save_router lays it out."""
    with path.open("wb") as handle:
        np.savez(handle, meta=np.frombuffer(orjson.dumps(meta), dtype=np.uint8), **arrays)
    return path


def good_meta(saved: Path) -> dict[str, Any]:
    return load_router(saved)[1]


# ---- round trip ----


def test_round_trip_gives_the_same_predictions(router: LearnedRouter, saved: Path) -> None:
    loaded, _ = load_router(saved)
    records = synthetic_records(30, seed=42, nouns=HELD_OUT_NOUNS)
    # The artifact holds what predicting uses, at its precision: the loaded router predicts exactly the same.
    np.testing.assert_array_equal(loaded.predict(records), router.predict(records))
    np.testing.assert_array_equal(loaded.predict_proba(records), router.predict_proba(records))
    for text in ("Translate to German: my comet is older than your parrot.", "unseen words only", ""):
        req = request(text)
        np.testing.assert_array_equal(loaded.predict_request(req), router.predict_request(req))
        np.testing.assert_array_equal(loaded.proba_request(req), router.proba_request(req))


def test_round_trip_keeps_the_learned_state(router: LearnedRouter, saved: Path) -> None:
    loaded, _ = load_router(saved)
    assert loaded.vocabulary_ == router.vocabulary_
    assert loaded.tiers_ == router.tiers_ == ("cheap", "mid", "premium")
    assert loaded.models_ == router.models_ == MODELS
    assert hyperparameters(loaded) == hyperparameters(router) == DEFAULTS
    state, restored = router.state(), loaded.state()
    assert set(restored) == set(state) == {*COMMON_ARRAYS, *KNN_ARRAYS, *COST_ARRAYS}
    for name, array in state.items():
        np.testing.assert_array_equal(restored[name], array, err_msg=name)
        assert restored[name].dtype == array.dtype, name
    assert loaded.kappa_ == router.kappa_ and isinstance(loaded.kappa_, float)
    # What the arithmetic uses is float64, the neighbours float32, as in the router that was saved.
    assert loaded.idf_.dtype == loaded.cost_coef_.dtype == np.float64
    assert loaded.neighbours_.weights.dtype == np.float32


def test_round_trip_of_a_plain_logistic_router(tmp_path: Path) -> None:
    fitted = fit_synthetic(n=90, family="logreg", cost_aware=False)
    loaded, meta = load_router(save_router(fitted, tmp_path / "logreg.tw"))
    assert meta["hyperparameters"] == {**DEFAULTS, "family": "logreg", "cost_aware": False}
    np.testing.assert_array_equal(loaded.coef_, fitted.coef_)
    np.testing.assert_array_equal(loaded.intercept_, fitted.intercept_)
    assert loaded.coef_.dtype == np.float64
    assert not hasattr(loaded, "neighbours_") and not hasattr(loaded, "cost_coef_")
    records = synthetic_records(9, seed=5, nouns=HELD_OUT_NOUNS)
    np.testing.assert_array_equal(loaded.predict(records), fitted.predict(records))


def test_round_trip_keeps_every_hyperparameter(tmp_path: Path) -> None:
    records = synthetic_records(60, seed=1)
    hyper = {
        "min_df": 1, "max_terms": 500, "c": 0.25, "min_examples": 5, "family": "blend", "k": 7, "prior": 0.5,
        "components": 8, "dense_weight": 0.2, "text_only": True, "cost_aware": False, "risk": "binary",
        "embedding_weight": 0.25,
    }  # fmt: skip
    assert set(hyper) == set(DEFAULTS)  # every constructor argument, none left at its default
    assert all(hyper[k] != DEFAULTS[k] for k in hyper)
    fitted = LearnedRouter(**hyper).fit(records, OutcomeTable.from_records(records, list(MODELS)))
    loaded, meta = load_router(save_router(fitted, tmp_path / "r.tw"))
    assert meta["hyperparameters"] == hyper
    assert hyperparameters(loaded) == hyper
    assert {k: getattr(loaded, k) for k in hyper} == hyper


def test_two_tier_router_round_trips(tmp_path: Path) -> None:
    fitted = fit_synthetic(n=90, models=("m-cheap", "m-premium"))
    loaded, meta = load_router(save_router(fitted, tmp_path / "two.tw"))
    assert meta["tiers"] == ["cheap", "premium"] and meta["models"] == ["m-cheap", "m-premium"]
    records = synthetic_records(9, seed=5, nouns=HELD_OUT_NOUNS)
    np.testing.assert_allclose(loaded.predict(records), fitted.predict(records), atol=1e-6)


def test_save_returns_the_path_and_overwrites(router: LearnedRouter, tmp_path: Path) -> None:
    target = tmp_path / "r.tw"
    assert save_router(router, target) == target
    first = target.read_bytes()
    save_router(router, target, extra={"again": True})
    assert target.read_bytes() != first
    assert load_router(target)[1]["again"] is True


def test_load_accepts_a_string_path_with_a_tilde(
    router: LearnedRouter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    save_router(router, tmp_path / "home.tw")
    loaded, meta = load_router("~/home.tw")
    assert meta["format"] == FORMAT and loaded.tiers_ == router.tiers_


# ---- metadata ----


def test_metadata(router: LearnedRouter, saved: Path) -> None:
    meta = good_meta(saved)
    assert meta["format"] == FORMAT == "tierwise-router/3"
    assert meta["tierwise"] == __version__
    assert isinstance(meta["created"], float) and meta["created"] > 1.6e9
    assert meta["tiers"] == ["cheap", "mid", "premium"]
    assert meta["models"] == list(MODELS)
    assert meta["dense_features"] == list(DENSE_FEATURES)
    # Every constructor argument of the router, so that loading rebuilds the same one.
    assert meta["hyperparameters"] == DEFAULTS == hyperparameters(router)
    assert meta["data"] == {"prompts": 200}
    assert meta["note"] == "unit test"


def test_metadata_without_extra(router: LearnedRouter, tmp_path: Path) -> None:
    meta = load_router(save_router(router, tmp_path / "plain.tw"))[1]
    assert set(meta) == {
        "format",
        "tierwise",
        "created",
        "tiers",
        "models",
        "dense_features",
        "hyperparameters",
        "selected",
    }
    assert meta["selected"] == {"k": router.k_, "prior": router.prior_, "risk": router.risk_}


def test_file_sha256(tmp_path: Path) -> None:
    f = tmp_path / "x.jsonl"
    f.write_bytes(b"abc")
    assert file_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_sha256(str(f)) == file_sha256(f)


# ---- no pickle ----


def test_the_file_is_a_plain_npz_without_pickle(saved: Path) -> None:
    with zipfile.ZipFile(saved) as z:
        names = set(z.namelist())
    assert names == {f"{k}.npy" for k in ("meta", "vocabulary", *COMMON_ARRAYS, *KNN_ARRAYS, *COST_ARRAYS)}
    with np.load(saved, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    assert all(a.dtype != object for a in arrays.values())
    assert arrays["idf"].dtype == np.float64 and arrays["knn_weights"].dtype == np.float32
    assert orjson.loads(arrays["meta"].tobytes())["format"] == FORMAT
    vocabulary = orjson.loads(arrays["vocabulary"].tobytes())
    assert isinstance(vocabulary, list) and all(isinstance(t, str) for t in vocabulary)
    assert arrays["idf"].shape == (len(vocabulary),)
    assert arrays["cost_coef"].shape == (len(MODELS), len(vocabulary) + len(DENSE_FEATURES))
    # one row per training prompt: per tier, its 0/1 label and its shortfall against premium
    assert arrays["knn_labels"].shape == (200, 2 * (len(MODELS) - 1))
    assert arrays["kappa"].shape == ()


def test_a_plain_logistic_router_file_holds_its_coefficients(tmp_path: Path) -> None:
    path = save_router(fit_synthetic(n=90, family="logreg", cost_aware=False), tmp_path / "logreg.tw")
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
    assert names == {f"{k}.npy" for k in ("meta", "vocabulary", *COMMON_ARRAYS, "coef", "intercept")}
    with np.load(path, allow_pickle=False) as archive:
        vocabulary = orjson.loads(archive["vocabulary"].tobytes())
        assert archive["coef"].shape == (2, len(vocabulary) + len(DENSE_FEATURES))
        assert archive["coef"].dtype == np.float64


# ---- files that are not (this version's) artifacts ----


def check_error(path: Path, *needles: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_router(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message
    return message


def test_missing_file(tmp_path: Path) -> None:
    check_error(tmp_path / "nowhere.tw", "cannot read the router artifact", "No such file")


def test_text_file(tmp_path: Path) -> None:
    text = tmp_path / "router.yaml"
    text.write_text("routing:\n  classifier: {type: learned}\n")
    check_error(text, "cannot read the router artifact")


def test_directory(tmp_path: Path) -> None:
    check_error(tmp_path, "cannot read the router artifact")


def test_zip_that_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    check_error(path, "not a tierwise router artifact")


def test_npz_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "weights.npz"
    np.savez(path, coef=np.zeros((2, 3)))
    check_error(path, "not a tierwise router artifact")


def test_metadata_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.tw"
    with path.open("wb") as handle:
        np.savez(handle, meta=np.frombuffer(b"{format: nope", dtype=np.uint8))
    check_error(path, "not a tierwise router artifact")


def test_other_format_version(saved: Path, tmp_path: Path) -> None:
    meta = {**good_meta(saved), "format": "tierwise-router/99"}
    path = write_archive(tmp_path / "future.tw", meta, coef=np.zeros((2, 3), dtype=np.float32))
    message = check_error(path, "'tierwise-router/99'", repr(FORMAT), "tierwise train")
    assert "format" in message
    assert "incomplete or damaged" not in message  # refused for its version, before its arrays are read


def test_missing_format(saved: Path, tmp_path: Path) -> None:
    meta = good_meta(saved)
    del meta["format"]
    check_error(write_archive(tmp_path / "old.tw", meta), "format None", repr(FORMAT))


def test_other_request_features(saved: Path, tmp_path: Path) -> None:
    meta = {**good_meta(saved), "dense_features": ["log_input_tokens"]}
    check_error(write_archive(tmp_path / "features.tw", meta), "request features", "retrain")


@pytest.mark.parametrize("version", ["tierwise-router/0", "tierwise-router/1", "tierwise-router/99"])
def test_the_real_artifact_with_its_format_changed_is_refused(
    saved: Path, tmp_path: Path, version: str
) -> None:
    """The whole archive intact, only meta.format changed (to the previous version, 1, among others): still
    refused, not half-loaded."""
    assert version != FORMAT
    with np.load(saved, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = orjson.loads(arrays.pop("meta").tobytes())
    meta["format"] = version
    check_error(write_archive(tmp_path / "other.tw", meta, **arrays), repr(version), repr(FORMAT))


def test_an_artifact_missing_one_array_is_damaged(saved: Path, tmp_path: Path) -> None:
    with np.load(saved, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = orjson.loads(arrays.pop("meta").tobytes())
    del arrays["knn_labels"]
    check_error(write_archive(tmp_path / "partial.tw", meta, **arrays), "incomplete or damaged", "knn_labels")


BAD_FILE_BUGS = "artifact.py load_router: only OSError/ValueError/KeyError/JSONDecodeError become ConfigError"


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tw"
    empty.write_bytes(b"")
    check_error(empty)


def test_single_npy_array(tmp_path: Path) -> None:
    path = tmp_path / "coef.npy"
    np.save(path, np.zeros(3))
    check_error(path)


def test_metadata_that_is_not_an_object(tmp_path: Path) -> None:
    check_error(write_archive(tmp_path / "list.tw", [FORMAT]))


def test_truncated_artifact(tmp_path: Path) -> None:
    meta = {"format": FORMAT, "dense_features": list(DENSE_FEATURES)}
    check_error(write_archive(tmp_path / "truncated.tw", meta))
