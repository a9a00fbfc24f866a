"""Where records go. A RecordSink takes records without blocking; SQLiteStore is the embedded default."""

from __future__ import annotations

from typing import Protocol

from tierwise.store.records import Attempt, Comparison, Feedback, RoutingRecord
from tierwise.store.sqlite import SQLiteStore

__all__ = ["Attempt", "Comparison", "Feedback", "RecordSink", "RoutingRecord", "SQLiteStore"]


class RecordSink(Protocol):
    def submit(self, record: RoutingRecord) -> None:
        """Accept a record without blocking the caller."""
