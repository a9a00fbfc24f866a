"""`tierwise report` from records: per-class cost against premium-only, escalation health, latency."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tierwise.report import health, parse_since, summarize, warnings
from tierwise.store import SQLiteStore
from tierwise.store.records import RoutingRecord


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
