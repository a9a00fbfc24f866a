"""The commands that read the store (report, learn, label) say plainly when --db is not a store, and --db
takes key=value connection strings as well as URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli_train import flat, tierwise
from tierwise.config import StoreConfig
from tierwise.store import PostgresStore, SQLiteStore, is_dsn, open_store


@pytest.mark.parametrize("command", [("report",), ("learn",), ("label", "--out", "rows.jsonl")])
def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path, command: tuple[str, ...]) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("these are not the records you are looking for\n" * 200)
    ran = tierwise(*command, "--db", junk)
    said = flat(ran.stderr + ran.stdout)
    assert ran.returncode == 2, said
    assert "Traceback" not in said
    assert f"cannot open the SQLite store at {junk}" in said and "not a database" in said


def test_key_value_dsns_are_postgres() -> None:
    assert is_dsn("postgresql://db/tierwise") and is_dsn("postgres://db/tierwise")
    assert is_dsn("host=db.internal dbname=tierwise user=app")
    assert is_dsn("dbname=tierwise") and is_dsn("  service = tierwise")
    assert not is_dsn("records.db") and not is_dsn("./runs/a=b.db") and not is_dsn("weird=name.db")
    assert not is_dsn(Path("host=db"))
    assert isinstance(open_store(StoreConfig(), "host=127.0.0.1 port=1 dbname=x"), PostgresStore)
    assert isinstance(open_store(StoreConfig(), "records.db"), SQLiteStore)
