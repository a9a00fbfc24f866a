"""`tierwise report` from records: per-class cost against premium-only, escalation health, latency."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tierwise.report import (
    READY_MIN_PAIRS,
    build_stats,
    health,
    mean_interval,
    parse_since,
    premium_p95,
    summarize,
    warnings,
)
from tierwise.store import SQLiteStore
from tierwise.store.records import Attempt, Comparison, Feedback, RoutingRecord


def record(rid: str, klass: str, *, cost: float, baseline: float, latency: float, path: list[str] | None = None,
           status: str = "ok", ts: float | None = None) -> RoutingRecord:  # fmt: skip
    decision = {"tier": "cheap", "policy": "cascade", "path": path} if path is not None else {"tier": "cheap"}
    return RoutingRecord(
        request_id=rid, ts=time.time() if ts is None else ts, endpoint="openai.chat", status=status,  # type: ignore[arg-type]
        http_status=200 if status == "ok" else 502, request_class=klass, tier="cheap", model="m",
        decision=decision, cost_usd=cost, baseline_cost_usd=baseline, latency_ms=latency,
    )  # fmt: skip


RECORDS = [
    # "json": 4 cascaded requests, 3 escalated -> 75%: over the 60% band.
    record("a", "json", cost=0.002, baseline=0.01, latency=10, path=["cheap(fail:json)", "mid(pass)"]),
    record("b", "json", cost=0.002, baseline=0.01, latency=20, path=["cheap(fail:json)", "mid(pass)"]),
    record("c", "json", cost=0.002, baseline=0.01, latency=30, path=["cheap(fail:json)", "mid(pass)"]),
    record("d", "json", cost=0.001, baseline=0.01, latency=40, path=["cheap(pass)"]),
    # "chat": direct, cheap, one upstream failure.
    record("e", "chat", cost=0.001, baseline=0.02, latency=5),
    record("f", "chat", cost=0.0, baseline=0.0, latency=7, status="error"),
]


def test_summary_by_hand() -> None:
    summary = summarize(RECORDS)
    json_row = summary["json"]
    assert json_row["requests"] == 4 and json_row["cascaded"] == 4
    assert json_row["escalation_rate"] == pytest.approx(0.75) and json_row["health"].startswith("high")
    assert json_row["cost_usd"] == pytest.approx(0.007) and json_row["baseline_cost_usd"] == pytest.approx(
        0.04
    )
    assert json_row["saving"] == pytest.approx(1 - 0.007 / 0.04)
    assert json_row["latency_ms"]["p50"] == pytest.approx(25)
    chat = summary["chat"]
    assert chat["errors"] == 1 and chat["escalation_rate"] is None and chat["health"] == ""
    assert chat["saving"] == pytest.approx(1 - 0.001 / 0.02)
    assert summary["overall"]["requests"] == 6
    assert warnings(summary) == [
        "json: 75% of cascaded requests escalate (over 60%): start this class a tier higher"
    ]


def test_health_bands_and_spans() -> None:
    assert [health(r) for r in (0.1, 0.2, 0.6, 0.61)] == [
        "good",
        "normal",
        "normal",
        "high: start this class a tier higher",
    ]
    assert parse_since("7d", now=1_000_000) == 1_000_000 - 7 * 86400
    assert parse_since("30m", now=100_000) == 100_000 - 1800
    with pytest.raises(ValueError, match="7d, 24h or 30m"):
        parse_since("a week")


def test_report_command(tmp_path: Path) -> None:
    db = tmp_path / "records.db"
    store = SQLiteStore(db).start()
    for r in [
        *RECORDS,
        record("old", "chat", cost=1.0, baseline=1.0, latency=1, ts=time.time() - 30 * 86400),
    ]:
        store.submit(r)
    store.close()
    out = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "tierwise", "report", "--db", str(db), "--since", "7d", "--json", str(out)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "start this class a tier higher" in done.stdout
    figures = json.loads(out.read_text())["classes"]
    assert figures["overall"]["requests"] == 6  # the 30-day-old record is outside --since 7d
    bad = subprocess.run(
        [sys.executable, "-m", "tierwise", "report", "--db", str(tmp_path / "none.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2 and "no records at" in bad.stderr


def attempt(tier: str, status: str = "ok", gates: list[dict[str, Any]] | None = None) -> Attempt:
    return Attempt(tier=tier, model=f"{tier}-m", provider="up", status=status, latency_ms=1.0, gates=gates)  # type: ignore[arg-type]


def escalated_record(rid: str, *, hinted: bool, senior_gate_score: float) -> RoutingRecord:
    r = record(rid, "code", cost=0.004, baseline=0.01, latency=50, path=["cheap(fail:code)", "mid(pass)"])
    r.decision = {**(r.decision or {}), "hinted": hinted}
    r.attempts = [
        attempt("cheap", gates=[{"gate": "code_parses", "passed": False, "score": 0.0}]),
        attempt("mid", gates=[{"gate": "code_parses", "passed": True, "score": senior_gate_score}]),
    ]
    return r


def pair(rid: str, klass: str, score: float | None, *, judge: str = "judge:premium-m") -> Comparison:
    return Comparison(rid, time.time(), "shadow", klass, "cheap", "cheap-m", "premium-m", 0.001, 0.01,
                      judge=judge, score=score, judge_cost_usd=0.0005, error=None if score is not None else "timeout")  # fmt: skip


def test_quality_from_feedback_with_its_interval() -> None:
    now = time.time()
    feedback = [
        Feedback("a", now, 0.0),  # replaced by the same source's later score
        Feedback("a", now + 1, 1.0),
        Feedback("a", now + 2, 0.5, source="judge"),  # another source counts on its own
        Feedback("b", now, 0.5),
        Feedback("e", now, 0.25),
        Feedback("unknown", now, 1.0),  # scores no request in the window: counts nowhere
    ]
    summary = summarize(RECORDS, feedback)
    scores = [1.0, 0.5, 0.5]  # json: a (user), a (judge), b
    mean = sum(scores) / 3
    stdev = (sum((s - mean) ** 2 for s in scores) / 2) ** 0.5
    half = 1.96 * stdev / 3**0.5
    assert summary["json"]["quality"] == {
        "n": 3,
        "mean": pytest.approx(mean),
        "ci95": pytest.approx([mean - half, min(1.0, mean + half)]),
    }
    assert summary["chat"]["quality"] == {"n": 1, "mean": 0.25, "ci95": [0.0, 1.0]}  # one score: no interval
    assert summary["overall"]["quality"]["n"] == 4
    assert mean_interval([]) is None
    # Eight scores of 0.25 and 0.75: stdev sqrt(8 * 0.0625 / 7), half-width 1.96 * stdev / sqrt(8).
    half = 1.96 * (0.5 / 7) ** 0.5 / 8**0.5
    assert mean_interval([0.25, 0.75] * 4) == pytest.approx((0.5, 0.5 - half, 0.5 + half))
    assert mean_interval([0.0, 0.0, 1.0, 1.0]) == (0.5, 0.0, 1.0)  # clipped to [0, 1]


def test_hints_hinted_against_unhinted() -> None:
    records = [
        escalated_record("h1", hinted=True, senior_gate_score=1.0),
        escalated_record("h2", hinted=True, senior_gate_score=0.5),
        escalated_record("u1", hinted=False, senior_gate_score=0.0),
        # Not escalated: in neither group.
        record("p", "code", cost=0.001, baseline=0.01, latency=5, path=["cheap(pass)"]),
    ]
    feedback = [Feedback("h1", time.time(), 1.0), Feedback("u1", time.time(), 0.0)]
    hints = summarize(records, feedback)["code"]["hints"]
    assert sorted(hints) == ["hinted", "unhinted"]
    assert hints["hinted"]["escalated"] == 2
    assert hints["hinted"]["feedback"] == {"n": 1, "mean": 1.0, "ci95": [0.0, 1.0]}
    assert hints["hinted"]["final_gate_score"]["mean"] == pytest.approx(0.75)
    assert hints["unhinted"]["escalated"] == 1 and hints["unhinted"]["feedback"]["mean"] == 0.0
    assert summarize(RECORDS)["json"]["hints"] is None  # no cascade said whether it hinted


def test_shadow_preference_accuracy_and_readiness() -> None:
    # "chat": 20 wins, 10 ties, 10 losses by the judge, 2 failed pairs; "sql": 30 losses; "json": 5 wins.
    pairs = [pair(f"c{i}", "chat", 1.0) for i in range(20)]
    pairs += [pair(f"t{i}", "chat", 0.5) for i in range(10)]
    pairs += [pair(f"l{i}", "chat", 0.0) for i in range(10)]
    pairs += [pair(f"f{i}", "chat", None) for i in range(2)]
    pairs += [pair(f"s{i}", "sql", 0.0) for i in range(30)]
    pairs += [pair(f"j{i}", "json", 1.0) for i in range(5)]
    summary = summarize(RECORDS, comparisons=pairs)
    chat = summary["chat"]["shadow"]
    assert (chat["pairs"], chat["judged"], chat["failed"]) == (42, 40, 2)
    assert (chat["wins"], chat["ties"], chat["losses"]) == (20, 10, 10)
    scores = [1.0] * 20 + [0.5] * 10 + [0.0] * 10
    mean = sum(scores) / 40
    half = 1.96 * (sum((s - mean) ** 2 for s in scores) / 39) ** 0.5 / 40**0.5
    assert chat["preference"] == pytest.approx(0.625)
    assert chat["preference_ci95"] == pytest.approx([mean - half, mean + half])
    assert chat["downgrades"] == 40 and chat["compared"] == 40
    assert chat["downgrades_held"] == pytest.approx(30 / 40)  # wins and ties held up
    assert chat["router_cost_usd"] == pytest.approx(42 * 0.001)
    assert chat["baseline_cost_usd"] == pytest.approx(42 * 0.01)
    assert chat["judge_cost_usd"] == pytest.approx(42 * 0.0005)
    assert chat["ready"] is True  # >= READY_MIN_PAIRS judged, lower bound above 0.5 - margin
    sql = summary["sql"]["shadow"]
    assert sql["preference"] == 0.0 and sql["ready"] is False
    json_shadow = summary["json"]["shadow"]
    assert json_shadow["preference"] == 1.0 and json_shadow["ready"] is None  # fewer than READY_MIN_PAIRS
    assert 5 < READY_MIN_PAIRS <= 30
    # Same-model pairs say nothing about routing: they count for the preference, not for the downgrades.
    same = summarize([], comparisons=[pair("x", "code", 0.5, judge="same_model")])["code"]["shadow"]
    assert same["preference"] == 0.5 and same["downgrades_held"] is None
    assert summary["overall"]["shadow"]["pairs"] == 42 + 30 + 5
    assert summarize(RECORDS)["json"]["shadow"]["preference"] is None


def test_readiness_needs_real_comparisons_and_downgrades_are_cheaper_choices() -> None:
    # 40 same-model pairs (0.5 each) and 10 real ones: the preference is over all 50, but readiness needs
    # READY_MIN_PAIRS pairs where the models differed.
    same = [
        Comparison(
            f"m{i}",
            time.time(),
            "baseline_sample",
            "chat",
            "premium",
            "premium-m",
            "premium-m",
            0.01,
            0.0,
            judge="same_model",
            score=0.5,
        )
        for i in range(40)
    ]
    real = [pair(f"r{i}", "chat", 1.0) for i in range(10)]
    shadow = summarize([], comparisons=[*same, *real])["chat"]["shadow"]
    assert shadow["judged"] == 50 and shadow["compared"] == 10
    assert shadow["preference"] == pytest.approx((40 * 0.5 + 10) / 50)
    assert shadow["ready"] is None
    more = [pair(f"q{i}", "chat", 0.5) for i in range(READY_MIN_PAIRS - 10)]
    assert summarize([], comparisons=[*same, *real, *more])["chat"]["shadow"]["ready"] is True
    # A router model dearer than the baseline's is not a downgrade: it is left out of downgrades_held.
    dearer = Comparison("d", time.time(), "shadow", "chat", "premium", "big-m", "premium-m", 0.05, 0.01,
                        judge="judge:premium-m", score=0.0)  # fmt: skip
    shadow = summarize([], comparisons=[*real, dearer])["chat"]["shadow"]
    assert shadow["downgrades"] == 10 and shadow["downgrades_held"] == 1.0 and shadow["losses"] == 1


def test_warnings_quality_below_baseline_and_slow_p95() -> None:
    pairs = [pair(f"s{i}", "sql", 0.0) for i in range(29)] + [pair("s29", "sql", 1.0)]
    summary = summarize(RECORDS, comparisons=pairs)
    # json's p95 over its latencies 10..40 ms is 38.5 ms; chat's (only "e" was served) 5 ms.
    got = warnings(summary, premium_p95_ms=30.0)
    assert got[0] == "json: p95 latency 38 ms is worse than the premium model's 30 ms"
    assert got[1].startswith("json: 75% of cascaded requests escalate")
    assert got[2].startswith(
        "sql: quality below baseline: preference 0.03 (95% CI 0.00-0.10) over 30 judged pairs"
    )
    assert len(got) == 3
    assert not any("p95" in line for line in warnings(summary))  # no premium figure: no latency warning
    assert warnings(summarize(RECORDS), premium_p95_ms=40.0) == warnings(summarize(RECORDS))


def test_premium_p95_and_the_costlier_class() -> None:
    premium = [
        record(f"p{i}", "legal", cost=0.01, baseline=0.01, latency=100 + i, ts=1000 + i) for i in range(5)
    ]
    for r in premium:
        r.tier = "premium"
    assert premium_p95([*RECORDS, *premium], "premium") == pytest.approx(103.8)
    assert premium_p95(RECORDS, "premium") is None
    costly = summarize([record("x", "tools", cost=0.02, baseline=0.01, latency=1)])
    assert warnings(costly) == ["tools: costs 100% more than premium-only would have"]


def test_build_stats_series_and_recent() -> None:
    start = 1_000_000.0
    records = [
        record("early", "json", cost=0.001, baseline=0.01, latency=1, ts=start + 10, path=["cheap(fail:json)", "mid(pass)"]),
        record("late", "chat", cost=0.002, baseline=0.02, latency=1, ts=start + 3590),
        record("failed", "chat", cost=0.0, baseline=0.03, latency=1, ts=start + 3595, status="error"),
    ]  # fmt: skip
    stats = build_stats(records, [], [], start=start, end=start + 3600, premium_tier="premium")
    series = stats["series"]
    assert len(series) == 24 and series[1]["start"] - series[0]["start"] == pytest.approx(150)
    assert (series[0]["requests"], series[0]["escalated"], series[0]["cost_usd"]) == (1, 1, 0.001)
    assert series[-1]["requests"] == 2 and series[-1]["baseline_cost_usd"] == pytest.approx(
        0.02
    )  # served only
    assert [r["request_id"] for r in stats["recent"]] == ["failed", "late", "early"]
    assert stats["recent"][2]["path"] == ["cheap(fail:json)", "mid(pass)"]
    only = build_stats(
        records, [], [], start=start, end=start + 3600, premium_tier="premium", request_class="chat"
    )
    assert sorted(only["classes"]) == ["chat", "overall"] and len(only["recent"]) == 2


def seeded_db(tmp_path: Path) -> Path:
    """RECORDS plus premium answers, a feedback score and shadow pairs, in a records file."""
    db = tmp_path / "records.db"
    store = SQLiteStore(db).start()
    premium = record("prem", "legal", cost=0.01, baseline=0.01, latency=15)
    premium.tier = "premium"
    items: list[Any] = [*RECORDS, premium, Feedback("a", time.time(), 0.75)]
    items += [pair(f"s{i}", "json", 1.0 if i % 3 else 0.5) for i in range(30)]
    for item in items:
        store.submit(item)
    store.close()
    return db


def run_report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierwise", "report", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip


def test_report_command_shows_quality_shadow_and_latency(tmp_path: Path) -> None:
    db = seeded_db(tmp_path)
    out = tmp_path / "report.json"
    done = run_report("--db", str(db), "--json", str(out))
    assert done.returncode == 0, done.stderr
    for column in ("upstream fallbacks", "quality", "shadow", "p95 ms"):
        assert column in done.stdout
    assert "0.75 (n=1)" in done.stdout  # json's quality
    # json's shadow block: 20 wins, 10 ties; the preference with its 95% interval
    assert re.search(r"0\.83 \[0\.\d\d-0\.\d\d\] \(n=30\) ready", done.stdout), done.stdout
    body = json.loads(out.read_text())
    # --db alone: premium is the tier whose answers cost their whole baseline; its p95 is 15 ms, and json's
    # (38.5 ms) and chat's are compared with it.
    assert body["premium_tier"] == "premium" and body["premium_p95_ms"] == 15
    assert "json: p95 latency 38 ms is worse than the premium model's 15 ms" in body["warnings"]
    assert body["classes"]["json"]["shadow"]["ready"] is True
    assert body["classes"]["json"]["quality"]["mean"] == 0.75
    named = run_report("--db", str(db), "--premium-tier", "cheap", "--json", str(out))
    assert named.returncode == 0, named.stderr
    assert json.loads(out.read_text())["premium_tier"] == "cheap"


def test_report_html(tmp_path: Path) -> None:
    db = seeded_db(tmp_path)
    page = tmp_path / "out" / "report.html"
    done = run_report("--db", str(db), "--since", "24h", "--html", str(page))
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    assert text.startswith("<!doctype html>")
    summary = summarize(SQLiteStore(db).query(), SQLiteStore(db).feedback(), SQLiteStore(db).comparisons())
    for name in ("json", "chat", "legal", "overall"):
        row = summary[name]
        assert f'data-class="{name}"' in text
        assert f"${row['cost_usd']:.6f}" in text and f"${row['baseline_cost_usd']:.6f}" in text
        assert f"{row['saving']:.1%}" in text
    assert "75.0%" in text and "high: start this class a tier higher" in text  # json's escalation
    assert "0.75 [0.00, 1.00] n=1" in text
    assert "json: 75% of cascaded requests escalate" in text
    images = re.findall(r'<img [^>]*data-plot="(\w+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert [name for name, _ in images] == ["cost", "escalation", "quality"]
    for _, data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    escaped = tmp_path / "escaped.html"
    hostile = SQLiteStore(tmp_path / "hostile.db").start()
    hostile.submit(record("x", "<script>alert(1)</script>", cost=0.001, baseline=0.01, latency=1))
    hostile.close()
    assert run_report("--db", str(tmp_path / "hostile.db"), "--html", str(escaped)).returncode == 0
    assert "<script>" not in escaped.read_text() and "&lt;script&gt;" in escaped.read_text()


def test_downgrades_held_from_feedback() -> None:
    import dataclasses

    from tierwise.store.records import Feedback

    cheap_good = record("g", "chat", cost=0.001, baseline=0.01, latency=5)
    cheap_bad = record("b", "chat", cost=0.001, baseline=0.01, latency=5)
    premium = dataclasses.replace(record("p", "chat", cost=0.01, baseline=0.01, latency=5), tier="premium")
    unscored = record("u", "chat", cost=0.001, baseline=0.01, latency=5)
    scores = [Feedback("g", 1.0, 0.9), Feedback("b", 1.0, 0.2), Feedback("p", 1.0, 0.1)]
    summary = summarize([cheap_good, cheap_bad, premium, unscored], scores, premium_tier="premium")
    # Premium's own answers say nothing about a cheaper choice; unscored ones neither.
    assert summary["chat"]["downgrades_held_feedback"] == {"n": 2, "share": 0.5}
    assert summarize([cheap_good], scores)["chat"]["downgrades_held_feedback"] is None
