"""PostgresStore on its own: bad connection strings and unreachable servers are clear errors that never show
the password, the schema migrates once even when replicas start together, config versions publish once per
digest, and the report command reads a database named by URL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import router_config
from tests.store.pg import execute, pg_schema
from tierwise.errors import ConfigError
from tierwise.store import ConfigVersion, PostgresStore, RoutingRecord, StoreError, open_store
from tierwise.store.postgres import MIGRATIONS, migrate


@pytest.mark.parametrize(
    ("dsn", "says"),
    [
        ("mysql://app:hunter2pw@db/tierwise", "a mysql:// URL; expected a postgresql:// URL"),
        ("just-a-hostname", "expected a postgresql:// URL or a key=value connection string"),
        ("postgresql://app:hunter2pw@db/tierwise?sslmod=require", 'invalid URI query parameter: "sslmod"'),
        ("   ", "empty"),
    ],
)
def test_a_bad_dsn_is_named_without_its_password(dsn: str, says: str) -> None:
    with pytest.raises(StoreError) as caught:
        PostgresStore(dsn)
    assert str(caught.value).startswith("store.dsn: ") and says in str(caught.value)
    assert "hunter2pw" not in str(caught.value)
    with pytest.raises(ConfigError) as config_error:
        router_config("http://127.0.0.1:9/v1", store={"type": "postgres", "dsn": dsn})
    assert "test config: store: dsn: " in str(config_error.value) and says in str(config_error.value)
    assert "hunter2pw" not in str(config_error.value)


def test_an_unreachable_server_is_a_clear_error_at_start() -> None:
    store = PostgresStore("postgresql://app:hunter2pw@127.0.0.1:1/tierwise", connect_timeout_s=2)
    with pytest.raises(StoreError) as caught:
        store.start()
    message = str(caught.value)
    assert message.startswith("cannot connect to PostgreSQL at postgresql://127.0.0.1:1/tierwise: ")
    assert "refused" in message and "hunter2pw" not in message and "app" not in message


def test_store_config_checks_type_dsn_and_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def error(store: dict[str, object]) -> str:
        with pytest.raises(ConfigError) as caught:
            router_config("http://127.0.0.1:9/v1", store=store)
        return str(caught.value)

    assert "store: dsn: type postgres needs a connection string" in error({"type": "postgres"})
    assert "store: dsn: only for type postgres" in error({"dsn": "postgresql://h/db"})
    assert "store: path: only for type sqlite" in error(
        {"type": "postgres", "dsn": "postgresql://h/d", "path": "x"}
    )
    assert "store.type: Input should be 'sqlite' or 'postgres'" in error({"type": "mysql"})
    assert "store.sync_interval_s" in error(
        {"type": "postgres", "dsn": "postgresql://h/d", "sync_interval_s": 0}
    )
    monkeypatch.delenv("TW_TEST_DATABASE_URL", raising=False)
    assert "store.dsn: environment variable TW_TEST_DATABASE_URL is not set" in error(
        {"type": "postgres", "dsn": "${TW_TEST_DATABASE_URL}"}
    )
    monkeypatch.setenv("TW_TEST_DATABASE_URL", "postgresql://app:hunter2pw@db.internal:6432/tierwise")
    config = router_config(
        "http://127.0.0.1:9/v1", store={"type": "postgres", "dsn": "${TW_TEST_DATABASE_URL}"}
    )
    assert "hunter2pw" not in repr(config) and "hunter2pw" not in config.model_dump_json()
    assert config.store.describe() == "postgresql://db.internal:6432/tierwise"
    store = open_store(config.store)
    assert isinstance(store, PostgresStore) and store.describe() == "postgresql://db.internal:6432/tierwise"
    assert "hunter2pw" not in repr(store)


def test_replicas_starting_together_migrate_once() -> None:
    with pg_schema() as dsn:
        stores = [PostgresStore(dsn) for _ in range(4)]
        failures: list[BaseException] = []

        def start(store: PostgresStore) -> None:
            try:
                store.start()
            except BaseException as exc:  # pragma: no cover - reported below
                failures.append(exc)

        threads = [threading.Thread(target=start, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in stores:
            s.close()
        assert failures == []
        assert execute(dsn, "SELECT count(*), max(version) FROM schema_version") == [
            (len(MIGRATIONS), len(MIGRATIONS))
        ]


def test_an_older_schema_migrates_in_place_and_a_newer_one_is_refused() -> None:
    with pg_schema() as dsn:
        with psycopg.connect(dsn, autocommit=True) as db:
            assert migrate(db, target=1) == 1
        execute(dsn, "INSERT INTO records (request_id, ts, endpoint, status, http_status, attempts) "
                     "VALUES ('old-1', 1700000000.0, 'openai.chat', 'ok', 200, '[]')")  # fmt: skip
        store = PostgresStore(dsn).start()
        store.close()
        assert execute(dsn, "SELECT max(version) FROM schema_version") == [(len(MIGRATIONS),)]
        assert [r.request_id for r in store.query()] == ["old-1"]
        store.close()
        execute(dsn, f"INSERT INTO schema_version VALUES ({len(MIGRATIONS) + 1}, 0)")
        with pytest.raises(StoreError, match="newer than this tierwise knows"):
            PostgresStore(dsn).start()


def test_nul_characters_are_kept_out_of_postgres_text() -> None:
    with pg_schema() as dsn:
        store = PostgresStore(dsn, flush_interval_s=0.01).start()
        store.submit(RoutingRecord("nul", time.time(), "openai.chat", "ok", 200, prompt="a\x00b",
                                   features={"text": "c\x00d"}))  # fmt: skip
        store.flush()
        assert store.problems() == []
        [record] = store.query()
        assert record.prompt == "a\ufffdb" and record.features == {"text": "c\x00d"}  # JSON escapes it
        store.close()


def version(text: str, digest: str) -> ConfigVersion:
    return ConfigVersion(digest, text, "router.yaml", "reload", "test:1", time.time(), {})


def test_config_versions_publish_once_per_digest() -> None:
    with pg_schema() as dsn:
        store = PostgresStore(dsn)
        assert store.latest_config() is None and store.config_version() is None
        first = version("tiers: {}", "d1")
        first.artifacts = {"routing.classifier.artifact": {"path": "r.npz", "sha256": "abc", "size": 3,
                                                           "shared": True}}  # fmt: skip
        assert store.publish_config(first, {"abc": b"\x00\x01\x02"}) == (1, True)
        assert store.publish_config(version("tiers: {}", "d1"), {}) == (1, False)  # the latest already
        assert store.publish_config(version("tiers: {x: 1}", "d2"), {}) == (2, True)
        assert store.publish_config(version("tiers: {}", "d1"), {}) == (3, True)  # back to d1: news again
        assert store.latest_config() == (3, "d1")
        assert store.config_version(1) == first and first.id == 1
        assert store.knows_config("d2") and not store.knows_config("d9")
        assert store.artifact_data("abc") == b"\x00\x01\x02" and store.artifact_data("nope") is None
        store.close()


def test_report_reads_a_database_named_by_url(tmp_path: Path) -> None:
    with pg_schema() as dsn:
        store = PostgresStore(dsn, flush_interval_s=0.01).start()
        now = time.time()
        for i in range(3):
            store.submit(RoutingRecord(f"r{i}", now - i, "openai.chat", "ok", 200, request_class="chat",
                                       tier="cheap", model="cheap-a", cost_usd=1e-5, baseline_cost_usd=1e-3))  # fmt: skip
        store.close()
        env = {**os.environ, "TIERWISE_HOME": str(tmp_path)}
        run = subprocess.run(
            [sys.executable, "-m", "tierwise", "report", "--db", dsn, "--since", "1h", "--json",
             str(tmp_path / "out.json")],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert '"requests": 3' in (tmp_path / "out.json").read_text().replace(": 3,", ": 3")
        bad = subprocess.run(
            [sys.executable, "-m", "tierwise", "report", "--db", "postgresql://app:hunter2pw@127.0.0.1:1/x"],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert bad.returncode == 2
        assert "cannot connect to PostgreSQL at postgresql://127.0.0.1:1/x" in bad.stderr
        assert "hunter2pw" not in bad.stderr + bad.stdout


def test_the_store_reconnects_when_the_server_drops_its_connections() -> None:
    with pg_schema() as dsn:
        store = PostgresStore(dsn, flush_interval_s=0.01).start()
        store.submit(RoutingRecord("before", time.time(), "openai.chat", "ok", 200))
        store.flush()
        assert [r.request_id for r in store.query()] == ["before"]
        # What a server restart or a failover does to the writer's and the reader's connections.
        dropped = execute(
            dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'tierwise' AND pid <> pg_backend_pid()",
        )
        assert len(dropped) >= 2
        store.submit(RoutingRecord("after", time.time(), "openai.chat", "ok", 200))
        store.flush()
        assert store.problems() == [] and store.errors == []
        assert [r.request_id for r in store.query()] == ["before", "after"]
        store.close()


def test_serve_stops_with_the_reason_when_the_database_is_unreachable(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(
        "providers: {up: {type: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
        "models: {m: {provider: up}}\n"
        "tiers: {cheap: [m], mid: [m], premium: [m]}\n"
        'store: {type: postgres, dsn: "${TW_TEST_UNREACHABLE}"}\n'
    )
    env = {**os.environ, "TW_TEST_UNREACHABLE": "postgresql://app:hunter2pw@127.0.0.1:1/tierwise"}
    run = subprocess.run(
        [sys.executable, "-m", "tierwise", "serve", "--config", str(config), "--port", "0"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert run.returncode == 2
    said = " ".join(run.stderr.split())
    assert "store error cannot connect to PostgreSQL at postgresql://127.0.0.1:1/tierwise" in said
    assert "hunter2pw" not in run.stderr + run.stdout


def test_a_batch_retried_after_its_commit_went_through_is_not_written_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tierwise.store import Feedback, KeyUsage

    with pg_schema() as dsn:
        store = PostgresStore(dsn, batch_size=10_000, flush_interval_s=30)
        original = PostgresStore._write_once
        calls: list[str] = []

        def commit_then_break(self: PostgresStore, db: Any, batch_id: str, groups: Any) -> None:
            original(self, db, batch_id, groups)
            calls.append(batch_id)
            if len(calls) == 1:  # the COMMIT went through, and then the connection broke
                raise psycopg.OperationalError("server closed the connection unexpectedly")

        monkeypatch.setattr(PostgresStore, "_write_once", commit_then_break)
        store.start()
        store.submit(KeyUsage("k1", "r1", ("day:2025-01-31",), spent_usd=0.5, requests=1, minute=100))
        store.submit(Feedback("req-1", time.time(), 1.0))
        store.close()
        assert len(calls) == 2 and calls[0] == calls[1]
        assert store.errors == []
        assert execute(dsn, "SELECT spent_usd, requests FROM key_usage") == [(0.5, 1)]
        assert execute(dsn, "SELECT requests FROM key_minutes") == [(1,)]
        assert execute(dsn, "SELECT count(*) FROM feedback") == [(1,)]
