"""Request ids nobody can guess (feedback is scored by them): 80 bits from the operating system's random
source, read 4 KiB at a time so that a request costs a slice, not a system call."""

from __future__ import annotations

import os

_CHUNK = 4096
_SIZE = 10  # bytes: 80 bits


class _Pool:
    def __init__(self) -> None:
        self._bytes = b""
        self._at = 0

    def take(self) -> str:
        if self._at + _SIZE > len(self._bytes):
            self._bytes, self._at = os.urandom(_CHUNK), 0
        start = self._at
        self._at += _SIZE
        return self._bytes[start : start + _SIZE].hex()


# One per process, used from the event loop's thread only.
_POOL = _Pool()


def random_id(prefix: str) -> str:
    """``prefix`` and 20 random hex digits."""
    return prefix + _POOL.take()
