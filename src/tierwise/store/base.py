"""What every record store shares: the queue, the writer thread, batching, flush and close, row conversion,
and the readers.

``submit`` never blocks the request path: it puts the item on a queue. The writer thread waits for an item,
lets those that follow within ``GATHER_S`` (5 ms) join it, drains the queue (at most ``batch_size`` items a
batch) and hands the batch, already turned into rows per table, to the backend's ``_write`` (one
transaction); idle, it wakes every ``flush_interval_s``. ``close`` drains what is left, so a clean
shutdown loses nothing. A batch that fails is counted in ``errors`` and the proxy keeps serving; ``problems``
(what ``/readyz`` shows) lists the failures since the last batch that was written.

A backend (SQLite, PostgreSQL) supplies: ``_prepare`` (create or migrate the schema, at ``start``), ``_write``
(one batch, in the writer thread), ``_close_writer``, ``_fetch`` (one SELECT as dicts), ``add_change`` and
``describe``. The SQL the readers send is the same for both; ``mark`` is the backend's placeholder.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import orjson

from tierwise.errors import TierwiseError
from tierwise.store.records import Attempt, Change, Comparison, Feedback, KeyUsage, RoutingRecord, StoredKey

log = logging.getLogger(__name__)


class StoreError(TierwiseError):
    """The record store cannot be opened (a bad path, an unreachable database); the message says which."""


Item = RoutingRecord | Feedback | Comparison | KeyUsage


@dataclass(frozen=True, slots=True)
class Table:
    """One table the writer fills: its columns in row order, and the key a newer row replaces (or None).
    With ``add``, a row whose key exists adds those columns to the stored ones instead of replacing it."""

    name: str
    columns: tuple[str, ...]
    key: str | None
    add: tuple[str, ...] = ()


RECORDS = Table("records", tuple(f.name for f in fields(RoutingRecord)), "request_id")
FEEDBACK = Table("feedback", tuple(f.name for f in fields(Feedback)), None)
COMPARISONS = Table("comparisons", tuple(f.name for f in fields(Comparison)), "request_id")
CHANGE_COLUMNS = ("ts", "source", "summary", "patch", "applied", "config_path", "detail")
# Store keys' usage, one row per key, period (or minute) and replica: each replica adds to its own rows, and
# reads the others' (tierwise.keys).
KEY_USAGE = Table(
    "key_usage", ("key_id", "period", "replica", "spent_usd", "requests"), "key_id, period, replica",
    ("spent_usd", "requests"),
)  # fmt: skip
KEY_MINUTES = Table(
    "key_minutes", ("key_id", "minute", "replica", "requests"), "key_id, minute, replica", ("requests",)
)
KEY_COLUMNS = tuple(f.name for f in fields(StoredKey))
_JSON_COLUMNS = ("features", "decision", "attempts")
_RECORD_JSON = tuple(i for i, name in enumerate(RECORDS.columns) if name in _JSON_COLUMNS)

Row = tuple[Any, ...]
Groups = list[tuple[Table, list[Row]]]


# ---- row conversion (both backends keep JSON as text, booleans as their own type or 0/1) ----


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def record_row(record: RoutingRecord) -> Row:
    values = []
    for name in RECORDS.columns:
        value = getattr(record, name)
        if name == "attempts":
            value = orjson.dumps([a.to_dict() for a in value]).decode()
        elif name in _JSON_COLUMNS:
            value = _json(value)
        values.append(value)
    return tuple(values)


def record_from_row(row: Mapping[str, Any]) -> RoutingRecord:
    data = dict(row)
    for name in _JSON_COLUMNS:
        if data[name] is not None:
            data[name] = orjson.loads(data[name])
    data["attempts"] = [Attempt(**a) for a in data["attempts"] or []]
    data["stream"] = bool(data["stream"])
    return RoutingRecord(**data)


def plain_row(item: Feedback | Comparison, table: Table) -> Row:
    return tuple(getattr(item, c) for c in table.columns)


def change_row(change: Change) -> Row:
    return (change.ts, change.source, change.summary, change.patch, bool(change.applied),
            change.config_path, _json(change.detail))  # fmt: skip


def change_from_row(row: Mapping[str, Any]) -> Change:
    data = dict(row)
    detail = data.pop("detail")
    data["applied"] = bool(data["applied"])
    return Change(**data, detail=None if detail is None else orjson.loads(detail))


def adding_insert(table: Table, mark: str) -> str:
    """The INSERT for a table with ``add`` columns (the same SQL for SQLite and PostgreSQL)."""
    marks = ", ".join([mark] * len(table.columns))
    adds = ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in table.add)
    return (
        f"INSERT INTO {table.name} ({', '.join(table.columns)}) VALUES ({marks}) "
        f"ON CONFLICT ({table.key}) DO UPDATE SET {adds}"
    )


def group_rows(batch: Sequence[Item], bad: list[tuple[Item, Exception]] | None = None) -> Groups:
    """A batch as rows per table, leaving out the tables it has nothing for. Each item is converted on its
    own: one that cannot be (a value JSON cannot hold, a wrong type) is left out and, with ``bad``, appended
    there with its error; without ``bad`` the error is raised."""
    records, feedback, pairs = [], [], []
    usage: dict[tuple[str, str, str], list[Any]] = {}
    minutes: dict[tuple[str, int, str], int] = {}
    for item in batch:
        try:
            if isinstance(item, RoutingRecord):
                records.append(record_row(item))
            elif isinstance(item, Feedback):
                feedback.append(plain_row(item, FEEDBACK))
            elif isinstance(item, KeyUsage):
                # Checked before anything is added, so a bad one leaves the sums as they were.
                dollars, count = float(item.spent_usd), int(item.requests)
                keys = [(str(item.key_id), str(p), str(item.replica)) for p in item.periods]
                minute = None if item.minute is None else int(item.minute)
                # Summed per row first: one statement per key and period, however many requests it has.
                for key in keys:
                    row = usage.setdefault(key, [0.0, 0])
                    row[0] += dollars
                    row[1] += count
                if minute is not None and count:
                    at = (str(item.key_id), minute, str(item.replica))
                    minutes[at] = minutes.get(at, 0) + count
            elif isinstance(item, Comparison):
                pairs.append(plain_row(item, COMPARISONS))
            else:
                raise TypeError(f"not a record, feedback, comparison or key usage: {type(item).__name__}")
        except Exception as exc:
            if bad is None:
                raise
            bad.append((item, exc))
    spent = [(*k, v[0], v[1]) for k, v in usage.items()]
    counted = [(*k, n) for k, n in minutes.items()]
    tables = ((RECORDS, records), (FEEDBACK, feedback), (COMPARISONS, pairs), (KEY_USAGE, spent),
              (KEY_MINUTES, counted))  # fmt: skip
    return [(t, rows) for t, rows in tables if rows]


_STOP = object()
# How long the writer waits, after an item arrives, for others to join its batch (seconds). Measured with
# bench/overhead.py (learned routing; bench/README.md): sequential latency about 0.2 ms lower than writing
# each record as it comes, throughput at concurrency 50 the same within the machine's noise.
GATHER_S = 0.005
_KEEP_ERRORS = 100
# How long ``close`` waits for the writer to drain the queue (seconds).
CLOSE_TIMEOUT_S = 30.0


class BatchStore(ABC):
    """Records written off the request path in batches by one background thread; read back by the reports,
    the stats endpoint and learning. Safe to share between the event loop, the writer and reader threads."""

    # The backend's query placeholder ("?" for SQLite, "%s" for psycopg).
    mark: ClassVar[str] = "?"

    def __init__(self, *, batch_size: int = 256, flush_interval_s: float = 0.2) -> None:
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._flushed = threading.Condition()
        # Items are numbered as they are queued (``_submitted``, under ``_flushed``, so the queue's order
        # is the numbers' order); the writer counts those it is done with (``_done``) in the same order.
        # ``flush`` waits for the number submitted before it was called, however many come in after.
        self._submitted = 0
        self._done = 0
        # Every failed batch (the newest _KEEP_ERRORS), and those since the last batch that was written
        # (the newest _KEEP_ERRORS too).
        self.errors: list[str] = []
        self._failing: list[str] = []
        # Items left out of a batch because they could not be turned into rows.
        self.dropped = 0

    # ---- the backend ----

    @abstractmethod
    def describe(self) -> str:
        """Where the records are, for messages: a path, or a database URL without its credentials."""

    @abstractmethod
    def _prepare(self) -> None:
        """Create or migrate the schema; raise StoreError saying what is wrong."""

    @abstractmethod
    def _write(self, groups: Groups) -> None:
        """Write one batch in one transaction (in the writer thread); raise on failure."""

    @abstractmethod
    def _close_writer(self) -> None:
        """Release what ``_write`` opened (in the writer thread, when it stops)."""

    @abstractmethod
    def _fetch(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        """Run one SELECT; rows as dicts by column name."""

    @abstractmethod
    def add_change(self, change: Change) -> int:
        """Write one config change now (not through the writer thread); returns its id."""

    @abstractmethod
    def _execute(self, sql: str, args: Sequence[Any]) -> int:
        """Run one statement now (not through the writer thread); returns the number of rows it changed."""

    # ---- writing ----

    def check(self) -> None:
        """Open the store (creating or migrating its schema) without starting the writer; raises
        StoreError saying what is wrong."""
        self._prepare()

    def start(self) -> BatchStore:
        """Open (create or migrate) the store, failing loudly here, and start the writer thread."""
        if self._thread is None:
            self._prepare()
            self._thread = threading.Thread(target=self._run, name="tierwise-store", daemon=True)
            self._thread.start()
        return self

    def submit(self, record: Item) -> None:
        """Queue a record, a feedback score or a shadow comparison for the writer thread."""
        with self._flushed:
            self._submitted += 1
            self._queue.put(record)

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything submitted before this call is written (or failed), for tests, reports
        and shutdown; what is submitted meanwhile is not waited for. False when ``timeout`` ran out first."""
        with self._flushed:
            target = self._submitted
            return self._flushed.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Write what is queued, then stop the writer thread; waits at most ``timeout`` seconds, then logs
        how many records were left unwritten (the writer is a daemon thread: it dies with the process)."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            if self._thread.is_alive():
                with self._flushed:
                    left = self._submitted - self._done
                log.warning(
                    "the record store writer (%s) did not finish within %.0f s; %d records not written",
                    self.describe(), timeout, left,
                )  # fmt: skip
            self._thread = None

    def release(self) -> None:  # noqa: B027 - a hook: SQLite holds nothing between reads
        """Close the connections reads hold (they reopen when needed); nothing to do for SQLite."""

    def problems(self) -> list[str]:
        """The write failures since the last batch that was written (the newest three)."""
        return list(self._failing[-3:])

    def _run(self) -> None:
        stopping = False
        try:
            while not stopping:
                batch: list[Item] = []
                try:
                    item = self._queue.get(timeout=self.flush_interval_s)
                except queue.Empty:
                    continue
                if item is not _STOP and self._queue.qsize() < self.batch_size:
                    # Let the items that follow it within GATHER_S join its batch: the writer then takes the
                    # GIL (and a transaction) once per burst, not once per request. A backlog of a whole
                    # batch or more is written without waiting.
                    time.sleep(min(GATHER_S, self.flush_interval_s))
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
                    self._write_batch(batch)
        finally:
            self._close_writer()

    def _fail(self, message: str) -> None:
        self.errors = [*self.errors[-(_KEEP_ERRORS - 1) :], message]
        self._failing = [*self._failing[-(_KEEP_ERRORS - 1) :], message]

    def _write_batch(self, batch: list[Item]) -> None:
        try:
            bad: list[tuple[Item, Exception]] = []
            groups = group_rows(batch, bad)
            for item, exc in bad:
                # Only that item is lost; the rest of its batch is written.
                self.dropped += 1
                name = getattr(item, "request_id", None) or getattr(item, "key_id", None) or "?"
                self._fail(f"dropped a {type(item).__name__} ({name}) that cannot be stored: {exc}")
            if groups:
                self._write(groups)
        except Exception as exc:
            # Keep serving; the failure shows on /readyz until a later batch is written.
            self._fail(f"writing a batch of {len(batch)} rows to {self.describe()} failed: {exc}")
        else:
            if not bad:
                self._failing.clear()
        finally:
            with self._flushed:
                self._done += len(batch)
                self._flushed.notify_all()

    # ---- reading (reports, the stats endpoint, learning) ----

    def _since(self, sql: str, since: float | None, order: str = "ts") -> tuple[str, list[Any]]:
        args: list[Any] = []
        if since is not None:
            sql += f" WHERE ts >= {self.mark}"
            args.append(since)
        return f"{sql} ORDER BY {order}", args

    def query(self, *, since: float | None = None, limit: int | None = None) -> list[RoutingRecord]:
        """Records, oldest first, optionally from ``since`` (unix time) and capped at ``limit``."""
        sql, args = self._since("SELECT * FROM records", since)
        if limit is not None:
            sql += f" LIMIT {self.mark}"
            args.append(limit)
        return [record_from_row(row) for row in self._fetch(sql, args)]

    def get(self, request_id: str) -> RoutingRecord | None:
        rows = self._fetch(f"SELECT * FROM records WHERE request_id = {self.mark}", [request_id])
        return record_from_row(rows[0]) if rows else None

    def feedback(self, *, since: float | None = None) -> list[Feedback]:
        """Feedback scores, oldest first."""
        sql, args = self._since("SELECT * FROM feedback", since, "ts, id")
        return [Feedback(**{k: v for k, v in row.items() if k != "id"}) for row in self._fetch(sql, args)]

    def comparisons(self, *, since: float | None = None) -> list[Comparison]:
        """Shadow and baseline-sample comparisons, oldest first."""
        sql, args = self._since("SELECT * FROM comparisons", since)
        return [Comparison(**row) for row in self._fetch(sql, args)]

    def changes(self, *, since: float | None = None) -> list[Change]:
        """Config changes (``tierwise learn``), oldest first."""
        sql, args = self._since("SELECT * FROM changes", since, "ts, id")
        return [change_from_row(row) for row in self._fetch(sql, args)]

    # ---- proxy API keys (tierwise.keys): written now, by the command line; usage through the writer ----

    def add_key(self, key: StoredKey) -> None:
        """Store a new key; raises StoreError when its id is taken (a revoked key keeps its id)."""
        if self._fetch(f"SELECT id FROM api_keys WHERE id = {self.mark}", [key.id]):
            raise StoreError(f"a key with id {key.id!r} exists already in {self.describe()}")
        marks = ", ".join([self.mark] * len(KEY_COLUMNS))
        sql = f"INSERT INTO api_keys ({', '.join(KEY_COLUMNS)}) VALUES ({marks})"
        try:
            self._execute(sql, [getattr(key, c) for c in KEY_COLUMNS])
        except StoreError:
            raise
        except Exception as exc:  # another process took the id in between, or the database is away
            raise StoreError(f"cannot store the key {key.id!r} in {self.describe()}: {exc}") from None

    def stored_keys(self) -> list[StoredKey]:
        """Every store key, revoked ones too, oldest first."""
        rows = self._fetch("SELECT * FROM api_keys ORDER BY created_at, id", [])
        return [StoredKey(**{c: row[c] for c in KEY_COLUMNS}) for row in rows]

    def revoke_key(self, key_id: str, at: float) -> bool:
        """Revoke a key; False when there is no such key or it was revoked already."""
        mark = self.mark
        sql = f"UPDATE api_keys SET revoked_at = {mark} WHERE id = {mark} AND revoked_at IS NULL"
        return self._execute(sql, [at, key_id]) > 0

    def key_usage(
        self, periods: Sequence[str], *, excluding: str | None = None
    ) -> dict[tuple[str, str], tuple[float, int]]:
        """Spent dollars and requests per (key id, period) in ``periods``, summed over the replicas (all
        but ``excluding``)."""
        if not periods:
            return {}
        sql = (
            "SELECT key_id, period, sum(spent_usd) AS spent_usd, sum(requests) AS requests FROM key_usage "
            f"WHERE period IN ({', '.join([self.mark] * len(periods))})"
        )
        args: list[Any] = list(periods)
        if excluding is not None:
            sql += f" AND replica <> {self.mark}"
            args.append(excluding)
        rows = self._fetch(sql + " GROUP BY key_id, period", args)
        return {(r["key_id"], r["period"]): (float(r["spent_usd"]), int(r["requests"])) for r in rows}

    def key_minutes(self, since: int, *, excluding: str | None = None) -> dict[tuple[str, int], int]:
        """Requests per (key id, unix minute) from minute ``since`` on, summed over the replicas (all but
        ``excluding``)."""
        sql = f"SELECT key_id, minute, sum(requests) AS requests FROM key_minutes WHERE minute >= {self.mark}"
        args: list[Any] = [since]
        if excluding is not None:
            sql += f" AND replica <> {self.mark}"
            args.append(excluding)
        rows = self._fetch(sql + " GROUP BY key_id, minute", args)
        return {(r["key_id"], int(r["minute"])): int(r["requests"]) for r in rows}

    def prune_key_minutes(self, before: int) -> int:
        """Drop the per-minute counts older than minute ``before``; returns how many rows went."""
        return self._execute(f"DELETE FROM key_minutes WHERE minute < {self.mark}", [before])
