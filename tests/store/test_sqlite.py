"""SQLiteStore: feedback and shadow comparisons round-trip, and an older database migrates in place."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tierwise.store import Comparison, Feedback, RoutingRecord, SQLiteStore
from tierwise.store.sqlite import MIGRATIONS


def test_feedback_and_comparisons_round_trip(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "records.db").start()
    now = time.time()
    items = [
        Feedback("r-1", now - 10, 0.75, "close enough", "user", "team-a"),
        Feedback("r-1", now - 5, 1.0),
        Feedback("r-2", now - 3600, 0.0, source="judge"),
    ]
    pairs = [
        Comparison("r-1", now - 8, "shadow", "chat", "cheap", "cheap-a", "premium-a", 3e-6, 3e-4, 12.5, 80.0,
                   "judge:premium-a", 0.5, "as good", 1e-5),
        Comparison("r-3", now - 2, "baseline_sample", None, None, None, "premium-a", error="router failed"),
    ]  # fmt: skip
    for item in [*items, *pairs]:
        store.submit(item)
    store.close()  # drains the writer's queue

    reopened = SQLiteStore(tmp_path / "records.db")
    assert reopened.feedback() == sorted(items, key=lambda f: f.ts)
    assert reopened.feedback(since=now - 60) == items[:2]
    assert reopened.comparisons() == pairs
    assert reopened.comparisons(since=now - 5) == pairs[1:]
    # A comparison is keyed by its request: writing it again replaces it.
    store = SQLiteStore(tmp_path / "records.db").start()
    judged = Comparison("r-3", now - 1, "baseline_sample", "chat", "mid", "mid-a", "premium-a", score=1.0)
    store.submit(judged)
    store.close()
    assert reopened.comparisons() == [pairs[0], judged]


# The schema as tierwise wrote it before feedback and comparisons existed (user_version 2).
V2_SCHEMA = """
CREATE TABLE records (
    request_id TEXT PRIMARY KEY, ts REAL NOT NULL, endpoint TEXT NOT NULL, status TEXT NOT NULL,
    http_status INTEGER NOT NULL, requested_model TEXT, api_key_id TEXT, user_tier TEXT,
    request_class TEXT, tier TEXT, model TEXT, reason TEXT, features TEXT, decision TEXT,
    attempts TEXT, error TEXT, input_tokens INTEGER, output_tokens INTEGER, cost_usd REAL,
    baseline_cost_usd REAL, latency_ms REAL, stream INTEGER, prompt TEXT, response_id TEXT,
    response_text TEXT, routing_cost_usd REAL NOT NULL DEFAULT 0);
CREATE INDEX records_ts ON records (ts);
CREATE INDEX records_class_ts ON records (request_class, ts);
PRAGMA user_version = 2;
"""


def test_a_version_2_database_keeps_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(V2_SCHEMA)
    db.execute(
        "INSERT INTO records (request_id, ts, endpoint, status, http_status, request_class, tier, model, "
        "reason, decision, attempts, cost_usd, baseline_cost_usd, latency_ms, stream, routing_cost_usd) "
        "VALUES ('old-1', 1700000000.0, 'openai.chat', 'ok', 200, 'chat', 'cheap', 'cheap-a', 'task=chat', "
        """'{"tier": "cheap"}', '[{"tier": "cheap", "model": "cheap-a", "provider": "up", "status": "ok", """
        """"latency_ms": 12.0}]', 0.000003, 0.0003, 15.0, 0, 0.0)"""
    )
    db.commit()
    db.close()

    store = SQLiteStore(path).start()
    store.submit(Feedback("old-1", time.time(), 1.0))
    store.close()

    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    tables = {row[0] for row in check.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    check.close()
    assert {"records", "feedback", "comparisons"} <= tables
    [old] = store.query()
    assert isinstance(old, RoutingRecord)
    assert (old.request_id, old.request_class, old.model, old.cost_usd) == ("old-1", "chat", "cheap-a", 3e-6)
    assert old.decision == {"tier": "cheap"} and old.attempts[0].latency_ms == 12.0
    assert [f.request_id for f in store.feedback()] == ["old-1"]
    assert store.comparisons() == []
