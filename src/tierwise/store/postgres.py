"""The shared record store: PostgreSQL (psycopg 3), for several replicas behind a load balancer.

The queue, the writer thread, batching, flush and close, row conversion and the readers are
tierwise.store.base's, shared with SQLite. This module is PostgreSQL's schema and SQL: versioned migrations
(``schema_version``, one row per step, run under an advisory lock so replicas starting together migrate once),
a writer connection (one transaction per batch, ``executemany`` in pipeline mode, reconnected once when the
server went away), one lock-guarded reader connection for the reports, the stats endpoint and config sync,
and the config versions the replicas share (``config_versions``, ``config_artifacts``; see
tierwise.server.sync).

JSON columns are ``text`` as in SQLite (cast with ``::jsonb`` to query into them): ``jsonb`` rejects the
``\\u0000`` escape a prompt may carry. PostgreSQL's text cannot hold NUL characters at all, so a NUL in a
string is written as U+FFFD. The DSN is a secret: messages name the host, port and database, never the user
or password.
"""

from __future__ import annotations

import functools
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from tierwise.store.base import (
    CHANGE_COLUMNS,
    CLOSE_TIMEOUT_S,
    BatchStore,
    Groups,
    Row,
    StoreError,
    Table,
    adding_insert,
    change_row,
)
from tierwise.store.records import Change, ConfigVersion

if TYPE_CHECKING:
    import psycopg

Migration = Callable[["psycopg.Connection[Any]"], None]
MIGRATIONS: list[Migration] = []
# pg_advisory_xact_lock key for migrations: "tierwise" in ASCII.
_MIGRATION_LOCK = 0x7469657277697365


def migration(fn: Migration) -> Migration:
    """Register a schema step; steps run once each, in the order they are declared."""
    MIGRATIONS.append(fn)
    return fn


@migration
def _records_feedback_comparisons_changes(db: psycopg.Connection[Any]) -> None:
    db.execute(
        """CREATE TABLE records (
            request_id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, endpoint TEXT NOT NULL,
            status TEXT NOT NULL, http_status INTEGER NOT NULL, requested_model TEXT, api_key_id TEXT,
            user_tier TEXT, request_class TEXT, tier TEXT, model TEXT, reason TEXT, features TEXT,
            decision TEXT, attempts TEXT, error TEXT, input_tokens BIGINT, output_tokens BIGINT,
            cost_usd DOUBLE PRECISION, baseline_cost_usd DOUBLE PRECISION, latency_ms DOUBLE PRECISION,
            routing_cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0, stream BOOLEAN, prompt TEXT,
            response_id TEXT, response_text TEXT)"""
    )
    db.execute("CREATE INDEX records_ts ON records (ts)")
    db.execute("CREATE INDEX records_class_ts ON records (request_class, ts)")
    db.execute(
        """CREATE TABLE feedback (
            id BIGSERIAL PRIMARY KEY, request_id TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL,
            score DOUBLE PRECISION NOT NULL, comment TEXT, source TEXT NOT NULL, api_key_id TEXT)"""
    )
    db.execute("CREATE INDEX feedback_request ON feedback (request_id)")
    db.execute("CREATE INDEX feedback_ts ON feedback (ts)")
    db.execute(
        """CREATE TABLE comparisons (
            request_id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, mode TEXT NOT NULL,
            request_class TEXT, router_tier TEXT, router_model TEXT, baseline_model TEXT NOT NULL,
            router_cost_usd DOUBLE PRECISION, baseline_cost_usd DOUBLE PRECISION,
            router_latency_ms DOUBLE PRECISION, baseline_latency_ms DOUBLE PRECISION, judge TEXT,
            score DOUBLE PRECISION, reason TEXT, judge_cost_usd DOUBLE PRECISION, error TEXT)"""
    )
    db.execute("CREATE INDEX comparisons_ts ON comparisons (ts)")
    db.execute(
        """CREATE TABLE changes (
            id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, source TEXT NOT NULL,
            summary TEXT NOT NULL, patch TEXT NOT NULL, applied BOOLEAN NOT NULL, config_path TEXT,
            detail TEXT)"""
    )
    db.execute("CREATE INDEX changes_ts ON changes (ts)")


@migration
def _config_versions(db: psycopg.Connection[Any]) -> None:
    db.execute(
        """CREATE TABLE config_versions (
            id BIGSERIAL PRIMARY KEY, ts DOUBLE PRECISION NOT NULL, source TEXT NOT NULL,
            origin TEXT NOT NULL, config_name TEXT NOT NULL, digest TEXT NOT NULL, config_text TEXT NOT NULL,
            artifacts TEXT NOT NULL)"""
    )
    db.execute("CREATE INDEX config_versions_digest ON config_versions (digest)")
    db.execute(
        """CREATE TABLE config_artifacts (
            sha256 TEXT PRIMARY KEY, size BIGINT NOT NULL, data BYTEA NOT NULL)"""
    )


@migration
def _api_keys(db: psycopg.Connection[Any]) -> None:
    db.execute(
        """CREATE TABLE api_keys (
            id TEXT PRIMARY KEY, key_sha256 TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, user_tier TEXT, team TEXT, budget_usd DOUBLE PRECISION,
            budget_period TEXT, rpm INTEGER, over_budget TEXT, revoked_at DOUBLE PRECISION)"""
    )
    db.execute(
        """CREATE TABLE key_usage (
            key_id TEXT NOT NULL, period TEXT NOT NULL, replica TEXT NOT NULL,
            spent_usd DOUBLE PRECISION NOT NULL, requests INTEGER NOT NULL,
            PRIMARY KEY (key_id, period, replica))"""
    )
    db.execute(
        """CREATE TABLE key_minutes (
            key_id TEXT NOT NULL, minute BIGINT NOT NULL, replica TEXT NOT NULL, requests INTEGER NOT NULL,
            PRIMARY KEY (key_id, minute, replica))"""
    )


@migration
def _store_batches(db: psycopg.Connection[Any]) -> None:
    # The batches the writers committed (kept an hour): a batch retried after its connection broke at
    # COMMIT is found here and not written twice (key usage added twice, feedback duplicated).
    db.execute("CREATE TABLE store_batches (id TEXT PRIMARY KEY, ts DOUBLE PRECISION NOT NULL)")
    db.execute("CREATE INDEX store_batches_ts ON store_batches (ts)")


# How long a committed batch's id is kept (seconds), and how often the old ones are deleted.
BATCH_ID_KEEP_S = 3600.0
_BATCH_PRUNE_EVERY_S = 300.0


def migrate(db: psycopg.Connection[Any], target: int | None = None) -> int:
    """Run the migrations the database has not had (up to ``target`` steps in all); returns the version.
    Idempotent, and safe when several replicas start at once (an advisory lock serialises them)."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            "version INTEGER PRIMARY KEY, migrated_at DOUBLE PRECISION NOT NULL)"
        )
        row = db.execute("SELECT max(version) FROM schema_version").fetchone()
        version = int(row[0]) if row and row[0] is not None else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the database's tierwise schema is version {version}, newer than this tierwise knows "
                f"({len(MIGRATIONS)}): upgrade tierwise"
            )
        for number, step in enumerate(MIGRATIONS[version:target], start=version + 1):
            step(db)
            db.execute("INSERT INTO schema_version VALUES (%s, %s)", (number, time.time()))
            version = number
    return version


# ---- the DSN: checked, and never shown with its credentials ----

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_URL_PASSWORD = re.compile(r"(://[^:/@?#]*:)([^@/?#]*)@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def _redact(text: str, dsn: str) -> str:
    """``text`` with the DSN's password (and the DSN itself) taken out."""
    if dsn and dsn in text:
        text = text.replace(dsn, describe_dsn(dsn))
    for pattern in (_URL_PASSWORD, _KV_PASSWORD):
        for match in pattern.finditer(dsn):
            secret = match.group(2).strip("'")
            if secret:
                text = text.replace(secret, "***")
    return text


def check_dsn(dsn: str) -> str | None:
    """What is wrong with a connection string (without repeating its secrets), or None."""
    if not dsn.strip():
        return "empty; give a postgresql:// URL or a key=value connection string"
    if _URL.match(dsn) and not dsn.startswith(("postgresql://", "postgres://")):
        scheme = dsn.split("://", 1)[0]
        return f"a {scheme}:// URL; expected a postgresql:// URL or a key=value connection string"
    if not _URL.match(dsn) and "=" not in dsn:
        return "expected a postgresql:// URL or a key=value connection string (host=... dbname=...)"
    from psycopg import conninfo

    try:
        conninfo.conninfo_to_dict(dsn)
    except Exception as exc:
        return f"not a valid PostgreSQL connection string ({_redact(str(exc).strip(), dsn)})"
    return None


def describe_dsn(dsn: str) -> str:
    """``postgresql://host:port/dbname``: where, without who."""
    try:
        from psycopg import conninfo

        parts = conninfo.conninfo_to_dict(dsn)
    except Exception:
        return "postgresql://(unparsable connection string)"
    host = str(parts.get("host") or parts.get("hostaddr") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{host}{port}/{parts.get('dbname') or ''}"


def _no_nul(row: Row) -> Row:
    if any(type(v) is str and "\x00" in v for v in row):
        return tuple(v.replace("\x00", "\ufffd") if type(v) is str else v for v in row)
    return row


@functools.cache
def _insert(table: Table) -> str:
    if table.add:
        return adding_insert(table, "%s")
    columns = ", ".join(table.columns)
    marks = ", ".join(["%s"] * len(table.columns))
    sql = f"INSERT INTO {table.name} ({columns}) VALUES ({marks})"
    if table.key is not None:
        update = ", ".join(f"{c} = EXCLUDED.{c}" for c in table.columns if c != table.key)
        sql += f" ON CONFLICT ({table.key}) DO UPDATE SET {update}"
    return sql


class PostgresStore(BatchStore):
    """Records in a PostgreSQL database that several tierwise replicas share."""

    mark = "%s"

    def __init__(
        self,
        dsn: str,
        *,
        batch_size: int = 256,
        flush_interval_s: float = 0.2,
        connect_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(batch_size=batch_size, flush_interval_s=flush_interval_s)
        problem = check_dsn(dsn)
        if problem is not None:
            raise StoreError(f"store.dsn: {problem}")
        self._dsn = dsn
        self.connect_timeout_s = connect_timeout_s
        self._writer: psycopg.Connection[Any] | None = None  # the writer thread's
        self._reader: psycopg.Connection[Any] | None = None
        self._reader_lock = threading.Lock()
        self._migrated = False
        self._batches_pruned = 0.0  # when the writer last deleted old batch ids

    def describe(self) -> str:
        return describe_dsn(self._dsn)

    def __repr__(self) -> str:
        return f"PostgresStore({self.describe()!r})"

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            import psycopg
        except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
            raise StoreError("store.type postgres needs psycopg: pip install 'psycopg[binary]'") from None
        options: dict[str, Any] = {"connect_timeout": max(1, round(self.connect_timeout_s))}
        if "application_name" not in self._dsn:
            options["application_name"] = "tierwise"  # how the DBA's pg_stat_activity names us
        try:
            return psycopg.connect(self._dsn, autocommit=True, **options)
        except psycopg.Error as exc:
            message = _redact(" ".join(str(exc).split()), self._dsn)
            raise StoreError(f"cannot connect to PostgreSQL at {self.describe()}: {message}") from None

    def _open_reader(self) -> psycopg.Connection[Any]:
        """Connect the reader (under its lock), migrating the schema on the first connection."""
        import psycopg

        db = self._connect()
        if not self._migrated:
            try:
                migrate(db)
            except psycopg.Error as exc:
                db.close()
                message = _redact(" ".join(str(exc).split()), self._dsn)
                raise StoreError(
                    f"cannot migrate the tierwise schema in {self.describe()}: {message}"
                ) from None
            except BaseException:
                db.close()
                raise
            self._migrated = True
        self._reader = db
        return db

    def _prepare(self) -> None:
        with self._reader_lock:
            if self._reader is None or self._reader.closed:
                self._open_reader()

    def _write(self, groups: Groups) -> None:
        import psycopg

        # The batch's id, written in its transaction: when the connection breaks at COMMIT the batch may
        # be in the database or not, and the retry finds out from this id instead of adding it twice.
        batch_id = uuid.uuid4().hex
        for attempt in (1, 2):
            if self._writer is None or self._writer.closed:
                self._writer = self._connect()
            try:
                self._write_once(self._writer, batch_id, groups)
                return
            except psycopg.OperationalError:
                # The server went away (restart, failover, idle timeout): reconnect and try once more.
                self._close_writer()
                if attempt == 2:
                    raise

    def _write_once(self, db: psycopg.Connection[Any], batch_id: str, groups: Groups) -> None:
        """One batch in one transaction, unless the batch with this id was committed already."""
        now = time.time()
        with db.transaction(), db.cursor() as cursor:
            cursor.execute(
                "INSERT INTO store_batches (id, ts) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
                (batch_id, now),
            )
            if cursor.rowcount == 0:
                return  # committed by the attempt whose connection broke
            for table, rows in groups:
                cursor.executemany(_insert(table), [_no_nul(r) for r in rows])
            if now - self._batches_pruned >= _BATCH_PRUNE_EVERY_S:
                cursor.execute("DELETE FROM store_batches WHERE ts < %s", (now - BATCH_ID_KEEP_S,))
                self._batches_pruned = now

    def release(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _run_read(self, fn: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """Run ``fn`` on the reader connection, reconnecting once if the server went away."""
        import psycopg

        with self._reader_lock:
            for attempt in (1, 2):
                db = self._reader
                if db is None or db.closed:
                    db = self._open_reader()
                try:
                    return fn(db)
                except psycopg.OperationalError:
                    db.close()
                    self._reader = None
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        def run(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
            with db.cursor(row_factory=dict_row) as cursor:
                return cursor.execute(sql, args).fetchall()

        rows: list[dict[str, Any]] = self._run_read(run)
        return rows

    def _execute(self, sql: str, args: Sequence[Any]) -> int:
        count: int = self._run_read(lambda db: db.execute(sql, _no_nul(tuple(args))).rowcount)
        return count

    def add_change(self, change: Change) -> int:
        """Write one config change now (not through the writer thread); returns its id."""
        marks = ", ".join(["%s"] * len(CHANGE_COLUMNS))
        sql = f"INSERT INTO changes ({', '.join(CHANGE_COLUMNS)}) VALUES ({marks}) RETURNING id"
        row = self._run_read(lambda db: db.execute(sql, _no_nul(change_row(change))).fetchone())
        change.id = int(row[0])
        return change.id

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        super().close(timeout)
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def __del__(self) -> None:
        # A store dropped without close (a command that read and returned) still hangs up. Nothing else
        # holds it now, so no lock; a started store is held by its writer thread until close.
        for db in (getattr(self, "_reader", None), getattr(self, "_writer", None)):
            if db is not None and not db.closed:
                db.close()

    # ---- config versions the replicas share (tierwise.server.sync) ----

    def publish_config(self, version: ConfigVersion, blobs: dict[str, bytes]) -> tuple[int, bool]:
        """Make ``version`` the latest unless the latest has its digest already; returns (id, published).
        ``blobs`` are artifact bytes by sha256, stored once each."""

        def run(db: psycopg.Connection[Any]) -> tuple[int, bool]:
            with db.transaction():
                db.execute("LOCK TABLE config_versions IN SHARE ROW EXCLUSIVE MODE")
                latest = db.execute(
                    "SELECT id, digest FROM config_versions ORDER BY id DESC LIMIT 1"
                ).fetchone()
                if latest is not None and latest[1] == version.digest:
                    return int(latest[0]), False
                for sha, data in blobs.items():
                    db.execute(
                        "INSERT INTO config_artifacts (sha256, size, data) VALUES (%s, %s, %s) "
                        "ON CONFLICT (sha256) DO NOTHING",
                        (sha, len(data), data),
                    )
                row = db.execute(
                    "INSERT INTO config_versions (ts, source, origin, config_name, digest, config_text, "
                    "artifacts) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                    (version.ts, version.source, version.origin, version.config_name, version.digest,
                     version.config_text.replace("\x00", "\ufffd"), orjson.dumps(version.artifacts).decode()),
                ).fetchone()  # fmt: skip
                assert row is not None
                return int(row[0]), True

        published: tuple[int, bool] = self._run_read(run)
        version.id = published[0]
        return published

    def latest_config(self) -> tuple[int, str] | None:
        """The latest config version's (id, digest): what each replica polls."""
        row = self._run_read(
            lambda db: db.execute(
                "SELECT id, digest FROM config_versions ORDER BY id DESC LIMIT 1"
            ).fetchone()
        )
        return None if row is None else (int(row[0]), str(row[1]))

    def config_version(self, version_id: int | None = None) -> ConfigVersion | None:
        """One config version in full (None: the latest)."""
        sql = "SELECT * FROM config_versions"
        args: list[Any] = []
        if version_id is None:
            sql += " ORDER BY id DESC LIMIT 1"
        else:
            sql += " WHERE id = %s"
            args.append(version_id)
        rows = self._fetch(sql, args)
        if not rows:
            return None
        row = rows[0]
        row["artifacts"] = orjson.loads(row["artifacts"])
        return ConfigVersion(**row)

    def knows_config(self, digest: str) -> bool:
        """Whether any version ever published had this digest."""
        return bool(self._fetch("SELECT 1 AS known FROM config_versions WHERE digest = %s LIMIT 1", [digest]))

    def artifact_data(self, sha256: str) -> bytes | None:
        """An artifact's bytes, when they were small enough to share through the database."""
        rows = self._fetch("SELECT data FROM config_artifacts WHERE sha256 = %s", [sha256])
        return bytes(rows[0]["data"]) if rows else None
