"""The circuit breaker on its own, on a clock the test moves: when it opens, half-opens and closes."""

from __future__ import annotations

import pytest

from tests.faults.conftest import FakeClock, shaped_config
from tierwise.config import CircuitConfig
from tierwise.errors import ConfigError
from tierwise.policy.circuit import GO, SKIP, TRIAL, Breaker, Circuits

SPEC = CircuitConfig(failures=3, window_s=10, open_s=5)


def breaker(clock: FakeClock) -> Breaker:
    return Breaker("m", SPEC, clock)


def fail(b: Breaker, times: int) -> None:
    for _ in range(times):
        assert b.allow() == GO
        b.failure(trial=False)


def test_opens_after_n_failures_within_the_window() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 2)
    assert b.state == "closed" and b.recent_failures() == 2
    clock.advance(9.9)
    fail(b, 1)  # three failures within 10 s
    assert b.state == "open" and b.opened == 1
    assert b.allow() == SKIP and b.retry_in_s() == pytest.approx(5)


def test_failures_spread_wider_than_the_window_keep_it_closed() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(10):
        fail(b, 1)
        clock.advance(5.1)  # never three within 10 s
    assert b.state == "closed" and b.opened == 0
    assert b.recent_failures() == 1


def test_successes_do_not_hide_failures_within_the_window() -> None:
    clock = FakeClock()
    b = breaker(clock)
    for _ in range(3):
        assert b.allow() == GO
        b.success(trial=False)
        b.failure(trial=False)
    assert b.state == "open"


def test_half_open_lets_one_trial_through_and_its_success_closes() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(4.9)
    assert b.allow() == SKIP
    clock.advance(0.1)
    assert b.state == "half_open"
    assert b.allow() == TRIAL
    assert b.allow() == SKIP  # one trial at a time; the others still go elsewhere
    b.success(trial=True)
    assert b.state == "closed" and b.recent_failures() == 0
    assert b.allow() == GO
    # A clean slate: it takes three new failures to open it again.
    fail(b, 2)
    assert b.state == "closed"


def test_a_failed_trial_opens_it_again_for_open_s() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(5)
    assert b.allow() == TRIAL
    clock.advance(1)
    b.failure(trial=True)
    assert b.state == "open" and b.opened == 2
    clock.advance(4.9)
    assert b.allow() == SKIP
    clock.advance(0.1)
    assert b.allow() == TRIAL


def test_a_trial_without_a_verdict_lets_the_next_request_try() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    clock.advance(5)
    assert b.allow() == TRIAL
    b.release(trial=True)  # a 4xx, or the client went away
    assert b.state == "half_open"
    assert b.allow() == TRIAL


def test_late_outcomes_of_calls_started_before_it_opened_change_nothing() -> None:
    clock = FakeClock()
    b = breaker(clock)
    fail(b, 3)
    b.failure(trial=False)
    b.success(trial=False)
    b.release(trial=False)
    assert b.state == "open" and b.opened == 1
    clock.advance(5)
    assert b.allow() == TRIAL
    b.success(trial=False)  # not the trial's
    assert b.allow() == SKIP


def test_circuits_per_model_and_their_snapshot() -> None:
    config = shaped_config({"openai": "http://127.0.0.1:9/v1"})
    clock = FakeClock()
    circuits = Circuits.from_config(config, clock=clock)
    assert sorted(circuits.states()) == ["cheap-a", "cheap-b", "mid-a", "premium-a"]
    b = circuits.get("cheap-a")
    assert b is not None
    for _ in range(5):  # the default: 5 failures in 30 s, open 15 s
        b.failure(trial=False)
    snap = circuits.snapshot()
    assert snap["cheap-a"] == {"state": "open", "recent_failures": 0, "retry_in_s": 15.0}
    assert snap["cheap-b"] == {"state": "closed", "recent_failures": 0}
    clock.advance(15)
    assert circuits.states()["cheap-a"] == "half_open"


def test_config_turns_breakers_off_and_checks_its_values() -> None:
    off = shaped_config({"openai": "http://127.0.0.1:9/v1"}, retry={"circuit": None})
    circuits = Circuits.from_config(off)
    assert circuits.get("cheap-a") is None and circuits.snapshot() == {}
    tuned = shaped_config(
        {"openai": "http://127.0.0.1:9/v1"}, retry={"circuit": {"failures": 2, "window_s": 1, "open_s": 3}}
    )
    assert tuned.retry.circuit == CircuitConfig(failures=2, window_s=1, open_s=3)
    with pytest.raises(ConfigError, match=r"retry\.circuit\.failures"):
        shaped_config({"openai": "http://127.0.0.1:9/v1"}, retry={"circuit": {"failures": 0}})
    with pytest.raises(ConfigError, match=r"retry\.circuit\.open_after: unknown key"):
        shaped_config({"openai": "http://127.0.0.1:9/v1"}, retry={"circuit": {"open_after": 3}})
