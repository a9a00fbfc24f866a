"""The writer thread on its own (no database): flush waits only for what was submitted before it, even
under steady load; the failures kept are capped; close gives up after its timeout and says so."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from tierwise.store import RoutingRecord
from tierwise.store.base import BatchStore, Groups
from tierwise.store.records import Change


class MemoryStore(BatchStore):
    """Batches kept in memory; ``_write`` waits ``delay_s`` and fails while ``failing``; ``gate`` holds it."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.rows: list[Any] = []
        self.delay_s = 0.0
        self.failing = False
        self.gate = threading.Event()
        self.gate.set()

    def describe(self) -> str:
        return "memory"

    def _prepare(self) -> None:
        pass

    def _write(self, groups: Groups) -> None:
        self.gate.wait()
        time.sleep(self.delay_s)
        if self.failing:
            raise RuntimeError("disk full")
        for _, rows in groups:
            self.rows.extend(rows)

    def _close_writer(self) -> None:
        pass

    def _fetch(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        return []

    def add_change(self, change: Change) -> int:
        return 0

    def _execute(self, sql: str, args: Sequence[Any]) -> int:
        return 0


def record(n: int) -> RoutingRecord:
    return RoutingRecord(f"r-{n}", time.time(), "openai.chat", "ok", 200)


def test_flush_returns_under_steady_load() -> None:
    store = MemoryStore(batch_size=4, flush_interval_s=0.001).start()
    store.delay_s = 0.002
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            store.submit(record(n))
            n += 1
            time.sleep(0.0005)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(0.05)
        for i in range(5):
            store.submit(record(-1 - i))
            started = time.monotonic()
            assert store.flush(timeout=5.0)
            assert time.monotonic() - started < 2.0
            assert f"r--{1 + i}" in {row[0] for row in store.rows}
    finally:
        stop.set()
        worker.join()
        store.close()


def test_the_failures_kept_are_capped() -> None:
    store = MemoryStore(batch_size=1, flush_interval_s=0.001).start()
    store.failing = True
    for n in range(250):
        store.submit(record(n))
    assert store.flush()
    assert len(store._failing) == 100 and len(store.errors) == 100
    assert len(store.problems()) == 3
    store.failing = False
    store.submit(record(999))
    assert store.flush()
    assert store.problems() == []
    store.close()


def test_close_gives_up_after_its_timeout(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore(batch_size=1, flush_interval_s=0.001).start()
    store.gate.clear()
    for n in range(3):
        store.submit(record(n))
    assert not store.flush(timeout=0.05)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tierwise.store.base"):
        store.close(timeout=0.2)
    assert time.monotonic() - started < 2.0
    assert "did not finish within" in caplog.text and "3 records not written" in caplog.text
    store.gate.set()
