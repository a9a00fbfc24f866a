"""The embedded record store: one SQLite file in WAL mode, written by a background thread in batches.

The queue, the writer thread, batching, flush and close, and row conversion are tierwise.store.base's, shared
with the PostgreSQL store; this module is SQLite's schema (``PRAGMA user_version`` counts the migrations run)
and SQL.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tierwise.store.base import (
    CHANGE_COLUMNS,
    BatchStore,
    Groups,
    StoreError,
    Table,
    adding_insert,
    change_row,
)
from tierwise.store.records import Change

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


@migration
def _changes(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE changes (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, source TEXT NOT NULL,
            summary TEXT NOT NULL, patch TEXT NOT NULL, applied INTEGER NOT NULL, config_path TEXT,
            detail TEXT)"""
    )
    db.execute("CREATE INDEX changes_ts ON changes (ts)")


@migration
def _api_keys(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY, key_sha256 TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
            created_at REAL NOT NULL, user_tier TEXT, team TEXT, budget_usd REAL, budget_period TEXT,
            rpm INTEGER, over_budget TEXT, revoked_at REAL)"""
    )
    db.execute(
        """CREATE TABLE key_usage (
            key_id TEXT NOT NULL, period TEXT NOT NULL, replica TEXT NOT NULL,
            spent_usd REAL NOT NULL, requests INTEGER NOT NULL, PRIMARY KEY (key_id, period, replica))"""
    )
    db.execute(
        """CREATE TABLE key_minutes (
            key_id TEXT NOT NULL, minute INTEGER NOT NULL, replica TEXT NOT NULL,
            requests INTEGER NOT NULL, PRIMARY KEY (key_id, minute, replica))"""
    )


def _newer(version: int) -> StoreError:
    return StoreError(
        f"the database's tierwise schema is version {version}, newer than this tierwise knows "
        f"({len(MIGRATIONS)}): upgrade tierwise"
    )


def _version(db: sqlite3.Connection) -> int:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        raise _newer(version)
    return version


def connect(path: Path) -> sqlite3.Connection:
    """Open the file and run the migrations it has not had. Another process may migrate at the same time:
    the version is read again under the write lock (``BEGIN IMMEDIATE``), so each step runs once. A schema
    newer than this tierwise knows is a StoreError; on any error the connection is closed."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        if _version(db) < len(MIGRATIONS):
            db.execute("BEGIN IMMEDIATE")
            try:
                version = _version(db)  # another process may have migrated while we waited for the lock
                for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
                    step(db)
                    db.execute(f"PRAGMA user_version={number}")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
    except BaseException:
        db.close()
        raise
    return db


@functools.cache
def _insert(table: Table) -> str:
    if table.add:
        return adding_insert(table, "?")
    verb = "INSERT" if table.key is None else "INSERT OR REPLACE"
    marks = ", ".join("?" * len(table.columns))
    return f"{verb} INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks})"


class SQLiteStore(BatchStore):
    """Records in one SQLite file; safe to share between the event loop and the writer thread."""

    mark = "?"

    def __init__(self, path: str | Path, *, batch_size: int = 256, flush_interval_s: float = 0.2) -> None:
        super().__init__(batch_size=batch_size, flush_interval_s=flush_interval_s)
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None  # the writer thread's

    def describe(self) -> str:
        return str(self.path)

    def _prepare(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connect(self.path).close()  # create or migrate before the first request
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the SQLite store at {self.path}: {exc}") from None

    def _write(self, groups: Groups) -> None:
        if self._db is None:
            self._db = connect(self.path)
        db = self._db
        try:
            db.execute("BEGIN")
            for table, rows in groups:
                db.executemany(_insert(table), rows)
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _close_writer(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _fetch(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        db = connect(self.path)
        db.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in db.execute(sql, args)]
        finally:
            db.close()

    def _execute(self, sql: str, args: Sequence[Any]) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = connect(self.path)
        try:
            return db.execute(sql, args).rowcount
        finally:
            db.close()

    def add_change(self, change: Change) -> int:
        """Write one config change now (not through the writer thread); returns its id."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = connect(self.path)
        try:
            marks = ", ".join("?" * len(CHANGE_COLUMNS))
            cursor = db.execute(
                f"INSERT INTO changes ({', '.join(CHANGE_COLUMNS)}) VALUES ({marks})", change_row(change)
            )
            change.id = int(cursor.lastrowid or 0)
            return change.id
        finally:
            db.close()
