"""The store tests run against both backends: ``backend`` makes stores of one kind at one place."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.store.pg import execute, pg_schema
from tierwise.store import BatchStore, PostgresStore, SQLiteStore


class Backend:
    """Opens stores of one kind at one place (a SQLite file, or a PostgreSQL schema), closing them after."""

    def __init__(self, kind: str, location: str) -> None:
        self.kind = kind
        self.location = location
        self._opened: list[BatchStore] = []

    def open(self, **options: Any) -> BatchStore:
        store: BatchStore
        if self.kind == "sqlite":
            store = SQLiteStore(self.location, **options)
        else:
            store = PostgresStore(self.location, **options)
        self._opened.append(store)
        return store

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        """Run SQL on the database from outside the store."""
        if self.kind == "postgres":
            return execute(self.location, statement)
        db = sqlite3.connect(self.location, isolation_level=None)
        try:
            return db.execute(statement).fetchall()
        finally:
            db.close()

    def close(self) -> None:
        for store in self._opened:
            store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        opened = Backend("sqlite", str(tmp_path / "records.db"))
        yield opened
        opened.close()
        return
    with pg_schema() as dsn:
        opened = Backend("postgres", dsn)
        yield opened
        opened.close()
