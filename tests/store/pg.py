"""PostgreSQL for the tests: a schema of its own per test, in the database TIERWISE_TEST_PG_DSN names.

``.ci/run`` starts a server on loopback and sets the variable (README, Development); without it the
PostgreSQL tests are skipped, saying so.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

PG_DSN = os.environ.get("TIERWISE_TEST_PG_DSN")
SKIP_REASON = (
    "TIERWISE_TEST_PG_DSN is not set: no PostgreSQL server to test against "
    "(.ci/run starts one on 127.0.0.1 and sets it; see README, Development)"
)


def in_schema(dsn: str, schema: str) -> str:
    """``dsn`` with its search_path set to ``schema``: every table tierwise makes goes there."""
    option = f"-csearch_path={schema}"
    if dsn.startswith(("postgresql://", "postgres://")):
        return f"{dsn}{'&' if '?' in dsn else '?'}options={quote(option)}"
    return f"{dsn} options='{option}'"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A DSN into a fresh, empty schema, dropped afterwards; skips the test without a server."""
    if not PG_DSN:
        pytest.skip(SKIP_REASON)
    import psycopg

    schema = f"tw_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as db:
        db.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield in_schema(PG_DSN, schema)
    finally:
        for attempt in range(5):  # a store closing in another thread may still hold a lock for a moment
            try:
                with psycopg.connect(PG_DSN, autocommit=True) as db:
                    db.execute(f'DROP SCHEMA "{schema}" CASCADE')
                break
            except psycopg.errors.DeadlockDetected:
                if attempt == 4:
                    raise
                time.sleep(0.2)


def execute(dsn: str, sql: str) -> list[tuple[object, ...]]:
    """Run one statement over a connection of its own (to look at or damage the database from outside)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        cursor = db.execute(sql.encode())
        return cursor.fetchall() if cursor.description else []
