"""`tierwise eval` as a user runs it (a real process), and the replay it runs on.

The set is built here from prompts whose tier the rules router is known to pick with the default routing:

    kind      prompt                                   class      tier      why
    rephrase  "Rephrase: ..."                          rephrase   cheap     task_tiers.rephrase
    code      "Write a python function ..."            code       mid       task_tiers.code
    legal     "... contract review under New York law" chat       premium   the legal blacklist
    medical   "Summarize the side effects of ..."      summarize  mid       the medical domain raises it

so every figure can be recomputed by hand from the data and the tier each prompt went to.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tierwise.config import parse_config
from tierwise.evals.dataset import load_records, parse_record
from tierwise.evals.replay import config_for_tiers, replay
from tierwise.evals.sweep import RulesScorer
from tierwise.providers.replay import load_replay_set

MODELS = ("m-small", "m-medium", "m-large")
TIERS = ("cheap", "mid", "premium")
KINDS: dict[str, tuple[str, str, str, int]] = {  # kind: (prompt, category, class, tier)
    "rephrase": ("Rephrase: the meeting on item {i} moved to Friday.", "writing", "rephrase", 0),
    "code": ("Write a python function that returns the {i}th prime.", "coding", "code", 1),
    "legal": ("Please do a contract review under New York law for clause {i}.", "law", "chat", 2),
    "medical": ("Summarize the side effects of medication number {i}.", "writing", "summarize", 1),
}


def scores_for(kind: str, i: int) -> tuple[float, float, float]:
    if kind == "rephrase":  # cheap wrong on the first two
        return (0.0, 1.0, 1.0) if i < 2 else (1.0, 1.0, 1.0)
    if kind == "code":  # mid wrong on the first
        return (0.0, 0.0, 1.0) if i == 0 else (0.0, 1.0, 1.0)
    if kind == "legal":  # the first is one mid answers as well as premium (both half right)
        return (0.0, 0.5, 0.5) if i == 0 else (0.0, 0.0, 1.0)
    return (1.0, 1.0, 1.0)  # medical summaries: any tier will do


COUNTS = {"rephrase": 6, "code": 4, "legal": 3, "medical": 2}


def make_set(counts: dict[str, int] = COUNTS) -> list[dict[str, Any]]:
    rows = []
    for kind, count in counts.items():
        prompt, category = KINDS[kind][:2]
        for i in range(count):
            unit = 0.001 * (1 + i % 2)  # costs vary by prompt, and 5x per tier
            rows.append(
                {
                    "id": f"{kind}-{i}",
                    "category": category,
                    "messages": [{"role": "user", "content": prompt.format(i=i)}],
                    "outcomes": {
                        m: {"score": s, "cost_usd": unit * 5**j, "response": f"answer {j}"}
                        for j, (m, s) in enumerate(zip(MODELS, scores_for(kind, i), strict=True))
                    },
                }
            )
    return rows


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tierwise(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierwise", *map(str, args)], capture_output=True, text=True, timeout=60
    )


def run_eval(data: Path, *args: str | Path) -> dict[str, Any]:
    out = data.parent / f"{data.stem}-out.json"
    proc = tierwise("eval", "--data", data, "--json", out, *args)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def by_hand(rows: list[dict[str, Any]], key: str = "class") -> dict[str, dict[str, Any]]:
    """The eval figures from the data and the tier each kind of prompt is routed to."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        kind = r["id"].split("-")[0]
        groups[KINDS[kind][2] if key == "class" else r["category"]].append(r)
    groups["overall"] = rows
    out = {}
    for name, members in groups.items():
        n = len(members)
        cost = quality = premium_cost = premium_quality = 0.0
        mix = dict.fromkeys(TIERS, 0.0)
        right = 0
        for r in members:
            tier = KINDS[r["id"].split("-")[0]][3]
            outcomes = [r["outcomes"][m] for m in MODELS]
            cost += outcomes[tier]["cost_usd"]
            quality += outcomes[tier]["score"]
            premium_cost += outcomes[2]["cost_usd"]
            premium_quality += outcomes[2]["score"]
            mix[TIERS[tier]] += 1 / n
            ideal = r.get("ideal_tier")
            if ideal is None:
                ideal = TIERS[next(j for j in range(3) if outcomes[j]["score"] >= outcomes[2]["score"])]
            right += TIERS[tier] == ideal
        out[name] = {
            "requests": n,
            "tier_mix": pytest.approx(mix),
            "cost_usd": pytest.approx(cost),
            "premium_cost_usd": pytest.approx(premium_cost),
            "saving": pytest.approx(1 - cost / premium_cost),
            "quality": pytest.approx(quality / n),
            "premium_quality": pytest.approx(premium_quality / n),
            "quality_vs_premium": pytest.approx(quality / premium_quality),
            "escalation_rate": 0.0,
            "routing_accuracy": pytest.approx(right / n),
        }
    return out


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    d = tmp_path_factory.mktemp("eval")
    data = write(d / "set.jsonl", make_set())
    out = d / "out.json"
    proc = tierwise(
        "eval", "--data", data, "--tiers", ",".join(MODELS), "--json", out, "--report", d / "report"
    )
    assert proc.returncode == 0, proc.stderr
    return d, json.loads(out.read_text()), proc.stdout


def test_eval_figures_match_the_data(eval_run: tuple[Path, dict[str, Any], str]) -> None:
    _, result, stdout = eval_run
    assert result["tiers"] == list(TIERS) and result["by"] == "class"
    assert result["classes"] == by_hand(make_set())
    assert list(result["classes"]) == ["chat", "code", "rephrase", "summarize", "overall"]
    # Overall, by hand: the 15 prompts cost (unit = .001 or .002 alternately; mid 5x, premium 25x)
    #   rephrase 6 at cheap: 3*.001 + 3*.002 = .009     code 4 at mid: 2*.005 + 2*.010 = .030
    #   legal 3 at premium: 2*.025 + .050 = .100        medical 2 at mid: .005 + .010 = .015     -> .154
    # premium-only: 25 * (8*.001 + 7*.002) = 25 * .022 = .55; saving 1 - .154/.55 = 0.72
    # quality: rephrase 4 + code 3 + legal (0.5 + 1 + 1) + medical 2 = 11.5 of 15 prompts
    # routing accuracy: rephrase 4 right (2 need mid), code 4 (the failing one needs premium: routed mid,
    # wrong -> 3), legal 2 (the first's ideal is mid), medical 0 (ideal cheap, routed mid) -> 9/15
    overall = result["classes"]["overall"]
    assert overall["cost_usd"] == pytest.approx(0.154)
    assert overall["saving"] == pytest.approx(0.72)
    assert overall["quality"] == pytest.approx(11.5 / 15)
    assert overall["routing_accuracy"] == pytest.approx(9 / 15)
    assert "set.jsonl: 15 prompts" in stdout


def test_eval_report_has_its_figures(eval_run: tuple[Path, dict[str, Any], str]) -> None:
    d, _, stdout = eval_run
    report = d / "report" / "report.md"
    assert "report:" in stdout
    text = report.read_text()
    assert text.startswith("# set.jsonl")
    assert "](cost_quality.png)" in text and "](tier_mix.png)" in text
    for png in ("cost_quality.png", "tier_mix.png"):
        data = (d / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000, png
    # The data size, the tiers with their models, one row per class, the baselines, the definitions.
    assert "15 prompts" in text
    assert "| cheap | m-small |" in text and "| premium | m-large |" in text
    assert (
        "| code | 4 | cheap:0 mid:100 premium:0 | 0.030000 | 80.0% | 0.750 | 75.0% | 0.0% | 75.0% |" in text
    )
    assert "| **overall** | 15 | cheap:40 mid:40 premium:20 | 0.154000 | 72.0% | 0.767 |" in text
    # code: premium would cost 25 * (.001 + .002 + .001 + .002) = .15, so saving 1 - .03/.15 = 80%
    # premium-only: $.55, quality (6 + 4 + 2.5 + 2) / 15 = 0.967; cheap-only: $.022 (saving 96%),
    # quality (4 + 0 + 0 + 2) / 15 = 0.4
    assert "| premium-only (m-large) | 0.550000 | 0.967 | 0.0% |" in text
    assert "| cheap-only (m-small) | 0.022000 | 0.400 | 96.0% |" in text
    assert "| router | 0.154000 | 0.767 | 72.0% |" in text
    assert "docs/evaluation.md" in text
    assert len(text.splitlines()) < 250


def test_config_with_upstream_names(tmp_path: Path) -> None:
    # A production-shaped config: an OpenAI provider (never called offline) and model keys that differ from
    # the dataset's names; `name:` says which recorded model each one is.
    config = tmp_path / "router.yaml"
    config.write_text(
        "providers:\n"
        "  openai: {type: openai, base_url: 'http://127.0.0.1:9/v1', api_key: sk-not-used}\n"
        "models:\n"
        "  small: {provider: openai, name: m-small}\n"
        "  medium: {provider: openai, name: m-medium}\n"
        "  large: {provider: openai, name: m-large}\n"
        "tiers: {cheap: [small], mid: [medium], premium: [large]}\n"
    )
    data = write(tmp_path / "set.jsonl", make_set())
    assert run_eval(data, "--config", config)["classes"] == by_hand(make_set())


def test_config_naming_a_model_the_data_lacks(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(
        "providers: {r: {type: replay}}\n"
        "models: {small: {provider: r, name: m-small}, big: {provider: r, name: gpt-9}}\n"
        "tiers: {cheap: [small], premium: [big]}\n"
        "routing: {task_tiers: {code: premium, reasoning: premium}, domains: {}}\n"
    )
    data = write(tmp_path / "set.jsonl", make_set())
    proc = tierwise("eval", "--data", data, "--config", config)
    assert proc.returncode == 2
    assert "models with no recorded outcomes in the data: big (upstream name 'gpt-9')" in " ".join(
        proc.stderr.split()
    )


def test_by_category(tmp_path: Path) -> None:
    data = write(tmp_path / "set.jsonl", make_set())
    result = run_eval(data, "--tiers", ",".join(MODELS), "--by", "category")
    assert result["by"] == "category"
    assert list(result["classes"]) == ["coding", "law", "writing", "overall"]
    assert result["classes"] == by_hand(make_set(), key="category")


def test_ideal_tier_labels_override_the_scores(tmp_path: Path) -> None:
    rows = make_set()
    # rephrase-2: every tier right, so its ideal tier is cheap, where it went; labelled mid it is a miss.
    # rephrase-0: cheap wrong, so its ideal is mid and cheap was a miss; labelled cheap it is a hit.
    rows[2]["ideal_tier"], rows[0]["ideal_tier"] = "mid", "cheap"
    rows[3]["ideal_tier"] = "mid"  # rephrase-3 likewise: now a miss
    data = write(tmp_path / "labelled.jsonl", rows)
    result = run_eval(data, "--tiers", ",".join(MODELS))
    assert result["classes"] == by_hand(rows)
    # rephrase: 4/6 right by the scores; -2 (rephrase-2, -3) +1 (rephrase-0) -> 3/6. Overall 9/15 -> 8/15.
    assert result["classes"]["rephrase"]["routing_accuracy"] == pytest.approx(3 / 6)
    assert result["classes"]["overall"]["routing_accuracy"] == pytest.approx(8 / 15)
    # Labels change what counts as right, not cost or quality.
    assert result["classes"]["overall"]["cost_usd"] == pytest.approx(0.154)


def test_a_hand_labelled_set_without_outcomes(tmp_path: Path) -> None:
    rows = [
        {"id": r["id"], "category": r["category"], "messages": r["messages"], "ideal_tier": ideal}
        for r, ideal in zip(
            make_set(), ["cheap"] * 6 + ["mid"] * 4 + ["mid"] * 3 + ["cheap"] * 2, strict=True
        )
    ]
    rows[0]["ideal_output"] = "The meeting on item 0 is now on Friday."
    data = write(tmp_path / "labels.jsonl", rows)
    result = run_eval(data, "--tiers", ",".join(MODELS))
    classes = result["classes"]
    # rephrase all at cheap, as labelled; code at mid, as labelled; legal forced to premium, labelled mid;
    # the medical summaries raised to mid, labelled cheap.
    assert classes["rephrase"]["routing_accuracy"] == 1.0
    assert classes["code"]["routing_accuracy"] == 1.0
    assert classes["chat"]["routing_accuracy"] == 0.0
    assert classes["summarize"]["routing_accuracy"] == 0.0
    assert classes["overall"]["routing_accuracy"] == pytest.approx(10 / 15)
    assert classes["overall"]["tier_mix"] == pytest.approx({"cheap": 0.4, "mid": 0.4, "premium": 0.2})


def test_an_ideal_tier_naming_no_tier_is_an_error(tmp_path: Path) -> None:
    rows = make_set()
    rows[2]["ideal_tier"] = "m-medium"  # a model, not a tier
    data = write(tmp_path / "labelled.jsonl", rows)
    proc = tierwise("eval", "--data", data, "--tiers", ",".join(MODELS))
    assert proc.returncode == 2
    assert "ideal_tier" in proc.stderr and "m-medium" in proc.stderr


def test_duplicate_prompts_keep_their_own_costs(tmp_path: Path) -> None:
    rows = make_set({"rephrase": 3})
    rows[1]["messages"] = rows[0]["messages"]  # same prompt, its own recorded outcomes
    data = write(tmp_path / "dup.jsonl", rows)
    overall = run_eval(data, "--tiers", ",".join(MODELS))["classes"]["overall"]
    # All three at cheap: .001 + .002 + .001 = .004
    assert overall["cost_usd"] == pytest.approx(0.004)


def test_an_empty_data_file_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    proc = tierwise("eval", "--data", data, "--tiers", ",".join(MODELS))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_bad_line_and_bad_tiers(tmp_path: Path) -> None:
    rows = [json.dumps(r) for r in make_set()]
    rows[4] = rows[4].replace('"role": "user"', '"role": "robot"')
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(rows) + "\n")
    proc = tierwise("eval", "--data", data, "--tiers", ",".join(MODELS))
    assert proc.returncode == 2
    assert "line 5: messages[0].role must be one of" in " ".join(proc.stderr.split())
    proc = tierwise("eval", "--data", data, "--tiers", ",".join(MODELS), "--skip-invalid")
    assert proc.returncode == 0 and "skipped:" in proc.stderr
    proc = tierwise("eval", "--data", data, "--tiers", "m-small", "--skip-invalid")
    assert proc.returncode == 2 and "at least two models" in proc.stderr
    proc = tierwise("eval", "--data", data, "--tiers", ",".join(MODELS), "--by", "colour")
    assert proc.returncode == 2 and "--by: use 'class' or 'category'" in proc.stderr


def test_replay_and_the_rules_scorer_pick_the_same_tier() -> None:
    """Offline bench (RulesScorer) and offline eval (the engine) route by one logic, hard limits included."""
    records = [parse_record(r) for r in make_set()] + load_replay_set("builtin:arena-demo")
    models = ("Mistral-7B-Instruct-v0.1", "Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview")
    # The generated prompts need outcomes for the demo's models too: give them the same ones.
    for r in records[:15]:
        r.outcomes = dict(zip(models, r.outcomes.values(), strict=True))
    plain = config_for_tiers(models)
    # A small context window on cheap moves long prompts up a tier: a hard limit both must apply.
    limited = parse_config(
        {
            "providers": {"r": {"type": "replay"}},
            "models": {
                "small": {"provider": "r", "name": models[0], "context_window": 600},
                "medium": {"provider": "r", "name": models[1]},
                "large": {"provider": "r", "name": models[2]},
            },
            "tiers": {"cheap": ["small"], "mid": ["medium"], "premium": ["large"]},
        }
    )
    routed = {}
    for name, config in (("plain", plain), ("limited", limited)):
        routed[name] = replay(config, records).final.tolist()
        scorer = RulesScorer(config)
        disagree = [
            r.id for r, tier in zip(records, routed[name], strict=True) if scorer.tier_index(r) != tier
        ]
        assert disagree == [], name
        assert set(routed[name]) == {0, 1, 2}
    # The limit did move some prompts off cheap (prompt plus expected answer over 600 tokens).
    moved = [(a, b) for a, b in zip(routed["plain"], routed["limited"], strict=True) if a != b]
    assert len(moved) >= 5 and all(a == 0 and b > 0 for a, b in moved)


def test_replay_in_process_matches_the_known_tiers(tmp_path: Path) -> None:
    records = load_records(write(tmp_path / "set.jsonl", make_set()))
    result = replay(config_for_tiers(MODELS), records)
    assert result.final.tolist() == [KINDS[r.id.split("-")[0]][3] for r in records]
    assert result.classes == [KINDS[r.id.split("-")[0]][2] for r in records]
    assert result.models_called == [[MODELS[KINDS[r.id.split("-")[0]][3]]] for r in records]


def test_four_tiers(tmp_path: Path) -> None:
    rows = make_set()
    for r in rows:  # a fourth model between mid and premium, as good as mid
        r["outcomes"] = {**r["outcomes"], "m-upper": dict(r["outcomes"]["m-medium"])}
    data = write(tmp_path / "four.jsonl", rows)
    result = run_eval(data, "--tiers", "m-small,m-medium,m-upper,m-large")
    assert result["tiers"] == ["tier0", "tier1", "tier2", "premium"]
    # Rephrase at the cheapest tier, the legal blacklist at premium.
    assert result["classes"]["rephrase"]["tier_mix"]["tier0"] == 1.0
    assert result["classes"]["chat"]["tier_mix"]["premium"] == 1.0
