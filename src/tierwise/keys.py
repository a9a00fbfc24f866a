"""Proxy API keys kept in the store, with budgets and rate limits that every replica enforces.

``tierwise keys create`` makes a key: the secret (``tw-`` and 32 URL-safe random characters) is printed once
and only its SHA-256 is stored (table ``api_keys``), with the key's user tier, team (the request class of its
requests), budget (dollars per UTC day or calendar month), requests per minute, and what happens past the
budget (refuse, or route down to the cheapest tier). Keys in the config file (``auth.keys``) work beside them.

Every replica keeps a ``KeyRing``: the store's keys and their usage, read again every
``store.sync_interval_s`` in a worker thread. The request path never waits on the database. Each replica
counts its own usage in memory (exact and immediate) and adds it to rows of its own, through the store's
writer thread, in the same batches as the records: per key and period the dollars spent and the requests
(``key_usage``), per key and minute the requests (``key_minutes``). What a key has used is this replica's
count plus the other replicas' rows as last read, so another replica's spending is seen here within its
writer's ``flush_interval_s`` plus this replica's ``sync_interval_s``. docs/keys.md says how far a burst can
go past a limit in that time.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from tierwise.errors import BudgetExceeded, RateLimited
from tierwise.store.records import Comparison, Feedback, KeyUsage, RoutingRecord, StoredKey

if TYPE_CHECKING:
    from tierwise.config import ApiKey
    from tierwise.policy.engine import RequestContext
    from tierwise.store import BatchStore, RecordSink

SECRET_PREFIX = "tw-"
# Characters of the secret kept in the store to tell keys apart in listings ("tw-" and four more).
SHOWN_CHARS = 7
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
OverBudget = Literal["refuse", "route_down"]
OVER_BUDGET: tuple[OverBudget, ...] = ("refuse", "route_down")
Period = Literal["day", "month"]
# How many minutes of per-minute counts the database keeps.
KEEP_MINUTES = 10
# The shadow comparisons' background spend is counted in key_usage under this id, which no key can have (an
# id starts with a letter or a digit): every replica and worker sharing the store holds one daily cap.
SHADOW_SPEND_ID = "~shadow"


def new_secret() -> str:
    """A new key's secret: ``tw-`` and 32 URL-safe random characters (192 bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(24)


def rate_limit_wait(rpm: int, current: int, previous: int, now: float) -> int | None:
    """None when a request may go now under a limit of ``rpm`` requests per sliding minute, else the whole
    seconds until one may (for ``retry-after``). The last 60 seconds' count is estimated from the per-minute
    counts as ``current + previous * (1 - elapsed)``, ``elapsed`` the share of this minute gone (the previous
    minute's requests taken as spread evenly over it): no burst of 2 x rpm across a minute's boundary."""
    elapsed = (now % 60) / 60
    if current + previous * (1 - elapsed) < rpm:
        return None
    to_next_minute = 60 - now % 60
    if current >= rpm:
        # Not within this minute: in the next one, this minute's count must have decayed below the limit.
        wait = to_next_minute + 60 * (1 - rpm / current)
    else:
        # Later in this minute, once the previous minute's share has decayed enough.
        wait = 60 * (1 - (rpm - current) / previous) - now % 60
    return max(1, math.floor(wait + 1e-9) + 1)  # the first whole second past it (1e-9: float rounding)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Budget:
    usd: float
    period: Period

    def __str__(self) -> str:
        return f"{self.usd:g}/{self.period}"


_BUDGET = re.compile(r"\s*\$?\s*(\d+(?:\.\d*)?|\.\d+)\s*/\s*([A-Za-z]+)\s*")


def parse_budget(text: str) -> Budget:
    """``100/month``, ``5/day`` (US dollars, UTC periods); raises ValueError saying what is wrong."""
    match = _BUDGET.fullmatch(text)
    if match is None:
        raise ValueError(f"expected DOLLARS/day or DOLLARS/month (e.g. 100/month, 5/day), got {text!r}")
    usd, period = float(match.group(1)), match.group(2).lower()
    if period not in ("day", "month"):
        raise ValueError(f"the period is day or month (UTC), got {match.group(2)!r}")
    if usd <= 0:
        raise ValueError(f"the amount must be above 0, got {match.group(1)}")
    return Budget(usd, "day" if period == "day" else "month")


def check_id(key_id: str) -> str:
    """A key id as given, or ValueError: 1 to 64 letters, digits and ``. _ : @ -``, not starting with one
    of those signs."""
    if not ID_PATTERN.fullmatch(key_id):
        raise ValueError(
            f"{key_id!r}: use 1 to 64 letters, digits and . _ : @ - (starting with a letter or digit)"
        )
    return key_id


def periods(ts: float) -> tuple[str, str]:
    """The UTC day and calendar month ``ts`` falls in, as usage rows name them."""
    at = datetime.fromtimestamp(ts, UTC)
    return f"day:{at:%Y-%m-%d}", f"month:{at:%Y-%m}"


def period_of(key: StoredKey, ts: float) -> str:
    """The period of ``key``'s budget at ``ts`` (a key without a budget: the month)."""
    day, month = periods(ts)
    return day if key.budget_period == "day" else month


def create_key(
    store: BatchStore,
    key_id: str,
    *,
    user_tier: str | None = None,
    team: str | None = None,
    budget: Budget | None = None,
    rpm: int | None = None,
    over_budget: OverBudget | None = None,
    now: float | None = None,
) -> tuple[str, StoredKey]:
    """Make a key and store its SHA-256; returns the secret (shown once, kept nowhere) and what was stored.
    Raises ValueError for bad values, StoreError when the id is taken or the store cannot be written."""
    check_id(key_id)
    if rpm is not None and rpm < 1:
        raise ValueError(f"rpm: at least 1 request per minute, got {rpm}")
    if over_budget is not None and over_budget not in OVER_BUDGET:
        raise ValueError(f"over_budget: refuse or route_down, got {over_budget!r}")
    for name, value in (("user_tier", user_tier), ("team", team)):
        if value is not None and not value.strip():
            raise ValueError(f"{name}: empty; leave it out instead")
    secret = new_secret()
    key = StoredKey(
        id=key_id,
        key_sha256=digest(secret),
        prefix=secret[:SHOWN_CHARS],
        created_at=time.time() if now is None else now,
        user_tier=user_tier,
        team=team,
        budget_usd=budget.usd if budget else None,
        budget_period=budget.period if budget else None,
        rpm=rpm,
        over_budget=over_budget,
    )
    store.add_key(key)
    return secret, key


@dataclass(frozen=True, slots=True)
class _Snapshot:
    keys: list[StoredKey]
    usage: dict[tuple[str, str], tuple[float, int]]
    minutes: dict[tuple[str, int], int]


class KeyRing:
    """One replica's view of the store's keys and their usage (see the module's docstring).

    Everything but ``refresh``'s database read runs on the event loop and only touches memory. ``clock`` is
    the wall clock budgets (UTC days and months) and rate limits (minutes) are counted by.
    """

    def __init__(
        self,
        store: BatchStore | None,
        *,
        interval_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.clock = clock
        # This replica's rows in key_usage and key_minutes: unique per process and per ring.
        self.replica = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._by_digest: dict[str, StoredKey] = {}
        self.by_id: dict[str, StoredKey] = {}
        # What this replica counted since it started (exact), and what the others had when last read.
        self._mine: dict[tuple[str, str], list[float]] = {}
        self._my_minutes: dict[tuple[str, int], int] = {}
        self._theirs: dict[tuple[str, str], tuple[float, int]] = {}
        self._their_minutes: dict[tuple[str, int], int] = {}
        self._pruned = 0.0
        self.problem: str | None = None  # why the last refresh failed
        # The store's keys by id, and the config's keys (auth.keys) that have a budget or a rate limit,
        # counted like store keys; by_id holds both.
        self._stored: dict[str, StoredKey] = {}
        self._config_keys: dict[str, StoredKey] = {}
        self._clash: list[str] = []

    def set_config_keys(self, keys: Sequence[ApiKey]) -> None:
        """Take the limits of the config's keys (at startup and on every reload): a key with a ``budget`` or
        an ``rpm`` is admitted and counted exactly as a store key (its usage rows go by its id)."""
        limited = {}
        for k in keys:
            if k.budget is None and k.rpm is None:
                continue
            budget = parse_budget(k.budget) if k.budget is not None else None
            limited[k.id] = StoredKey(
                id=k.id,
                key_sha256=digest(k.key.get_secret_value()),
                prefix="",
                created_at=0.0,
                user_tier=k.user_tier,
                team=k.team,
                budget_usd=budget.usd if budget else None,
                budget_period=budget.period if budget else None,
                rpm=k.rpm,
                over_budget=k.over_budget,
            )
        self._config_keys = limited
        self._merge()

    def _merge(self) -> None:
        """by_id from the store's keys and the config's limited ones; a config key's limits win an id both
        use (said once on stderr: their usage would be counted together)."""
        clash = sorted(set(self._stored) & set(self._config_keys))
        if clash and clash != self._clash:
            print(
                f"tierwise: store keys {', '.join(map(repr, clash))} have the id of a key in the config's "
                "auth.keys; the config key's limits apply to both and their usage is counted together",
                file=sys.stderr,
            )
        self._clash = clash
        self.by_id = {**self._stored, **self._config_keys}

    # ---- the request path (memory only) ----

    def find(self, key_digest: str) -> StoredKey | None:
        """The store key with this SHA-256 (revoked ones too), as last read."""
        return self._by_digest.get(key_digest)

    def used(self, key_id: str, period: str) -> tuple[float, int]:
        """Dollars spent and requests of a key in a period: this replica's, and the others' as last read."""
        mine = self._mine.get((key_id, period))
        theirs = self._theirs.get((key_id, period), (0.0, 0))
        if mine is None:
            return theirs
        return mine[0] + theirs[0], int(mine[1]) + theirs[1]

    def admit(self, ctx: RequestContext, default_over_budget: OverBudget) -> None:
        """Let a request of a key with limits (a store key, or a config key with a budget or an rpm) through,
        or raise BudgetExceeded / RateLimited. A key past its budget whose setting (or else
        ``default_over_budget``) is route_down gets ``ctx.route_down`` set instead.
        An admitted request is counted (its minute, its periods' requests)."""
        key = self.by_id.get(ctx.api_key_id or "")
        if key is None or key.revoked_at is not None:
            return
        now = self.clock()
        if key.budget_usd is not None:
            period = period_of(key, now)
            spent = self.used(key.id, period)[0]
            if spent >= key.budget_usd:
                if (key.over_budget or default_over_budget) == "route_down":
                    ctx.route_down = "over_budget"
                else:
                    raise BudgetExceeded(
                        f"the API key {key.id!r} has used its budget: ${spent:.4f} of "
                        f"${key.budget_usd:g} this {key.budget_period} (UTC)"
                    )
        minute = int(now // 60)
        if key.rpm is not None:
            current = self._my_minutes.get((key.id, minute), 0) + self._their_minutes.get((key.id, minute), 0)
            previous = self._my_minutes.get((key.id, minute - 1), 0) + self._their_minutes.get(
                (key.id, minute - 1), 0
            )
            retry_after = rate_limit_wait(key.rpm, current, previous, now)
            if retry_after is not None:
                raise RateLimited(
                    f"the API key {key.id!r} is limited to {key.rpm} requests per minute; "
                    f"try again in {retry_after} s",
                    retry_after,
                )
        self._my_minutes[(key.id, minute)] = self._my_minutes.get((key.id, minute), 0) + 1
        self._add(key.id, now, 0.0, 1, minute)

    def spend(self, key_id: str, cost_usd: float) -> None:
        """A finished request of ``key_id`` cost this much: count it now, here, and in the store."""
        self._add(key_id, self.clock(), cost_usd, 0, None)

    def _add(self, key_id: str, now: float, cost_usd: float, requests: int, minute: int | None) -> None:
        for period in (both := periods(now)):
            row = self._mine.setdefault((key_id, period), [0.0, 0])
            row[0] += cost_usd
            row[1] += requests
        if self.store is not None:
            self.store.submit(KeyUsage(key_id, self.replica, both, cost_usd, requests, minute))

    def shadow_spent_today(self) -> float:
        """What shadow comparisons spent this UTC day: this replica's, and the others' as last read."""
        return self.used(SHADOW_SPEND_ID, periods(self.clock())[0])[0]

    def count_shadow_spend(self, cost_usd: float) -> None:
        """A shadow comparison's background answer or judging cost this much (counted like a key's spend)."""
        if cost_usd > 0:
            self._add(SHADOW_SPEND_ID, self.clock(), cost_usd, 0, None)

    def sink(self, inner: RecordSink) -> RecordSink:
        """A record sink that counts each finished request's cost against its key (one in ``by_id``), then
        hands the record on to ``inner``."""
        return _SpendSink(self, inner)

    # ---- reading the store again (off the event loop) ----

    def _read(self, now: float) -> _Snapshot:
        assert self.store is not None
        minute = int(now // 60)
        keys = self.store.stored_keys()
        usage = self.store.key_usage(periods(now), excluding=self.replica)
        minutes = self.store.key_minutes(minute - 1, excluding=self.replica)  # the sliding window's two
        if now - self._pruned >= 60:
            self.store.prune_key_minutes(minute - KEEP_MINUTES)
            self._pruned = now
        return _Snapshot(keys, usage, minutes)

    async def refresh(self) -> None:
        """Read the keys and the other replicas' usage again (in a worker thread); raises when the store
        cannot be read."""
        if self.store is None:
            return
        now = self.clock()
        snapshot = await asyncio.to_thread(self._read, now)
        self._by_digest = {k.key_sha256: k for k in snapshot.keys}
        self._stored = {k.id: k for k in snapshot.keys}
        self._merge()
        self._theirs, self._their_minutes = snapshot.usage, snapshot.minutes
        # This replica's own counts are kept for the current periods and minutes only.
        current = set(periods(self.clock()))
        self._mine = {k: v for k, v in self._mine.items() if k[1] in current}
        minute = int(self.clock() // 60)
        self._my_minutes = {k: v for k, v in self._my_minutes.items() if k[1] >= minute - 1}

    async def run(self) -> None:
        """Refresh every ``interval_s`` until cancelled; a failed read keeps what was last read."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except Exception as exc:
                problem = f"cannot read the API keys and their usage from {self.store_name()}: {exc}"
                if problem != self.problem:
                    print(f"tierwise: {problem}", file=sys.stderr)
                self.problem = problem
            else:
                self.problem = None

    def store_name(self) -> str:
        return self.store.describe() if self.store is not None else "(no store)"


class _SpendSink:
    def __init__(self, ring: KeyRing, inner: RecordSink) -> None:
        self.ring = ring
        self.inner = inner

    def submit(self, record: RoutingRecord | Feedback | Comparison) -> None:
        # Shadow mode's background answers are the operator's experiment, not the key's spending.
        if (
            isinstance(record, RoutingRecord)
            and record.cost_usd
            and record.endpoint != "shadow"
            and record.api_key_id is not None
            and record.api_key_id in self.ring.by_id
        ):
            self.ring.spend(record.api_key_id, record.cost_usd)
        self.inner.submit(record)
