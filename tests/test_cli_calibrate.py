"""`tierwise calibrate --policy cascade|auto`: the learned gate's threshold and the auto bands for a quality
target, out-of-fold, written into a config with its comments kept."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.gates.test_learned_gate import MODELS, records
from tests.test_cli_train import flat, tierwise
from tierwise.classify.calibrate import calibrate_policy
from tierwise.config import load_config
from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import OutcomeTable

TIERS = ",".join(MODELS)


def jsonl(path: Path, rows: list[EvalRecord]) -> Path:
    path.write_text(
        "".join(
            json.dumps({
                "id": r.id, "category": r.category, "messages": r.messages,
                "outcomes": {m: {"score": o.score, "cost_usd": o.cost_usd, "response": o.response}
                             for m, o in r.outcomes.items()},
            }) + "\n"
            for r in rows
        )
    )  # fmt: skip
    return path


def test_the_cascade_keeps_quality_and_saves_where_the_gate_can_tell() -> None:
    data = records(200, 5)
    table = OutcomeTable.from_records(data, MODELS)
    result = calibrate_policy(data, table, "cascade", 1.0, folds=4)
    # Hedging small answers are wrong, confident ones right: the gate tells them apart, so the cascade keeps
    # premium quality while the cheap tier answers about half the prompts (the mid tier, always right, the rest).
    assert result.quality_vs_premium >= 1.0 - 1e-9
    assert result.point.tier_mix["cheap"] > 0.3 and result.cost_vs_premium < 0.2
    assert 0.0 <= result.params["gate"] <= 1.0
    auto = calibrate_policy(data, table, "auto", 1.0, folds=4)
    assert set(auto.params) == {"gate", "hi", "lo"} and auto.quality_vs_premium >= 1.0 - 1e-9
    with pytest.raises(ValueError, match="cascade or auto"):
        calibrate_policy(data, table, "voting", 1.0)


def test_a_set_without_answers_is_refused() -> None:
    data = records(40, 6)
    for r in data:
        for o in r.outcomes.values():
            object.__setattr__(o, "response", None)
    with pytest.raises(ValueError, match="kept no answers"):
        calibrate_policy(data, OutcomeTable.from_records(data, MODELS), "auto", 0.95)


def test_calibrate_policy_auto_writes_the_config(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "set.jsonl", records(160, 7))
    config = tmp_path / "router.yaml"
    config.write_text(
        "# the team's router\n"
        "providers: {up: {type: openai, base_url: 'http://127.0.0.1:9'}}\n"
        "models: {small: {provider: up}, medium: {provider: up}, large: {provider: up}}\n"
        "tiers: {cheap: [small], mid: [medium], premium: [large]}  # cheapest first\n"
    )
    router, gate = tmp_path / "router.tw", tmp_path / "gate.twg"
    assert tierwise("train", "--data", data, "--tiers", TIERS, "-o", router).returncode == 0
    assert tierwise("train-gate", "--data", data, "--tiers", TIERS, "-o", gate).returncode == 0
    text = config.read_text() + f"routing:\n  classifier: {{type: learned, artifact: {router}}}\n"
    config.write_text(text)

    no_gate = tierwise("calibrate", "--data", data, "--config", config, "--policy", "auto",
                       "--target-quality", "0.95", "--write")  # fmt: skip
    assert no_gate.returncode != 0 and "has no learned gate" in flat(no_gate.stderr + no_gate.stdout)

    done = tierwise("calibrate", "--data", data, "--config", config, "--policy", "auto",
                    "--target-quality", "0.95", "--write", "--gate", gate, "--folds", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    said = flat(done.stdout)
    assert said.startswith("auto: bands confident_cheap") and "of premium-only" in said
    written = config.read_text()
    assert "# the team's router" in written and "# cheapest first" in written
    loaded = load_config(config)
    assert loaded.routing.policy == "auto"
    gates = loaded.routing.cascade.gates
    # The default gates the config relied on stay, and the learned gate joins them.
    assert [g.type for g in gates][:2] == ["not_empty", "not_truncated"] and gates[-1].type == "learned"
    assert gates[-1].artifact == str(gate)
    shown = re.search(r"confident_cheap (\S+), confident_premium (\S+), learned gate threshold (\S+):", said)
    assert shown is not None
    assert loaded.routing.auto.confident_cheap == pytest.approx(float(shown[1]), abs=1e-4)
    assert loaded.routing.auto.confident_premium == pytest.approx(float(shown[2]), abs=1e-4)
    assert gates[-1].threshold == pytest.approx(float(shown[3]), abs=1e-4)


def test_bad_policy_options(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "set.jsonl", records(20, 8))
    bad = tierwise(
        "calibrate", "--data", data, "--tiers", TIERS, "--policy", "vote", "--target-quality", "0.9"
    )
    assert bad.returncode != 0 and "--policy: expected direct, cascade or auto" in flat(
        bad.stderr + bad.stdout
    )
    cost = tierwise(
        "calibrate", "--data", data, "--tiers", TIERS, "--policy", "auto", "--max-cost-share", "0.4"
    )
    assert cost.returncode != 0 and "give --target-quality" in flat(cost.stderr + cost.stdout)


def test_a_target_no_point_reaches_is_an_error_not_a_threshold_of_one(tmp_path: Path) -> None:
    data = records(60, 9)
    table = OutcomeTable.from_records(data, MODELS)
    with pytest.raises(ValueError, match=r"no cascade operating point reaches 150\.0%"):
        calibrate_policy(data, table, "cascade", 1.5, folds=3)
    config = tmp_path / "router.yaml"
    config.write_text("# kept\nrouting:\n  policy: direct\n")
    before = config.read_text()
    path = jsonl(tmp_path / "set.jsonl", data)
    unreachable = tierwise(
        "calibrate", "--data", path, "--tiers", TIERS, "--policy", "auto", "--target-quality", "1.5",
        "--folds", "3", "--config", config, "--write", "--gate", tmp_path / "gate.joblib",
    )  # fmt: skip
    said = flat(unreachable.stderr + unreachable.stdout)
    assert unreachable.returncode == 2 and "no auto operating point reaches" in said
    assert "Traceback" not in said and config.read_text() == before


def test_gate_needs_write(tmp_path: Path) -> None:
    data = jsonl(tmp_path / "set.jsonl", records(20, 8))
    gate = tierwise(
        "calibrate", "--data", data, "--tiers", TIERS, "--policy", "cascade", "--target-quality", "0.9",
        "--gate", tmp_path / "gate.joblib",
    )  # fmt: skip
    assert gate.returncode == 2 and "it needs --write and --config" in flat(gate.stderr + gate.stdout)


def test_config_writes_are_atomic_and_keep_the_file_mode(tmp_path: Path) -> None:
    import os
    import stat

    from tierwise.classify.calibrate import write_threshold
    from tierwise.config import write_config_text

    config = tmp_path / "router.yaml"
    config.write_text("# a comment\nrouting:\n  classifier:\n    type: keyword\n")
    os.chmod(config, 0o640)
    inode = config.stat().st_ino
    write_threshold(config, 0.31234)
    assert "# a comment" in config.read_text() and "threshold: 0.3123" in config.read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert config.stat().st_ino != inode  # replaced by a rename, not rewritten in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["router.yaml"]  # no temporary file left
    write_config_text(config, "x: ü\n")
    assert config.read_text("utf-8") == "x: ü\n"
