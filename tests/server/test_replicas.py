"""Several proxy replicas sharing one PostgreSQL database: records and stats come from it, and a config
change made through one replica (admin reload) reaches the others without a restart, artifacts included,
though each replica reads its own config file in a directory of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.classify.test_learned import fit_synthetic
from tests.conftest import RunningProxy
from tests.store.pg import execute, pg_schema
from tierwise.classify.artifact import save_router
from tierwise.config import load_config
from tierwise.store import PostgresStore
from tierwise.testing.upstreams import FakeUpstream

ADMIN = "adm-replicas"
TASKS = ("classify", "extract", "rephrase", "summarize", "chat", "code", "reasoning")


@pytest.fixture
def dsn(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with pg_schema() as schema_dsn:
        # The config names the database through the environment: the text shared through it has no secret.
        monkeypatch.setenv("TW_REPLICAS_DSN", schema_dsn)
        yield schema_dsn


@pytest.fixture
def replicas(dsn: str) -> Iterator[list[RunningProxy]]:
    """Replicas on the test's schema; stopped before the schema is dropped (a fixture needing ``dsn`` is torn
    down first), so no replica holds a lock the drop waits for."""
    running: list[RunningProxy] = []
    yield running
    for proxy in running:
        proxy.stop()


def write_config(path: Path, upstream: FakeUpstream, cheap: list[str], **extra: Any) -> Path:
    price = {"input_per_mtok": 1, "output_per_mtok": 1}
    data: dict[str, Any] = {
        "providers": {"up": {"type": "openai", "base_url": upstream.base_url}},
        "models": {m: {"provider": "up", "price": price} for m in ("cheap-a", "cheap-b", "mid-a", "premium-a")},
        "tiers": {"cheap": cheap, "mid": ["mid-a"], "premium": ["premium-a"]},
        "routing": {"task_tiers": dict.fromkeys(TASKS, "cheap"), "domains": {}, **extra.pop("routing", {})},
        "auth": {"admin_key": ADMIN},
        "store": {"type": "postgres", "dsn": "${TW_REPLICAS_DSN}", "sync_interval_s": 0.1},
        **extra,
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def start(replicas: list[RunningProxy], path: Path, dsn: str) -> RunningProxy:
    store = PostgresStore(dsn, flush_interval_s=0.02)
    proxy = RunningProxy(load_config(path), path.parent / "unused.db", path, store=store)
    replicas.append(proxy)
    return proxy


def chat(proxy: RunningProxy, content: str = "hi", model: str = "tierwise/cheap") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}]}
    response = httpx.post(proxy.url + "/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response


def serves(proxy: RunningProxy, model: str, within_s: float = 5.0) -> float:
    """Seconds until ``proxy`` answers with ``model``; fails after ``within_s``."""
    started = time.monotonic()
    while chat(proxy).headers["x-tierwise-model"] != model:
        assert time.monotonic() - started < within_s, f"{proxy.url} still does not serve {model}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_replica_writes_records_and_reads_stats_from_postgres(
    replicas: list[RunningProxy], openai_upstream: FakeUpstream, tmp_path: Path, dsn: str
) -> None:
    proxy = start(replicas, write_config(tmp_path / "router.yaml", openai_upstream, ["cheap-a"]), dsn)
    ids = [chat(proxy, f"question {i}").headers["x-tierwise-request-id"] for i in range(5)]
    thumbs = httpx.post(proxy.url + "/v1/tierwise/feedback", json={"request_id": ids[0], "thumbs": "up"})
    assert thumbs.status_code == 200, thumbs.text
    stats = httpx.get(
        proxy.url + "/v1/tierwise/stats", params={"window": "1h"}, headers={"x-api-key": ADMIN}, timeout=10
    )
    assert stats.status_code == 200, stats.text
    classes = stats.json()["classes"]
    assert set(classes) == {"chat", "overall"}
    row = classes["chat"]
    assert row["requests"] == 5 and row["tier_mix"] == {"cheap": 1.0}
    assert row["quality"]["n"] == 1 and row["quality"]["mean"] == 1.0
    ready = httpx.get(proxy.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["config_version"] == {"version": 1, "problem": None}

    proxy.stop()  # a clean shutdown writes what is queued
    # Another process's view of the database: every record, with the request's fields.
    reader = PostgresStore(dsn)
    records = {r.request_id: r for r in reader.query()}
    assert set(records) == set(ids)
    assert {(r.model, r.tier, r.request_class, r.status) for r in records.values()} == {
        ("cheap-a", "cheap", "chat", "ok")
    }
    assert records[ids[0]].prompt is not None and "question 0" in records[ids[0]].prompt
    assert [f.request_id for f in reader.feedback()] == [ids[0]]
    reader.close()


def test_a_reload_on_one_replica_reaches_the_others(
    replicas: list[RunningProxy], openai_upstream: FakeUpstream, tmp_path: Path, dsn: str
) -> None:
    # Each replica reads a file of its own: nothing is shared but the database.
    path_a = write_config(tmp_path / "a" / "router.yaml", openai_upstream, ["cheap-a"])
    path_b = write_config(tmp_path / "b" / "router.yaml", openai_upstream, ["cheap-a"])
    a, b = start(replicas, path_a, dsn), start(replicas, path_b, dsn)
    assert chat(a).headers["x-tierwise-model"] == chat(b).headers["x-tierwise-model"] == "cheap-a"
    # B started with the config A published at its start: one version.
    assert execute(dsn, "SELECT id, source FROM config_versions") == [(1, "startup")]

    write_config(path_a, openai_upstream, ["cheap-b"])
    done = httpx.post(a.url + "/v1/tierwise/admin/reload", headers={"authorization": f"Bearer {ADMIN}"})
    assert done.status_code == 200, done.text
    assert done.json()["config_version"] == {"version": 2, "problem": None}
    assert chat(a).headers["x-tierwise-model"] == "cheap-b"
    assert serves(b, "cheap-b") < 3.0
    assert "cheap-a" in path_b.read_text()  # B follows the database, not its file
    assert httpx.get(b.url + "/readyz").json()["config_version"] == {"version": 2, "problem": None}
    [(text,)] = execute(dsn, "SELECT config_text FROM config_versions WHERE id = 2")
    assert "${TW_REPLICAS_DSN}" in str(text) and dsn not in str(text)

    # A replica (re)starting with a file the database has seen adopts the newest version...
    path_c = write_config(tmp_path / "c" / "router.yaml", openai_upstream, ["cheap-a"])
    c = start(replicas, path_c, dsn)
    assert chat(c).headers["x-tierwise-model"] == "cheap-b"
    # ...and one starting with a config never seen (a deploy) publishes it, and everyone follows.
    path_d = write_config(tmp_path / "d" / "router.yaml", openai_upstream, ["cheap-a"], retry={"attempts": 2})
    d = start(replicas, path_d, dsn)
    assert chat(d).headers["x-tierwise-model"] == "cheap-a"
    for proxy in (a, b, c):
        serves(proxy, "cheap-a")
    assert execute(dsn, "SELECT id, source FROM config_versions ORDER BY id") == [
        (1, "startup"), (2, "reload"), (3, "startup")
    ]  # fmt: skip


def test_an_artifact_travels_through_the_database(
    replicas: list[RunningProxy], openai_upstream: FakeUpstream, tmp_path: Path, dsn: str
) -> None:
    path_a = write_config(tmp_path / "a" / "router.yaml", openai_upstream, ["cheap-a"])
    a = start(replicas, path_a, dsn)
    artifact = save_router(fit_synthetic(), tmp_path / "a" / "router.tw")
    learned = {"classifier": {"type": "learned", "artifact": str(artifact), "threshold": 0.0}}
    write_config(path_a, openai_upstream, ["cheap-a"], routing=learned)
    done = httpx.post(a.url + "/v1/tierwise/admin/reload", headers={"x-api-key": ADMIN})
    assert done.status_code == 200, done.text
    assert chat(a, model="tierwise/auto").headers["x-tierwise-reason"].startswith("learned:")
    # This replica's copy of the file differs from the one published: it gets the database's.
    artifact.write_bytes(b"not the artifact the version was published with")
    path_b = write_config(tmp_path / "b" / "router.yaml", openai_upstream, ["cheap-a"])
    b = start(replicas, path_b, dsn)
    assert chat(b, model="tierwise/auto").headers["x-tierwise-reason"].startswith("learned:")
    assert httpx.get(b.url + "/readyz").json()["config_version"] == {"version": 2, "problem": None}


def test_a_version_a_replica_cannot_apply_keeps_it_serving_and_says_why(
    replicas: list[RunningProxy],
    openai_upstream: FakeUpstream,
    tmp_path: Path,
    dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path_a = write_config(tmp_path / "a" / "router.yaml", openai_upstream, ["cheap-a"])
    a = start(replicas, path_a, dsn)
    # The new version needs an environment variable that A has and the next replica lacks.
    monkeypatch.setenv("TW_ONLY_ON_A", "sk-a")
    write_config(path_a, openai_upstream, ["cheap-b"], providers={
        "up": {"type": "openai", "base_url": openai_upstream.base_url, "api_key": "${TW_ONLY_ON_A}"}})  # fmt: skip
    assert httpx.post(a.url + "/v1/tierwise/admin/reload", headers={"x-api-key": ADMIN}).status_code == 200
    assert chat(a).headers["x-tierwise-model"] == "cheap-b"
    monkeypatch.delenv("TW_ONLY_ON_A")
    c = start(replicas, write_config(tmp_path / "c" / "router.yaml", openai_upstream, ["cheap-a"]), dsn)
    ready = httpx.get(c.url + "/readyz")
    assert ready.status_code == 200  # ready: it serves the config it has
    problem = ready.json()["config_version"]["problem"]
    assert "config version 2 could not be applied here, still serving the previous config" in problem
    assert "providers.up.api_key: environment variable TW_ONLY_ON_A is not set" in problem
    assert chat(c).headers["x-tierwise-model"] == "cheap-a"


def test_learn_apply_publishes_to_every_replica(
    replicas: list[RunningProxy], openai_upstream: FakeUpstream, tmp_path: Path, dsn: str
) -> None:
    from typer.testing import CliRunner

    from tests.test_learn import CONFIG, record
    from tierwise.cli import app

    store = PostgresStore(dsn).start()
    up, stay = ["cheap(fail:json)", "mid(pass)"], ["cheap(pass)"]
    for i in range(25):  # code-review escalates 80% of the time: learn starts it at mid
        store.submit(record(i, "code-review", up if i < 20 else stay))
    store.close()
    text = CONFIG.format(url=openai_upstream.base_url, admin=ADMIN, port=9) + (
        'store: {type: postgres, dsn: "${TW_REPLICAS_DSN}", sync_interval_s: 0.1}\n'
    )
    (tmp_path / "replica").mkdir()
    (tmp_path / "ops").mkdir()
    (tmp_path / "replica" / "router.yaml").write_text(text)
    (tmp_path / "ops" / "router.yaml").write_text(text)  # the operator's copy, on another machine
    replica = start(replicas, tmp_path / "replica" / "router.yaml", dsn)

    def path_of(klass: str) -> str:
        body = {"model": "tierwise/auto", "messages": [{"role": "user", "content": "hello there"}]}
        headers = {"x-tierwise-class": klass}
        response = httpx.post(replica.base_url + "/chat/completions", json=body, headers=headers, timeout=10)
        return response.headers["x-tierwise-path"]

    assert path_of("code-review") == "cheap(pass)"
    result = CliRunner().invoke(
        app, ["learn", "--config", str(tmp_path / "ops" / "router.yaml"), "--apply", "--no-reload"]
    )
    assert result.exit_code == 0, result.output
    assert "published as config version 2" in " ".join(result.output.split())
    deadline = time.monotonic() + 5
    while path_of("code-review") != "mid(pass)":
        assert time.monotonic() < deadline, "the replica did not follow the learned config"
        time.sleep(0.05)
    reader = PostgresStore(dsn)
    [change] = reader.changes()
    reader.close()
    assert change.source == "learn" and change.applied and "code-review" in change.summary
    assert execute(dsn, "SELECT source FROM config_versions ORDER BY id") == [("startup",), ("learn",)]
