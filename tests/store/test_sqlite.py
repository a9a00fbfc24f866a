"""SQLiteStore: feedback and shadow comparisons round-trip, and an older database migrates in place."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

import tierwise.store.sqlite as sqlite_module
from tierwise.store import Comparison, Feedback, RoutingRecord, SQLiteStore, StoreError
from tierwise.store.sqlite import MIGRATIONS, connect


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


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer than this tierwise knows") as caught:
        SQLiteStore(path).start()
    assert "upgrade tierwise" in str(caught.value)


def test_processes_migrating_together_run_each_step_once(tmp_path: Path) -> None:
    # Another process holds the write lock, migrates, and commits; this one then finds nothing to do.
    path = tmp_path / "race.db"
    other = connect(path)  # migrated fully
    other.execute("PRAGMA user_version=0")  # as if this one had read version 0 before the other migrated
    versions: list[int] = []
    original = sqlite_module.MIGRATIONS[0]

    def counted(db: sqlite3.Connection) -> None:
        versions.append(0)
        original(db)

    other.execute("BEGIN IMMEDIATE")
    done = threading.Event()

    def migrate_later() -> None:
        time.sleep(0.2)
        other.execute(f"PRAGMA user_version={len(MIGRATIONS)}")
        other.execute("COMMIT")
        done.set()

    worker = threading.Thread(target=migrate_later)
    worker.start()
    steps = list(sqlite_module.MIGRATIONS)
    sqlite_module.MIGRATIONS[0] = counted
    try:
        connect(path).close()  # reads 0, waits for the lock, reads again: fully migrated
    finally:
        sqlite_module.MIGRATIONS[:] = steps
        worker.join()
        other.close()
    assert done.is_set() and versions == []


def test_a_failing_migration_rolls_back_and_closes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "broken.db"
    steps = list(sqlite_module.MIGRATIONS)

    def broken(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("no space left")

    monkeypatch.setattr(sqlite_module, "MIGRATIONS", [*steps, broken])
    with pytest.raises(StoreError, match="no space left"):
        SQLiteStore(path).start()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == 0  # all of it rolled back
    check.close()
    monkeypatch.setattr(sqlite_module, "MIGRATIONS", steps)
    SQLiteStore(path).start().close()
