"""`tierwise bench` as a user runs it: a real process over train and test files written here.

With `--router rules`, the three kinds of prompt are routed differently and predictably: "Rephrase: ..." to
cheap, "Write a python function ..." to mid (task_tiers: code -> mid) and "... contract review under New York
law ..." to premium (the legal blacklist). Scores are chosen so that the rules point reaches Q95 on the training
set but not on the test set: the calibrated point (its threshold fixed on train) is the rules point, while on
test only premium-only reaches Q95. What holds for any router (the JSON's shape, the baselines, the calibrated
point being exactly what its decisions cost and score) is checked for the default learned router too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

MODELS = ("m-small", "m-medium", "m-large")
KINDS = {  # kind: (prompt, tier the rules router picks)
    "rephrase": ("Rephrase: the meeting on item {i} moved to Friday.", 0),
    "code": ("Write a python function that returns the {i}th prime.", 1),
    "legal": ("Please do a contract review under New York law for clause {i}.", 2),
}


def row(rid: str, kind: str, i: int, scores: tuple[float, float, float]) -> dict[str, Any]:
    # Costs vary per prompt (longer prompts cost more) and per tier (10x a tier).
    base = 0.0001 * (1 + i % 3)
    return {
        "id": rid,
        "category": kind,
        "messages": [{"role": "user", "content": KINDS[kind][0].format(i=i)}],
        "outcomes": {
            m: {"score": s, "cost_usd": base * 10**j, "response": f"answer {j}"}
            for j, (m, s) in enumerate(zip(MODELS, scores, strict=True))
        },
    }


def make_set(name: str, counts: dict[str, int], cheap_fails: int) -> list[dict[str, Any]]:
    """Rephrase prompts: all tiers right, except the first ``cheap_fails`` where cheap is wrong.
    Code prompts: cheap wrong, mid and premium right. Legal prompts: only premium right."""
    rows = []
    for kind, count in counts.items():
        for i in range(count):
            if kind == "rephrase":
                scores = (0.0 if i < cheap_fails else 1.0, 1.0, 1.0)
            else:
                scores = (0.0, 1.0, 1.0) if kind == "code" else (0.0, 0.0, 1.0)
            rows.append(row(f"{name}-{kind}-{i}", kind, i, scores))
    return rows


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# Train, 40 prompts: 16 rephrase (1 where cheap fails), 12 code, 12 legal. Premium quality 1; the rules
# point 39/40 = 0.975 >= 0.95, so calibration picks it (threshold 1).
TRAIN = make_set("train", {"rephrase": 16, "code": 12, "legal": 12}, cheap_fails=1)
# Test, 30 prompts: 10 of each, 3 rephrase where cheap fails. The rules point: 27/30 = 0.9 < 0.95.
TEST = make_set("test", {"rephrase": 10, "code": 10, "legal": 10}, cheap_fails=3)


def tierwise(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierwise", *map(str, args)], capture_output=True, text=True, timeout=60
    )


def flat(text: str) -> str:
    """The terminal wraps long messages; compare them with whitespace collapsed."""
    return " ".join(text.split())


Run = tuple[dict[str, Any], list[dict[str, Any]]]


def run_bench(directory: Path, *extra: str) -> Run:
    train, test = write(directory / "train.jsonl", TRAIN), write(directory / "test.jsonl", TEST)
    proc = tierwise(
        "bench", "--train", train, "--test", test, "--tiers", ",".join(MODELS),
        "--json", directory / "out" / "bench.json", "--decisions", directory / "out" / "decisions.jsonl", *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "bench: m-small < m-medium < m-large" in proc.stdout
    result = json.loads((directory / "out" / "bench.json").read_text())
    lines = (directory / "out" / "decisions.jsonl").read_text().splitlines()
    return result, [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def rules_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_bench(tmp_path_factory.mktemp("bench-rules"), "--router", "rules")


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_bench(tmp_path_factory.mktemp("bench-learned"))  # the default router


@pytest.fixture(params=["rules", "learned"])
def bench_run(request: pytest.FixtureRequest) -> Run:
    run: Run = request.getfixturevalue(f"{request.param}_run")
    return run


def test_json_has_every_figure(bench_run: Run) -> None:
    result, _ = bench_run
    assert result["tiers"] == list(MODELS)
    assert (result["n_train"], result["n_test"]) == (40, 30)
    base = result["baselines"]
    assert set(base) == {"premium", "cheap", "random", "oracle"}
    assert set(base["premium"]) == set(base["cheap"]) == {"quality", "cost_usd"}
    assert base["random"] == {"apgr": 0.5}
    assert set(base["oracle"]) == {"quality", "cost_usd", "saving"}
    direct = result["policies"]["direct"]
    for key in ("apgr", "cpt50", "cpt80", "saving_at_q95", "saving_at_q100", "routing_accuracy_at_q95"):
        assert isinstance(direct[key], float), key
    assert {"quality", "cost_usd", "saving"} <= set(direct["calibrated_q95"])
    assert direct["curve"] and all(set(p) == {"cost_usd", "quality", "tier_mix"} for p in direct["curve"])
    assert all(set(p["tier_mix"]) == {"cheap", "mid", "premium"} for p in direct["curve"])
    # The curve runs from cheap-only to premium-only.
    assert direct["curve"][0]["tier_mix"]["cheap"] == 1.0
    assert direct["curve"][-1]["tier_mix"]["premium"] == 1.0


def test_calibrated_point_is_what_the_decisions_cost_and_score(bench_run: Run) -> None:
    result, decisions = bench_run
    outcomes = {r["id"]: r["outcomes"] for r in TEST}
    policies = sorted({d["policy"] for d in decisions})
    assert policies == sorted(result["policies"])
    for policy in policies:
        mine = [d for d in decisions if d["policy"] == policy]
        assert sorted(d["id"] for d in mine) == sorted(outcomes)
        # From the decisions file and the test data alone: every model called is paid for, the final one scored.
        cost = sum(outcomes[d["id"]][m]["cost_usd"] for d in mine for m in d["models_called"])
        quality = sum(outcomes[d["id"]][d["final_model"]]["score"] for d in mine) / len(mine)
        calibrated = result["policies"][policy]["calibrated_q95"]
        assert calibrated["cost_usd"] == pytest.approx(cost), policy
        assert calibrated["quality"] == pytest.approx(quality), policy
        assert calibrated["saving"] == pytest.approx(1 - cost / result["baselines"]["premium"]["cost_usd"])


def test_rules_calibrated_point_comes_from_train(rules_run: Run) -> None:
    result, decisions = rules_run
    # The threshold was fixed on train, where the rules point reaches Q95 (39/40): every test prompt goes
    # where the rules send it, although on test that point only reaches 27/30 = 0.9 of premium.
    for d in (d for d in decisions if d["policy"] == "direct"):
        kind = d["id"].split("-")[1]
        assert d["models_called"] == [d["final_model"]] == [MODELS[KINDS[kind][1]]], d
    calibrated = result["policies"]["direct"]["calibrated_q95"]
    assert calibrated["quality"] == pytest.approx(0.9)
    assert calibrated["quality_vs_premium"] == pytest.approx(0.9)
    # 7 of the 10 rephrase prompts are right at cheap, all code at mid, all legal at premium: 27/30.
    assert calibrated["routing_accuracy"] == pytest.approx(0.9)


def test_baselines_recomputed_from_the_data(bench_run: Run) -> None:
    result, _ = bench_run
    base = result["baselines"]
    n = len(TEST)
    for name, j in (("cheap", 0), ("premium", 2)):
        outcomes = [r["outcomes"][MODELS[j]] for r in TEST]
        assert base[name]["cost_usd"] == pytest.approx(sum(o["cost_usd"] for o in outcomes))
        assert base[name]["quality"] == pytest.approx(sum(o["score"] for o in outcomes) / n)
    # Oracle: each prompt at the cheapest model scoring at least premium's score.
    cost = quality = 0.0
    for r in TEST:
        scores = [r["outcomes"][m]["score"] for m in MODELS]
        ideal = next(j for j in range(3) if scores[j] >= scores[2])
        cost += r["outcomes"][MODELS[ideal]]["cost_usd"]
        quality += scores[ideal]
    assert base["oracle"]["cost_usd"] == pytest.approx(cost)
    assert base["oracle"]["quality"] == pytest.approx(quality / n)
    assert base["oracle"]["saving"] == pytest.approx(1 - cost / base["premium"]["cost_usd"])
    # By construction every prompt has a model that answers it, so the oracle is perfect.
    assert base["oracle"]["quality"] == 1.0


def test_rules_router_curve_and_figures(rules_run: Run) -> None:
    result, _ = rules_run
    direct = result["policies"]["direct"]
    base = result["baselines"]
    curve = direct["curve"]
    # The rules router has one operating point between cheap-only and premium-only.
    assert len(curve) == 3
    assert curve[0]["tier_mix"] == {"cheap": 1.0, "mid": 0.0, "premium": 0.0}
    assert curve[2]["tier_mix"] == {"cheap": 0.0, "mid": 0.0, "premium": 1.0}
    assert curve[1]["tier_mix"] == pytest.approx({"cheap": 1 / 3, "mid": 1 / 3, "premium": 1 / 3})
    assert curve[1]["cost_usd"] == pytest.approx(direct["calibrated_q95"]["cost_usd"])
    # On test the rules point (0.9) misses Q95 (0.95) and Q100: only premium-only reaches them.
    assert direct["saving_at_q95"] == 0.0
    assert direct["saving_at_q100"] == 0.0
    # At premium-only, only the legal prompts (ideal tier premium) are at their ideal tier: 10/30.
    assert direct["routing_accuracy_at_q95"] == pytest.approx(1 / 3)
    # APGR with the single point at (x, y): x*y/2 + (1-x)*(y+1)/2, with x its cost share and y its PGR.
    cheap, premium = base["cheap"], base["premium"]
    x = (curve[1]["cost_usd"] - cheap["cost_usd"]) / (premium["cost_usd"] - cheap["cost_usd"])
    y = (curve[1]["quality"] - cheap["quality"]) / (premium["quality"] - cheap["quality"])
    assert direct["apgr"] == pytest.approx(x * y / 2 + (1 - x) * (y + 1) / 2)
    # CPT(50%): y >= 0.5, so on the first segment, at x * 0.5 / y.
    assert direct["cpt50"] == pytest.approx(x * 0.5 / y)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write(tmp_path / "train.jsonl", TRAIN)
    write(tmp_path / "test.jsonl", TEST)
    return tmp_path


def test_a_bad_line_stops_with_its_line_and_field(data_dir: Path) -> None:
    rows = [json.dumps(r) for r in TEST]
    bad = dict(TEST[2], outcomes=dict(TEST[2]["outcomes"], **{"m-large": {"score": 1.5, "cost_usd": 0.1}}))
    rows[2] = json.dumps(bad)
    (data_dir / "test.jsonl").write_text("\n".join(rows) + "\n")
    args = ("bench", "--train", data_dir / "train.jsonl", "--test", data_dir / "test.jsonl")
    proc = tierwise(*args, "--tiers", ",".join(MODELS), "--json", data_dir / "out.json")
    assert proc.returncode == 2
    assert "line 3: outcomes.m-large.score must be a number in [0, 1], got 1.5" in flat(proc.stderr)
    assert "Traceback" not in proc.stderr
    assert not (data_dir / "out.json").exists()

    proc = tierwise(*args, "--tiers", ",".join(MODELS), "--json", data_dir / "out.json", "--skip-invalid")
    assert proc.returncode == 0, proc.stderr
    assert "skipped:" in proc.stderr and "line 3:" in flat(proc.stderr)
    result = json.loads((data_dir / "out.json").read_text())
    assert (result["n_train"], result["n_test"]) == (40, 29)


def test_an_unknown_router_is_refused(data_dir: Path) -> None:
    proc = tierwise(
        "bench", "--train", data_dir / "train.jsonl", "--test", data_dir / "test.jsonl",
        "--tiers", ",".join(MODELS), "--router", "magic",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--router: use one of learned, rules" in flat(proc.stderr)


def test_one_model_is_not_enough(data_dir: Path) -> None:
    proc = tierwise(
        "bench", "--train", data_dir / "train.jsonl", "--test", data_dir / "test.jsonl", "--tiers", "m-small"
    )
    assert proc.returncode == 2
    assert "--tiers: name at least two models, cheapest first" in flat(proc.stderr)


def test_a_model_missing_from_the_data_is_named(data_dir: Path) -> None:
    proc = tierwise(
        "bench", "--train", data_dir / "train.jsonl", "--test", data_dir / "test.jsonl",
        "--tiers", "m-small,m-medium,gpt-9",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "no outcome for model 'gpt-9'" in flat(proc.stderr)
    assert "Traceback" not in proc.stderr


def test_two_tiers(data_dir: Path) -> None:
    # Cheap and premium only: the rules send code to the upper of two tiers, premium; rephrase to cheap.
    out = data_dir / "two.json"
    proc = tierwise(
        "bench", "--train", data_dir / "train.jsonl", "--test", data_dir / "test.jsonl",
        "--tiers", "m-small,m-large", "--json", out, "--router", "rules",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    curve = json.loads(out.read_text())["policies"]["direct"]["curve"]
    assert curve[1]["tier_mix"] == pytest.approx({"cheap": 1 / 3, "premium": 2 / 3})


def test_four_tiers(tmp_path: Path) -> None:
    def four(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [dict(r, outcomes={**r["outcomes"], "m-upper": r["outcomes"]["m-medium"]}) for r in rows]

    out = tmp_path / "four.json"
    proc = tierwise(
        "bench", "--train", write(tmp_path / "train.jsonl", four(TRAIN)),
        "--test", write(tmp_path / "test.jsonl", four(TEST)),
        "--tiers", "m-small,m-medium,m-upper,m-large", "--router", "rules", "--json", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    curve = json.loads(out.read_text())["policies"]["direct"]["curve"]
    assert set(curve[0]["tier_mix"]) == {"tier0", "tier1", "tier2", "premium"}


def test_an_empty_test_set_is_refused(data_dir: Path) -> None:
    (data_dir / "empty.jsonl").write_text("")
    proc = tierwise(
        "bench", "--train", data_dir / "train.jsonl", "--test", data_dir / "empty.jsonl",
        "--tiers", ",".join(MODELS),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "empty.jsonl" in proc.stderr
