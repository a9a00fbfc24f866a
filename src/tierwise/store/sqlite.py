"""The embedded record store: one SQLite file in WAL mode, written by a background thread in batches.

``submit`` never blocks the request path: it puts the record on a queue. The writer thread drains the queue
every ``flush_interval_s`` (or as soon as ``batch_size`` records wait) and writes them in one transaction.
``close`` drains what is left, so a clean shutdown loses nothing.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from tierwise.store.records import Attempt, Comparison, Feedback, RoutingRecord

_COLUMNS = [f.name for f in fields(RoutingRecord)]
_FEEDBACK_COLUMNS = [f.name for f in fields(Feedback)]
_COMPARISON_COLUMNS = [f.name for f in fields(Comparison)]
_JSON_COLUMNS = ("features", "decision", "attempts")

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register a schema step; steps run once each, in the order they are declared."""
    MIGRATIONS.append(fn)
    return fn


@migration
def _create_records(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE records (
            request_id TEXT PRIMARY KEY, ts REAL NOT NULL, endpoint TEXT NOT NULL, status TEXT NOT NULL,
            http_status INTEGER NOT NULL, requested_model TEXT, api_key_id TEXT, user_tier TEXT,
            request_class TEXT, tier TEXT, model TEXT, reason TEXT, features TEXT, decision TEXT,
            attempts TEXT, error TEXT, input_tokens INTEGER, output_tokens INTEGER, cost_usd REAL,
            baseline_cost_usd REAL, latency_ms REAL, stream INTEGER, prompt TEXT, response_id TEXT,
            response_text TEXT)"""
    )
    db.execute("CREATE INDEX records_ts ON records (ts)")
    db.execute("CREATE INDEX records_class_ts ON records (request_class, ts)")


@migration
def _routing_cost(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE records ADD COLUMN routing_cost_usd REAL NOT NULL DEFAULT 0")


@migration
def _feedback_and_comparisons(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE feedback (
            id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, ts REAL NOT NULL,
            score REAL NOT NULL, comment TEXT, source TEXT NOT NULL, api_key_id TEXT)"""
    )
    db.execute("CREATE INDEX feedback_request ON feedback (request_id)")
    db.execute("CREATE INDEX feedback_ts ON feedback (ts)")
    db.execute(
        """CREATE TABLE comparisons (
            request_id TEXT PRIMARY KEY, ts REAL NOT NULL, mode TEXT NOT NULL, request_class TEXT,
            router_tier TEXT, router_model TEXT, baseline_model TEXT NOT NULL, router_cost_usd REAL,
            baseline_cost_usd REAL, router_latency_ms REAL, baseline_latency_ms REAL, judge TEXT,
            score REAL, reason TEXT, judge_cost_usd REAL, error TEXT)"""
    )
    db.execute("CREATE INDEX comparisons_ts ON comparisons (ts)")


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        step(db)
        db.execute(f"PRAGMA user_version={number}")
        db.execute("COMMIT")
    return db


def _row(record: RoutingRecord) -> tuple[Any, ...]:
    values = []
    for name in _COLUMNS:
        value = getattr(record, name)
        if name == "attempts":
            value = orjson.dumps([a.to_dict() for a in value]).decode()
        elif name in _JSON_COLUMNS:
            value = None if value is None else orjson.dumps(value).decode()
        values.append(value)
    return tuple(values)


def _plain(item: Any, columns: list[str]) -> tuple[Any, ...]:
    return tuple(getattr(item, c) for c in columns)


def _record(row: sqlite3.Row) -> RoutingRecord:
    data = dict(row)
    for name in _JSON_COLUMNS:
        if data[name] is not None:
            data[name] = orjson.loads(data[name])
    data["attempts"] = [Attempt(**a) for a in data["attempts"] or []]
    data["stream"] = bool(data["stream"])
    return RoutingRecord(**data)


_STOP = object()


class SQLiteStore:
    """Records in one SQLite file; safe to share between the event loop and the writer thread."""

    def __init__(self, path: str | Path, *, batch_size: int = 256, flush_interval_s: float = 0.2) -> None:
        self.path = Path(path)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._flushed = threading.Condition()
        self._pending = 0
        self.errors: list[str] = []

    def start(self) -> SQLiteStore:
        if self._thread is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connect(self.path).close()  # create or migrate before the first request, and fail loudly here
            self._thread = threading.Thread(target=self._run, name="tierwise-store", daemon=True)
            self._thread.start()
        return self

    def submit(self, record: RoutingRecord | Feedback | Comparison) -> None:
        """Queue a record, a feedback score or a shadow comparison for the writer thread."""
        with self._flushed:
            self._pending += 1
        self._queue.put(record)

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything submitted so far is written (for tests and shutdown)."""
        with self._flushed:
            self._flushed.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        db = connect(self.path)
        stopping = False
        while not stopping:
            batch: list[Any] = []
            try:
                item = self._queue.get(timeout=self.flush_interval_s)
            except queue.Empty:
                continue
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
                if len(batch) >= self.batch_size:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(db, batch)
        db.close()

    def _write(self, db: sqlite3.Connection, batch: list[Any]) -> None:
        records = [_row(r) for r in batch if isinstance(r, RoutingRecord)]
        feedback = [_plain(f, _FEEDBACK_COLUMNS) for f in batch if isinstance(f, Feedback)]
        pairs = [_plain(c, _COMPARISON_COLUMNS) for c in batch if isinstance(c, Comparison)]
        try:
            db.execute("BEGIN")
            for table, columns, rows, verb in (
                ("records", _COLUMNS, records, "INSERT OR REPLACE"),
                ("feedback", _FEEDBACK_COLUMNS, feedback, "INSERT"),
                ("comparisons", _COMPARISON_COLUMNS, pairs, "INSERT OR REPLACE"),
            ):
                if rows:
                    marks = ", ".join("?" * len(columns))
                    db.executemany(f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            # Keep serving; the failure is visible on /readyz and in the errors list.
            if db.in_transaction:
                db.execute("ROLLBACK")
            self.errors.append(f"writing a batch of {len(batch)} rows failed: {exc}")
        finally:
            with self._flushed:
                self._pending -= len(batch)
                self._flushed.notify_all()

    # ---- reading (reports, tests, learning) ----

    def query(self, *, since: float | None = None, limit: int | None = None) -> list[RoutingRecord]:
        """Records, oldest first, optionally from ``since`` (unix time) and capped at ``limit``."""
        db = connect(self.path)
        db.row_factory = sqlite3.Row
        try:
            sql = "SELECT * FROM records"
            args: list[Any] = []
            if since is not None:
                sql += " WHERE ts >= ?"
                args.append(since)
            sql += " ORDER BY ts"
            if limit is not None:
                sql += " LIMIT ?"
                args.append(limit)
            return [_record(row) for row in db.execute(sql, args)]
        finally:
            db.close()

    def get(self, request_id: str) -> RoutingRecord | None:
        db = connect(self.path)
        db.row_factory = sqlite3.Row
        try:
            row = db.execute("SELECT * FROM records WHERE request_id = ?", (request_id,)).fetchone()
            return None if row is None else _record(row)
        finally:
            db.close()

    def _select(self, table: str, since: float | None) -> list[dict[str, Any]]:
        db = connect(self.path)
        db.row_factory = sqlite3.Row
        try:
            sql, args = f"SELECT * FROM {table}", []  # the table names are ours, not input
            if since is not None:
                sql += " WHERE ts >= ?"
                args.append(since)
            return [dict(row) for row in db.execute(sql + " ORDER BY ts", args)]
        finally:
            db.close()

    def feedback(self, *, since: float | None = None) -> list[Feedback]:
        """Feedback scores, oldest first."""
        rows = self._select("feedback", since)
        return [Feedback(**{k: v for k, v in row.items() if k != "id"}) for row in rows]

    def comparisons(self, *, since: float | None = None) -> list[Comparison]:
        """Shadow and baseline-sample comparisons, oldest first."""
        return [Comparison(**row) for row in self._select("comparisons", since)]
