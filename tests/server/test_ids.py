"""Request ids: random (feedback is scored by them), unique, of a fixed shape."""

from __future__ import annotations

from tierwise.server.ids import random_id


def test_request_ids_are_random_and_unique() -> None:
    ids = {random_id("chatcmpl-tw") for _ in range(5000)}  # more than one 4 KiB draw of random bytes
    assert len(ids) == 5000
    assert all(len(i) == len("chatcmpl-tw") + 20 and int(i[len("chatcmpl-tw") :], 16) >= 0 for i in ids)
