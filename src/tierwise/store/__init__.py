"""Where records go. A RecordSink takes records without blocking; SQLiteStore is the embedded default and
PostgresStore the one several replicas share. ``open_store`` builds the one a config (or ``--db``) names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tierwise.store.base import BatchStore, StoreError
from tierwise.store.postgres import PostgresStore
from tierwise.store.records import (
    Attempt,
    Change,
    Comparison,
    ConfigVersion,
    Feedback,
    KeyUsage,
    RoutingRecord,
    StoredKey,
)
from tierwise.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from tierwise.config import StoreConfig

__all__ = [
    "Attempt",
    "BatchStore",
    "Change",
    "Comparison",
    "ConfigVersion",
    "Feedback",
    "KeyUsage",
    "PostgresStore",
    "RecordSink",
    "RoutingRecord",
    "SQLiteStore",
    "StoreError",
    "StoredKey",
    "is_dsn",
    "open_store",
]


class RecordSink(Protocol):
    def submit(self, record: RoutingRecord | Feedback | Comparison) -> None:
        """Accept a record (or a feedback score, or a shadow comparison) without blocking the caller."""


# libpq's connection keywords: a --db value starting "host=", "dbname=", ... is a key=value DSN.
_DSN_KEYWORDS = frozenset(
    "host hostaddr port dbname user password passfile service options application_name connect_timeout "
    "sslmode sslrootcert sslcert sslkey target_session_attrs".split()
)
_KEYWORD = re.compile(r"^\s*([A-Za-z_]+)\s*=")


def is_dsn(location: str | Path) -> bool:
    """Whether a ``--db`` value names a PostgreSQL database rather than a SQLite file: a postgresql:// (or
    postgres://) URL, or a key=value connection string starting with a libpq keyword (``host=db
    dbname=x``)."""
    if not isinstance(location, str):
        return False
    if location.startswith(("postgresql://", "postgres://")):
        return True
    keyword = _KEYWORD.match(location)
    return keyword is not None and keyword.group(1).lower() in _DSN_KEYWORDS


def open_store(config: StoreConfig, location: str | Path | None = None) -> BatchStore:
    """The store ``config`` names, not started; ``location`` (a ``--db`` value: a SQLite path or a
    postgresql:// URL) overrides where it is. Raises StoreError for a bad connection string."""
    size, interval = config.batch_size, config.flush_interval_s
    if location is not None:
        if is_dsn(location):
            return PostgresStore(str(location), batch_size=size, flush_interval_s=interval)
        return SQLiteStore(Path(location).expanduser(), batch_size=size, flush_interval_s=interval)
    if config.type == "postgres":
        assert config.dsn is not None  # the config's validation makes sure
        return PostgresStore(config.dsn.get_secret_value(), batch_size=size, flush_interval_s=interval)
    return SQLiteStore(config.resolved_path(), batch_size=size, flush_interval_s=interval)
