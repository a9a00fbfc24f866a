"""Circuit breakers, one per configured model: stop calling a model that keeps failing, for a while.

A breaker is *closed* (calls go through) until ``failures`` retryable failures (5xx, 429, timeouts, broken
connections, malformed answers; not 4xx client errors) fall within ``window_s`` seconds. It then *opens*:
for ``open_s`` seconds every call to the model is skipped, so the engine falls back to the next model at
once. After that it is *half-open*: one trial call goes through (the others are still skipped); its success
closes the breaker, its failure opens it again for another ``open_s``.

The breakers sit on every request's path, so they cost O(1) and allocate nothing per call: the failure
times live in a fixed ring of ``failures`` slots, and the state is a few plain attributes. They assume one
event loop (no locks). Time comes from ``clock`` (``time.monotonic`` by default), so tests can move it on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Literal

from tierwise.config import CircuitConfig, RouterConfig

__all__ = ["CIRCUIT_OPEN", "GO", "SKIP", "TRIAL", "Breaker", "CircuitState", "Circuits"]

CircuitState = Literal["closed", "open", "half_open"]

# What ``Breaker.allow`` answers.
SKIP: Final = 0  # the circuit is open: do not call the model
GO: Final = 1  # closed: call it
TRIAL: Final = 2  # half-open: call it as the one trial; report the outcome with trial=True

# The error an attempt skipped by an open circuit is recorded with.
CIRCUIT_OPEN: Final = "circuit open"

_CLOSED: Final = 0
_OPEN: Final = 1
_HALF_OPEN: Final = 2
_NAMES: Final[tuple[CircuitState, CircuitState, CircuitState]] = ("closed", "open", "half_open")


class Breaker:
    """The breaker of one model. ``allow`` before each call; then ``success``, ``failure`` (a retryable
    failure) or ``release`` (an outcome that says nothing of the model's health: a 4xx, a cancelled call),
    each with ``trial`` true when ``allow`` answered TRIAL."""

    __slots__ = (
        "_clock",
        "_count",
        "_next",
        "_open_s",
        "_opened_at",
        "_state",
        "_times",
        "_trial",
        "_window_s",
        "model",
        "opened",
    )

    def __init__(self, model: str, spec: CircuitConfig, clock: Callable[[], float]) -> None:
        self.model = model
        self._clock = clock
        self._window_s = spec.window_s
        self._open_s = spec.open_s
        self._times = [0.0] * spec.failures  # a ring of the latest failure times
        self._next = 0  # the slot the next failure goes in; once the ring is full, the oldest failure's
        self._count = 0  # failures in the ring (at most its size)
        self._state = _CLOSED
        self._opened_at = 0.0
        self._trial = False  # a half-open trial call is in flight
        # How many times it has opened (a counter for /metrics).
        self.opened = 0

    def allow(self) -> int:
        """SKIP, GO or TRIAL: whether to call the model now."""
        state = self._state
        if state == _CLOSED:
            return GO
        if state == _OPEN:
            if self._clock() - self._opened_at < self._open_s:
                return SKIP
            self._state = _HALF_OPEN
        if self._trial:
            return SKIP
        self._trial = True
        return TRIAL

    def success(self, trial: bool) -> None:
        """The call answered. A trial's success closes the breaker with a clean slate."""
        if trial:
            self._state = _CLOSED
            self._trial = False
            self._count = 0

    def failure(self, trial: bool) -> None:
        """The call failed in a way that may be the model's fault (retryable)."""
        now = self._clock()
        if trial:
            self._trip(now)
            return
        if self._state != _CLOSED:
            return  # a call started before the breaker opened: it is already open
        times = self._times
        slot = self._next
        times[slot] = now
        slot += 1
        if slot == len(times):
            slot = 0
        self._next = slot
        if self._count < len(times):
            self._count += 1
        # With the ring full, ``slot`` now points at the oldest of the latest ``failures`` failures.
        if self._count == len(times) and now - times[slot] <= self._window_s:
            self._trip(now)

    def release(self, trial: bool) -> None:
        """The call ended without a verdict on the model; a trial lets the next request try instead."""
        if trial:
            self._trial = False

    def _trip(self, now: float) -> None:
        self._state = _OPEN
        self._opened_at = now
        self._trial = False
        self._count = 0
        self.opened += 1

    @property
    def state(self) -> CircuitState:
        """The state as the next call would find it (an open breaker whose time is up reads half-open)."""
        if self._state == _OPEN and self._clock() - self._opened_at >= self._open_s:
            return "half_open"
        return _NAMES[self._state]

    def retry_in_s(self) -> float | None:
        """While open: seconds until a trial call may go through."""
        if self._state != _OPEN:
            return None
        return max(0.0, self._open_s - (self._clock() - self._opened_at))

    def recent_failures(self) -> int:
        """Failures within the window now (while closed)."""
        if self._state != _CLOSED:
            return 0
        now, size = self._clock(), len(self._times)
        return sum(
            1 for i in range(self._count) if now - self._times[(self._next - 1 - i) % size] <= self._window_s
        )


class Circuits:
    """The breakers of every configured model (none when ``spec`` is None: breakers off)."""

    def __init__(
        self,
        spec: CircuitConfig | None,
        models: Iterable[str],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.clock = clock
        self._breakers: dict[str, Breaker] = (
            {} if spec is None else {m: Breaker(m, spec, clock) for m in models}
        )

    @classmethod
    def from_config(cls, config: RouterConfig, *, clock: Callable[[], float] = time.monotonic) -> Circuits:
        return cls(config.retry.circuit, config.models, clock=clock)

    def get(self, model: str) -> Breaker | None:
        return self._breakers.get(model)

    def breakers(self) -> Iterator[Breaker]:
        return iter(self._breakers.values())

    def states(self) -> dict[str, CircuitState]:
        return {name: b.state for name, b in self._breakers.items()}

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Each model's breaker, for /readyz: state, failures in the window, seconds until a trial."""
        out: dict[str, dict[str, object]] = {}
        for name, breaker in self._breakers.items():
            entry: dict[str, object] = {"state": breaker.state, "recent_failures": breaker.recent_failures()}
            wait = breaker.retry_in_s()
            if wait is not None and wait > 0:
                entry["retry_in_s"] = round(wait, 3)
            out[name] = entry
        return out
