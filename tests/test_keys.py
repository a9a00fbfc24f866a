"""``tierwise keys`` on SQLite and PostgreSQL, the key usage the store's writer keeps, budgets as written on the
command line, and the redaction hook's config and built-in function."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.store.pg import execute, pg_schema
from tierwise.cli import app
from tierwise.config import StoreConfig, parse_config
from tierwise.errors import ConfigError
from tierwise.keys import Budget, parse_budget, periods, rate_limit_wait
from tierwise.redact import emails_and_numbers
from tierwise.store import BatchStore, KeyUsage, PostgresStore, SQLiteStore, open_store

SECRET = re.compile(r"tw-[A-Za-z0-9_-]{32}")


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where the keys go, as --db takes it: a SQLite file, or a PostgreSQL URL (a schema of its own)."""
    if request.param == "sqlite":
        yield str(tmp_path / "keys.db")
        return
    with pg_schema() as dsn:
        yield dsn


def keys(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["keys", *args])
    return result.exit_code, result.stdout, result.stderr


def stored_text(db: str) -> str:
    """Everything the store holds about keys, as text."""
    if db.startswith("postgresql://"):
        return repr(execute(db, "SELECT * FROM api_keys"))
    return Path(db).read_bytes().decode("latin-1")


def test_create_list_revoke(db: str) -> None:
    code, out, err = keys(
        "create", "--id", "team-a", "--tier", "paid", "--team", "search", "--budget-usd", "100/month",
        "--rpm", "600", "--over-budget", "route-down", "--db", db,
    )  # fmt: skip
    assert code == 0, err
    secret = out.strip()
    assert SECRET.fullmatch(secret), out
    assert "created key 'team-a'" in err and "shown this once" in err
    # Only the SHA-256 is kept.
    text = stored_text(db)
    assert secret not in text and hashlib.sha256(secret.encode()).hexdigest() in text
    assert keys("create", "--id", "plain", "--db", db)[0] == 0

    code, out, err = keys("list", "--db", db, "--json")
    assert code == 0, err
    listed = {row["id"]: row for row in json.loads(out)}
    assert secret not in out and "key_sha256" not in out
    row = listed["team-a"]
    assert row["prefix"] == secret[:7]
    assert (row["user_tier"], row["team"], row["budget_usd"], row["budget_period"], row["rpm"]) == (
        "paid", "search", 100.0, "month", 600,
    )  # fmt: skip
    assert (row["over_budget"], row["status"], row["spent_usd"], row["requests"]) == (
        "route_down",
        "active",
        0,
        0,
    )
    assert row["period"] == periods(time.time())[1]
    assert listed["plain"]["budget_usd"] is None and listed["plain"]["over_budget"] is None

    code, out, _ = keys("list", "--db", db)
    assert code == 0 and "team-a" in out and "$100/month" in out and "route-down" in out
    assert secret not in out

    code, out, err = keys("revoke", "team-a", "--db", db)
    assert code == 0 and "revoked key 'team-a'" in out, err
    assert json.loads(keys("list", "--db", db, "--json")[1])[0]["status"] == "revoked"
    code, _, err = keys("revoke", "team-a", "--db", db)
    assert code == 2 and "revoked already" in err
    code, _, err = keys("revoke", "nobody", "--db", db)
    assert code == 2 and "no key 'nobody'" in err and "plain" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--id", "has space"], "--id: 'has space': use 1 to 64 letters"),
        (["--id", "k", "--budget-usd", "5/week"], "--budget-usd: the period is day or month"),
        (["--id", "k", "--budget-usd", "lots"], "--budget-usd: expected DOLLARS/day or DOLLARS/month"),
        (["--id", "k", "--budget-usd", "0/day"], "--budget-usd: the amount must be above 0"),
        (["--id", "k", "--rpm", "0"], "--rpm: at least 1 request per minute"),
        (["--id", "k", "--over-budget", "shrug"], "--over-budget: refuse or route-down, got 'shrug'"),
        (["--id", "k", "--team", " "], "--team: empty"),
    ],
)
def test_create_says_what_is_wrong(tmp_path: Path, args: list[str], message: str) -> None:
    code, out, err = keys("create", *args, "--db", str(tmp_path / "k.db"))
    assert code == 2 and not out
    assert message in " ".join(err.split())


def test_a_taken_id_is_refused(db: str) -> None:
    assert keys("create", "--id", "dup", "--db", db)[0] == 0
    code, out, err = keys("create", "--id", "dup", "--db", db)
    assert code == 2 and not out and "a key with id 'dup' exists already" in err


def test_keys_go_to_the_config_store_and_may_not_reuse_a_config_keys_id(tmp_path: Path) -> None:
    store = tmp_path / "from-config.db"
    config = tmp_path / "router.yaml"
    data = yaml.safe_load((Path(__file__).parent.parent / "src/tierwise/data/default.yaml").read_text())
    data["store"] = {"path": str(store)}
    data["auth"] = {"keys": [{"id": "in-config", "key": "k-1"}]}
    config.write_text(yaml.safe_dump(data))
    code, _, err = keys("create", "--id", "in-config", "--config", str(config))
    assert code == 2 and "'in-config' is the id of a key in the config" in err
    assert keys("create", "--id", "fresh", "--config", str(config))[0] == 0
    assert [k.id for k in SQLiteStore(store).stored_keys()] == ["fresh"]
    code, _, err = keys("list", "--db", str(tmp_path / "missing.db"))
    assert code == 2 and "no store at" in err


def test_the_writer_adds_up_key_usage_per_replica(db: str) -> None:
    store: BatchStore = open_store(StoreConfig(), db).start()
    try:
        day, month = periods(time.time())
        for replica, cost in (("r1", 0.25), ("r1", 0.5), ("r2", 1.0)):
            store.submit(KeyUsage("k", replica, (day, month), cost, 1, 1000))
        store.flush()
        store.submit(KeyUsage("k", "r1", (day, month), 2.0, 0, None))  # a later batch adds to the rows
        store.submit(KeyUsage("other", "r2", (day,), 0.1, 1, 1001))
        store.flush()
        assert store.key_usage([day, month]) == {
            ("k", day): (3.75, 3), ("k", month): (3.75, 3), ("other", day): (pytest.approx(0.1), 1),
        }  # fmt: skip
        assert store.key_usage([month], excluding="r1") == {("k", month): (1.0, 1)}
        assert store.key_minutes(1000) == {("k", 1000): 3, ("other", 1001): 1}
        assert store.key_minutes(1001, excluding="r2") == {}
        assert store.prune_key_minutes(1001) == 2  # r1's and r2's rows of minute 1000
        assert store.key_minutes(0) == {("other", 1001): 1}
    finally:
        store.close()
    if isinstance(store, PostgresStore):
        assert execute(db, "SELECT count(*) FROM key_usage") == [(5,)]


def test_budgets_as_written() -> None:
    assert parse_budget("100/month") == Budget(100.0, "month")
    assert parse_budget(" $5.50 / Day ") == Budget(5.5, "day")
    assert str(parse_budget("0.25/day")) == "0.25/day"
    for bad in ("100", "/month", "-1/day", "1e3/day", "5/fortnight"):
        with pytest.raises(ValueError):
            parse_budget(bad)


def test_redaction_masks_emails_cards_and_phone_numbers() -> None:
    cases = {
        "write to jane.doe+tw@mail.example.co.uk today": "write to [email] today",
        "card 4111 1111 1111 1111, or 5500-0000-0000-0004.": "card [card], or [card].",
        "call +1 (555) 123-4567 or 020 7946 0958": "call [phone] or [phone]",
        "order 12345 of 2024-01-31 cost 1234.50 at v1.2.3, pi is 3.14159265": (
            "order 12345 of 2024-01-31 cost 1234.50 at v1.2.3, pi is 3.14159265"
        ),
        "phones 555-123-4567, +44 20 7946 0958, +15551234567, (555) 123 4567": (
            "phones [phone], [phone], [phone], [phone]"
        ),
        "4111111111111111 and 4111-1111-1111-1111": "[card] and [card]",
        # What stays: versions, IP addresses, a unix timestamp, bare order numbers and ids, year ranges, and a
        # card-like run that fails the Luhn check.
        "build 10.0.19045.2965 on 192.168.100.200 at 1700000000, order 1234567, id 12345678901234": (
            "build 10.0.19045.2965 on 192.168.100.200 at 1700000000, order 1234567, id 12345678901234"
        ),
        "from 1999-2005, card 4111 1111 1111 1112": "from 1999-2005, card 4111 1111 1111 1112",
    }
    for text, masked in cases.items():
        assert emails_and_numbers(text) == masked


def _config(redact: str) -> dict[str, object]:
    return {
        "providers": {"p": {"type": "replay"}},
        "models": {"m": {"provider": "p"}},
        "tiers": {"cheap": ["m"], "mid": ["m"], "premium": ["m"]},
        "store": {"redact": redact},
    }


def test_a_bad_redaction_hook_is_a_config_error_naming_the_key() -> None:
    assert parse_config(_config("tierwise.redact:emails_and_numbers")).store.redact is not None
    for path, message in (
        ("tierwise.redact", "expected module:function"),
        ("tierwise.no_such_module:f", "cannot import module 'tierwise.no_such_module'"),
        ("tierwise.redact:nothing_here", "module 'tierwise.redact' has no 'nothing_here'"),
        ("tierwise.keys:SECRET_PREFIX", "tierwise.keys:SECRET_PREFIX is a str, not a function"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(_config(path), "router.yaml")
        assert str(caught.value).startswith(f"router.yaml: store.redact: {message}")


def test_the_rate_limit_counts_a_sliding_minute() -> None:
    minute = 1_700_000_040.0  # a minute's first second (divisible by 60)
    assert minute % 60 == 0
    # Under the limit, with nothing before: admitted.
    assert rate_limit_wait(10, 9, 0, minute + 30) is None
    # The previous minute's 10 requests weigh 1 - elapsed: at 30 s, 5 of them still count.
    assert rate_limit_wait(10, 4, 10, minute + 30) is None
    assert rate_limit_wait(10, 5, 10, minute + 30) == 1  # 10.0 is not under 10: once a little more has gone
    # At 15 s, 5 + 7.5 = 12.5: wait until 5 + 10 x (1 - t / 60) < 10, past t = 30, i.e. 15 s and a bit.
    assert rate_limit_wait(10, 5, 10, minute + 15) == 16
    # This minute full: not before the next, and then until this minute's 10 decay below the limit.
    assert rate_limit_wait(10, 10, 0, minute + 50) == 11
    assert rate_limit_wait(10, 20, 0, minute + 50) == 10 + 30 + 1
    # No burst of twice the limit around a boundary: after 10 in one minute, the next one's requests are let
    # through only as the old ones' share decays (one now and then, not ten at once).
    assert rate_limit_wait(10, 0, 10, minute) == 1
    assert rate_limit_wait(10, 0, 10, minute + 1) is None  # 10 x 59/60 < 10
    assert rate_limit_wait(10, 1, 10, minute + 1) == 6  # 1 + 10 x (1 - t/60) < 10 once t > 6
