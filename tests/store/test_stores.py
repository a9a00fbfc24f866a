"""Both stores, SQLite and PostgreSQL, through the one interface: what goes in comes out, batching under
concurrency loses nothing, close drains the queue, a failing write shows and clears, migrations run once."""

from __future__ import annotations

import threading
import time
from dataclasses import fields

from tests.store.conftest import Backend
from tierwise.store import Attempt, Change, Comparison, Feedback, RoutingRecord


def full_record(request_id: str, ts: float) -> RoutingRecord:
    """A record with every field set to something other than its default."""
    gates = [{"gate": "json", "passed": False, "reason": "not JSON", "score": 0.25}]
    return RoutingRecord(
        request_id=request_id, ts=ts, endpoint="openai.chat", status="ok", http_status=200,
        requested_model="tierwise/auto", api_key_id="team-a", user_tier="paid", request_class="code",
        tier="mid", model="mid-a", reason="cascade:cheap(fail:json)->mid(pass)",
        features={"task": "code", "input_tokens": 812, "keywords": ["sql", "ünïcode ✓"], "nested": {"a": None}},
        decision={"tier": "cheap", "policy": "cascade", "path": ["cheap", "mid"], "p": [0.2, 0.9, 1.0]},
        attempts=[
            Attempt("cheap", "cheap-a", "up", "ok", 120.5, 200, None, 800, 40, 1.2e-5, 0, gates),
            Attempt("mid", "mid-a", "up", "timeout", 5000.0, None, "read timed out", 0, 0, 0.0, 1, None),
        ],
        error="first attempt failed its gates", input_tokens=1612, output_tokens=95, cost_usd=0.000812,
        baseline_cost_usd=0.0243, latency_ms=5123.75, routing_cost_usd=1.5e-6, stream=True,
        prompt="[user] write a query — with ‘quotes’, \\backslashes\\ and 'single' ones",
        response_id="resp-1", response_text="SELECT 1; -- 😀",
    )  # fmt: skip


def test_every_record_field_round_trips(backend: Backend) -> None:
    now = time.time()
    records = [full_record("r-full", now - 5), RoutingRecord("r-min", now - 1, "messages", "rejected", 400)]
    for field in fields(RoutingRecord):
        assert getattr(records[0], field.name) != field.default, f"{field.name} keeps its default"
    store = backend.open(flush_interval_s=0.01).start()
    for record in records:
        store.submit(record)
    store.flush()
    assert store.get("r-full") == records[0]
    assert store.get("r-min") == records[1]
    assert store.get("nope") is None
    assert store.query() == records
    assert store.query(since=now - 2) == records[1:]
    assert store.query(limit=1) == records[:1]
    # A record written again under its request id replaces the first.
    again = full_record("r-full", now - 4)
    again.status, again.attempts = "error", []
    store.submit(again)
    store.close()
    assert backend.open().query() == [again, records[1]]


def test_feedback_and_comparisons_round_trip(backend: Backend) -> None:
    store = backend.open().start()
    now = time.time()
    items = [
        Feedback("r-1", now - 10, 0.75, "close enough", "user", "team-a"),
        Feedback("r-1", now - 5, 1.0),
        Feedback("r-2", now - 3600, 0.0, source="judge"),
    ]
    pairs = [
        Comparison("r-1", now - 8, "shadow", "chat", "cheap", "cheap-a", "premium-a", 3e-6, 3e-4, 12.5, 80.0,
                   "judge:premium-a", 0.5, "as good", 1e-5),
        Comparison("r-3", now - 2, "baseline_sample", None, None, None, "premium-a", error="router failed"),
    ]  # fmt: skip
    for item in [*items, *pairs]:
        store.submit(item)
    store.close()  # drains the writer's queue

    reopened = backend.open()
    assert reopened.feedback() == sorted(items, key=lambda f: f.ts)
    assert reopened.feedback(since=now - 60) == items[:2]
    assert reopened.comparisons() == pairs
    assert reopened.comparisons(since=now - 5) == pairs[1:]
    # A comparison is keyed by its request: writing it again replaces it.
    store = backend.open().start()
    judged = Comparison("r-3", now - 1, "baseline_sample", "chat", "mid", "mid-a", "premium-a", score=1.0)
    store.submit(judged)
    store.close()
    assert reopened.comparisons() == [pairs[0], judged]


def test_changes_round_trip(backend: Backend) -> None:
    store = backend.open()  # written at once, not through the writer: no start needed
    now = time.time()
    first = Change(now - 100, "learn", "code: start at mid", "--- a\n+++ b\n", applied=False)
    second = Change(now - 1, "learn", "chat: go direct", "@@ -1 +1 @@\n-x\n+y\n", applied=True,
                    config_path="/etc/tierwise/router.yaml",
                    detail={"since": "7d", "proposals": [{"class": "chat", "escalation_rate": 0.02}]})  # fmt: skip
    ids = [store.add_change(first), store.add_change(second)]
    assert ids[0] < ids[1] and (first.id, second.id) == tuple(ids)
    assert backend.open().changes() == [first, second]
    assert backend.open().changes(since=now - 10) == [second]


def test_concurrent_submitters_lose_nothing(backend: Backend) -> None:
    store = backend.open(batch_size=64, flush_interval_s=0.01).start()
    now = time.time()
    threads, per_thread = 8, 250

    def submit(n: int) -> None:
        for i in range(per_thread):
            store.submit(RoutingRecord(f"t{n}-{i}", now + i / 1000, "openai.chat", "ok", 200, tier="cheap"))
            if i % 50 == 0:
                store.submit(Feedback(f"t{n}-{i}", now, 1.0))

    workers = [threading.Thread(target=submit, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    store.flush()
    assert store.errors == []
    ids = {r.request_id for r in store.query()}
    assert len(ids) == threads * per_thread
    assert len(store.feedback()) == threads * (per_thread // 50)


def test_close_writes_everything_queued(backend: Backend) -> None:
    # A long flush interval and a large batch: nothing is written before close, and close writes it all.
    store = backend.open(batch_size=10_000, flush_interval_s=30).start()
    now = time.time()
    for i in range(1500):
        store.submit(RoutingRecord(f"c-{i}", now, "openai.chat", "ok", 200))
    started = time.monotonic()
    store.close()
    assert time.monotonic() - started < 10  # close does not wait out the flush interval
    assert len(backend.open().query()) == 1500


def test_a_failing_write_shows_until_a_batch_is_written_again(backend: Backend) -> None:
    store = backend.open(flush_interval_s=0.01).start()
    now = time.time()
    store.submit(RoutingRecord("before", now, "openai.chat", "ok", 200))
    store.flush()
    backend.sql("ALTER TABLE records RENAME TO records_away")
    store.submit(RoutingRecord("lost", now, "openai.chat", "ok", 200))
    store.flush()
    [problem] = store.problems()
    assert "writing a batch of 1 rows" in problem and "records" in problem
    assert store.errors == [problem]
    backend.sql("ALTER TABLE records_away RENAME TO records")
    store.submit(RoutingRecord("after", now + 1, "openai.chat", "ok", 200))
    store.flush()
    assert store.problems() == [] and len(store.errors) == 1  # the history stays, /readyz clears
    assert [r.request_id for r in store.query()] == ["before", "after"]


def test_opening_again_migrates_nothing_and_keeps_the_records(backend: Backend) -> None:
    store = backend.open().start()
    store.submit(RoutingRecord("kept", time.time(), "openai.chat", "ok", 200))
    store.close()
    for _ in range(3):
        again = backend.open()
        again.start()
        again.close()
    assert [r.request_id for r in backend.open().query()] == ["kept"]
    if backend.kind == "postgres":
        from tierwise.store.postgres import MIGRATIONS

        versions = backend.sql("SELECT version FROM schema_version ORDER BY version")
        assert [v for (v,) in versions] == list(range(1, len(MIGRATIONS) + 1))
    else:
        from tierwise.store.sqlite import MIGRATIONS

        assert backend.sql("PRAGMA user_version") == [(len(MIGRATIONS),)]


def test_readers_work_on_a_store_never_started(backend: Backend) -> None:
    # What the report, learn and label commands do: read without starting the writer.
    store = backend.open()
    assert store.query() == [] and store.feedback() == [] and store.comparisons() == []
    assert store.changes() == []


def test_one_bad_item_is_dropped_and_the_rest_of_its_batch_is_written(backend: Backend) -> None:
    store = backend.open(batch_size=10_000, flush_interval_s=30).start()
    now = time.time()
    store.submit(RoutingRecord("good-1", now, "openai.chat", "ok", 200))
    store.submit(RoutingRecord("bad", now, "openai.chat", "ok", 200, features={"x": object()}))
    store.submit(RoutingRecord("good-2", now + 1, "openai.chat", "ok", 200))
    store.close()
    assert [r.request_id for r in backend.open().query()] == ["good-1", "good-2"]
    assert store.dropped == 1
    [problem] = store.errors
    assert "dropped a RoutingRecord (bad)" in problem
