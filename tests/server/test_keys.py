"""API keys kept in the store, served by a real proxy: authentication through the official SDKs, the key's
user tier and team in routing, budgets (refused in each API's shape, or routed down), rate limits, revocation,
a budget two replicas on one PostgreSQL database share, redaction of what the records keep, and provider keys
that never leave the server."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from tests.conftest import RunningProxy, router_config
from tests.store.pg import pg_schema
from tierwise.config import load_config
from tierwise.errors import ConfigError
from tierwise.keys import Budget, create_key, periods
from tierwise.store import BatchStore, PostgresStore, SQLiteStore
from tierwise.testing.upstreams import Behaviour, FakeUpstream

ADMIN = "adm-keys-test"
CODE_PROMPT = "Write a Python function that parses an ISO 8601 date and returns the weekday."
# What one request costs at each tier with the fake upstream's usage (10 input, 5 output tokens).
CHEAP_COST = 10 * 0.1e-6 + 5 * 0.4e-6
PREMIUM_COST = 10 * 10e-6 + 5 * 40e-6


class Clock:
    """A wall clock the test moves: 10 s into a minute, on a fixed day."""

    def __init__(self) -> None:
        self.now = 1_767_225_600.0 + 10  # 2026-01-01T00:00:10Z

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def proxies() -> Iterator[list[RunningProxy]]:
    running: list[RunningProxy] = []
    yield running
    for proxy in running:
        proxy.stop()


def serve(
    proxies: list[RunningProxy],
    upstream: FakeUpstream,
    db: Path,
    *,
    anthropic_url: str | None = None,
    shared: BatchStore | None = None,
    **overrides: Any,
) -> RunningProxy:
    clock = overrides.pop("clock", None)
    overrides["auth"] = {"required": True, "admin_key": ADMIN, **overrides.get("auth", {})}
    overrides["store"] = {"sync_interval_s": 0.1, **overrides.get("store", {})}
    config = router_config(upstream.base_url, anthropic_url, **overrides)
    proxy = RunningProxy(config, db, store=shared, **({"clock": clock} if clock else {}))
    proxies.append(proxy)
    return proxy


def client(proxy: RunningProxy, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0)


def chat(proxy: RunningProxy, key: str, model: str = "tierwise/auto", content: str = "hi") -> Any:
    with client(proxy, key) as sdk:
        return sdk.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": content}]
        )


def post(proxy: RunningProxy, key: str, model: str = "tierwise/auto") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(proxy.base_url + "/chat/completions", json=body, headers={"x-api-key": key}, timeout=10)


def until(check: Any, within_s: float = 3.0) -> float:
    """Seconds until ``check()`` is true; fails after ``within_s``."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within_s, "not within the time allowed"
        time.sleep(0.02)
    return time.monotonic() - started


def test_a_store_key_authenticates_through_the_openai_sdk(
    proxies: list[RunningProxy], openai_upstream: FakeUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "records.db"
    secret, _ = create_key(SQLiteStore(db), "team-a")
    proxy = serve(proxies, openai_upstream, db)
    raw = chat(proxy, secret)
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content
    assert proxy.record(raw.headers["x-tierwise-request-id"]).api_key_id == "team-a"
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(proxy, secret + "x")
    assert refused.value.status_code == 401
    # A key created while the proxy runs is accepted within the sync interval.
    later, _ = create_key(SQLiteStore(db), "team-b")
    until(lambda: post(proxy, later).status_code == 200)


def test_a_store_keys_user_tier_caps_routing_and_its_team_is_the_class(
    proxies: list[RunningProxy], openai_upstream: FakeUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "records.db"
    free, _ = create_key(SQLiteStore(db), "free-user", user_tier="free", team="search")
    paid, _ = create_key(SQLiteStore(db), "paid-user")
    proxy = serve(proxies, openai_upstream, db, routing={"user_tier_caps": {"free": "cheap"}})
    as_paid = chat(proxy, paid, content=CODE_PROMPT)
    assert as_paid.headers["x-tierwise-tier"] == "mid"
    as_free = chat(proxy, free, content=CODE_PROMPT)
    assert as_free.headers["x-tierwise-tier"] == "cheap"
    assert as_free.headers["x-tierwise-reason"] == "rule:user_tier=free"
    assert as_free.headers["x-tierwise-class"] == "search"
    record = proxy.record(as_free.headers["x-tierwise-request-id"])
    assert (record.api_key_id, record.user_tier, record.request_class) == ("free-user", "free", "search")


def test_a_key_over_its_budget_is_refused_in_each_apis_shape(
    proxies: list[RunningProxy],
    openai_upstream: FakeUpstream,
    anthropic_upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    db = tmp_path / "records.db"
    secret, _ = create_key(SQLiteStore(db), "capped", budget=Budget(PREMIUM_COST / 2, "day"))
    proxy = serve(proxies, openai_upstream, db, anthropic_url=anthropic_upstream.base_url)
    # Under the budget (nothing spent yet): served, and what it cost counts at once.
    assert chat(proxy, secret, "tierwise/premium").http_response.status_code == 200
    with pytest.raises(openai.RateLimitError) as refused:
        chat(proxy, secret)
    assert refused.value.status_code == 429
    error = refused.value.response.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
    assert "'capped' has used its budget" in error["message"] and "this day" in error["message"]
    # The Anthropic endpoint answers in its own shape, and the official SDK reads it as a rate limit.
    with (
        anthropic.Anthropic(base_url=proxy.url, api_key=secret, max_retries=0) as claude,
        pytest.raises(anthropic.RateLimitError) as limited,
    ):
        claude.messages.create(
            model="tierwise/auto", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
    body = limited.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    # Refusals are recorded as rejected requests of the key, and cost nothing.
    rejected = [r for r in proxy.records() if r.status == "rejected"]
    assert [(r.api_key_id, r.http_status, r.cost_usd) for r in rejected] == [("capped", 429, 0.0)] * 2
    assert {r.endpoint for r in rejected} == {"openai.chat", "anthropic.messages"}


def test_route_down_serves_a_key_over_budget_at_the_cheapest_tier(
    proxies: list[RunningProxy], openai_upstream: FakeUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "records.db"
    store = SQLiteStore(db)
    own, _ = create_key(store, "own-setting", budget=Budget(1e-9, "month"), over_budget="route_down")
    default, _ = create_key(store, "config-default", budget=Budget(1e-9, "month"))
    refuse, _ = create_key(store, "says-refuse", budget=Budget(1e-9, "month"), over_budget="refuse")
    proxy = serve(proxies, openai_upstream, db, auth={"required": True, "over_budget": "route_down"})
    for secret in (own, default, refuse):
        first = chat(proxy, secret, "tierwise/premium")  # nothing spent yet
        assert first.headers["x-tierwise-tier"] == "premium"
    for secret in (own, default):
        # Whatever it asks for (a tier, a model, a premium keyword), the cheapest tier answers.
        for model, content in (
            ("tierwise/premium", "hi"),
            ("premium-a", "hi"),
            ("tierwise/auto", "a lawsuit"),
        ):
            raw = chat(proxy, secret, model, content)
            assert raw.http_response.status_code == 200
            assert raw.headers["x-tierwise-tier"] == "cheap"
            assert raw.headers["x-tierwise-model"] == "cheap-a"
            assert raw.headers["x-tierwise-reason"].endswith(";over_budget")
    assert post(proxy, refuse).status_code == 429
    assert post(proxy, own, model="no-such-model").status_code == 404


def test_config_keys_have_budgets_and_rate_limits_too(
    proxies: list[RunningProxy], openai_upstream: FakeUpstream, tmp_path: Path
) -> None:
    keys = [
        {"id": "cfg-capped", "key": "sk-cfg-capped", "budget": "0.000001/day"},
        {"id": "cfg-down", "key": "sk-cfg-down", "budget": "0.000001/month", "over_budget": "route_down"},
        {"id": "cfg-rpm", "key": "sk-cfg-rpm", "rpm": 1},
        {"id": "cfg-free", "key": "sk-cfg-free"},
    ]
    proxy = serve(proxies, openai_upstream, tmp_path / "records.db", auth={"keys": keys}, clock=Clock())
    for secret in ("sk-cfg-capped", "sk-cfg-down"):
        assert chat(proxy, secret, "tierwise/premium").headers["x-tierwise-tier"] == "premium"
    with pytest.raises(openai.RateLimitError) as refused:
        chat(proxy, "sk-cfg-capped")
    assert refused.value.response.json()["error"]["code"] == "budget_exceeded"
    assert "'cfg-capped' has used its budget" in refused.value.response.json()["error"]["message"]
    assert chat(proxy, "sk-cfg-down", "tierwise/premium").headers["x-tierwise-tier"] == "cheap"
    assert post(proxy, "sk-cfg-rpm").status_code == 200
    limited = post(proxy, "sk-cfg-rpm")
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limit_exceeded"
    # A config key without limits is not counted at all.
    assert all(post(proxy, "sk-cfg-free").status_code == 200 for _ in range(3))
    proxy.store.flush()
    counted = {key_id for key_id, _ in proxy.store.key_usage(periods(Clock()()))}
    assert counted == {"cfg-capped", "cfg-down", "cfg-rpm"}


def test_a_reload_changes_a_config_keys_limits(
    start_proxy: Any, openai_upstream: FakeUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "router.yaml"

    def write(rpm: int | None) -> None:
        key: dict[str, Any] = {"id": "cfg", "key": "sk-cfg"} | ({"rpm": rpm} if rpm else {})
        data = {
            "providers": {"up": {"type": "openai", "base_url": openai_upstream.base_url}},
            "models": {m: {"provider": "up"} for m in ("cheap-a", "mid-a", "premium-a")},
            "tiers": {"cheap": ["cheap-a"], "mid": ["mid-a"], "premium": ["premium-a"]},
            "auth": {"required": True, "admin_key": ADMIN, "keys": [key]},
            "store": {"path": str(tmp_path / "records.db")},
        }
        path.write_text(yaml.safe_dump(data))

    def reload() -> None:
        done = httpx.post(proxy.url + "/v1/tierwise/admin/reload", headers={"x-api-key": ADMIN}, timeout=10)
        assert done.status_code == 200, done.text

    write(None)
    proxy = start_proxy(load_config(path), config_path=path)
    assert [post(proxy, "sk-cfg").status_code for _ in range(3)] == [200] * 3
    write(1)  # a limit added: counted from the reload on
    reload()
    assert [post(proxy, "sk-cfg").status_code for _ in range(2)] == [200, 429]
    write(None)  # and taken away again
    reload()
    assert post(proxy, "sk-cfg").status_code == 200


def test_a_bad_config_key_budget_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        router_config("http://127.0.0.1:9", auth={"keys": [{"id": "a", "key": "k", "budget": "5"}]})
    assert "auth.keys.0.budget" in str(caught.value) and "DOLLARS/day or DOLLARS/month" in str(caught.value)


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(
    proxies: list[RunningProxy],
    openai_upstream: FakeUpstream,
    anthropic_upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    db = tmp_path / "records.db"
    secret, _ = create_key(SQLiteStore(db), "limited", rpm=2)
    clock = Clock()
    proxy = serve(proxies, openai_upstream, db, anthropic_url=anthropic_upstream.base_url, clock=clock)
    assert [post(proxy, secret).status_code for _ in range(2)] == [200, 200]
    with pytest.raises(openai.RateLimitError) as limited:
        chat(proxy, secret)
    # Sliding minute: this minute's 2 requests count in full until it ends, and decay through the next.
    assert limited.value.response.headers["retry-after"] == "51"
    error = limited.value.response.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "2 requests per minute" in error["message"]
    messages = httpx.post(
        proxy.url + "/v1/messages",
        json={"model": "tierwise/auto", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": secret},
    )
    assert messages.status_code == 429 and messages.headers["retry-after"] == "51"
    assert messages.json()["error"]["type"] == "rate_limit_error"
    clock.now += 45
    assert post(proxy, secret).headers["retry-after"] == "6"
    clock.now += 5  # the next minute's first second: the last 60 s still hold 2 requests
    assert post(proxy, secret).headers["retry-after"] == "1"
    clock.now += 1
    assert post(proxy, secret).status_code == 200


def test_a_revoked_key_is_refused_within_the_sync_interval(
    proxies: list[RunningProxy], openai_upstream: FakeUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "records.db"
    secret, _ = create_key(SQLiteStore(db), "leaving")
    proxy = serve(proxies, openai_upstream, db, auth={"required": False})
    assert post(proxy, secret).status_code == 200
    assert SQLiteStore(db).revoke_key("leaving", time.time())
    took = until(lambda: post(proxy, secret).status_code == 401)
    assert took < 1.5  # sync_interval_s is 0.1
    refused = post(proxy, secret).json()["error"]
    assert refused["type"] == "authentication_error" and "'leaving' was revoked" in refused["message"]
    # Without auth.required an anonymous request is still served; the revoked key is not.
    assert post(proxy, "").status_code == 200


def test_two_replicas_on_one_postgres_database_share_a_budget(
    proxies: list[RunningProxy], openai_upstream: FakeUpstream, tmp_path: Path
) -> None:
    with pg_schema() as dsn:
        secret, _ = create_key(PostgresStore(dsn), "shared", budget=Budget(PREMIUM_COST / 2, "day"), rpm=100)
        a, b = (
            serve(
                proxies,
                openai_upstream,
                tmp_path / f"unused-{n}.db",
                shared=PostgresStore(dsn, flush_interval_s=0.02),
            )
            for n in range(2)
        )
        assert post(b, secret).status_code == 200  # B spends a little
        assert post(a, secret, model="tierwise/premium").status_code == 200  # A goes past the budget
        assert post(a, secret).status_code == 429  # at once on A, which spent it
        served_by_b = 1
        started = time.monotonic()
        while (status := post(b, secret).status_code) == 200:  # B has not seen A's spending yet
            served_by_b += 1
            assert time.monotonic() - started < 2.0, "B never saw A's spending"
            time.sleep(0.02)
        assert status == 429  # within B's sync_interval_s (0.1) plus A's writer (0.02), and some room
        for proxy in (a, b):
            proxy.stop()
        proxies.clear()
        # The database has each replica's usage; summed, the key's day.
        usage = PostgresStore(dsn).key_usage([periods(time.time())[0]])
        [(spent, requests)] = usage.values()
        assert spent == pytest.approx(PREMIUM_COST + served_by_b * CHEAP_COST)
        assert requests == 1 + served_by_b  # the refused ones are not counted


def test_the_redaction_hook_masks_the_stored_prompt_and_answer(
    proxies: list[RunningProxy], openai_upstream: FakeUpstream, tmp_path: Path
) -> None:
    openai_upstream.script(
        "cheap-a", Behaviour(content="Sure: write to help@example.org or call 020 7946 0958.")
    )
    proxy = serve(
        proxies,
        openai_upstream,
        tmp_path / "records.db",
        auth={"required": False},
        store={"redact": "tierwise.redact:emails_and_numbers"},
    )
    prompt = "I am jane.doe@example.com, card 4111 1111 1111 1111, phone +1 (555) 123-4567; 3 items in 2024."
    raw = chat(proxy, "anonymous", "cheap-a", prompt)
    # The client's answer and what the upstream was sent are untouched; only the record is masked.
    assert "help@example.org" in raw.parse().choices[0].message.content
    assert "jane.doe@example.com" in str(openai_upstream.requests_for("cheap-a")[0].body)
    record = proxy.record(raw.headers["x-tierwise-request-id"])
    assert record.prompt is not None and record.response_text is not None
    assert "[email], card [card], phone [phone]; 3 items in 2024." in record.prompt
    assert record.response_text == "Sure: write to [email] or call [phone]."
    for secret in ("jane.doe", "4111", "555", "help@", "7946"):
        assert secret not in record.prompt + record.response_text


def test_admin_endpoints_need_the_admin_key_not_an_api_key(
    proxies: list[RunningProxy], openai_upstream: FakeUpstream, tmp_path: Path
) -> None:
    db = tmp_path / "records.db"
    secret, _ = create_key(SQLiteStore(db), "user")
    proxy = serve(proxies, openai_upstream, db)
    for method, path in (("POST", "/v1/tierwise/admin/reload"), ("GET", "/v1/tierwise/stats")):
        response = httpx.request(method, proxy.url + path, headers={"authorization": f"Bearer {secret}"})
        assert response.status_code == 401, path
    assert httpx.get(proxy.url + "/v1/tierwise/stats", headers={"x-api-key": ADMIN}).status_code == 200


def test_no_provider_key_leaves_the_server(
    proxies: list[RunningProxy],
    openai_upstream: FakeUpstream,
    anthropic_upstream: FakeUpstream,
    tmp_path: Path,
) -> None:
    provider_keys = ("sk-upstream-secret", "sk-ant-secret")  # router_config's
    db = tmp_path / "records.db"
    secret, _ = create_key(SQLiteStore(db), "user")
    proxy = serve(proxies, openai_upstream, db, anthropic_url=anthropic_upstream.base_url)
    # The upstreams were sent the provider keys...
    auth = {"authorization": f"Bearer {secret}"}
    seen: list[httpx.Response] = []
    chat_body = {"model": "tierwise/auto", "messages": [{"role": "user", "content": "hi"}]}
    with httpx.Client(base_url=proxy.url, timeout=10) as http:
        seen.append(http.post("/v1/chat/completions", json=chat_body, headers=auth))
        seen.append(http.post("/v1/chat/completions", json={**chat_body, "stream": True}, headers=auth))
        seen.append(http.post("/v1/chat/completions", json={**chat_body, "model": "premium-a"}, headers=auth))
        seen.append(http.post("/v1/messages", json={**chat_body, "max_tokens": 20}, headers=auth))
        seen.append(http.post("/v1/chat/completions", json={**chat_body, "model": "nope"}, headers=auth))
        seen.append(http.post("/v1/chat/completions", json=chat_body))  # no key
        for model in ("cheap-a", "cheap-b", "mid-a"):  # every attempt fails upstream: a 502 listing them
            openai_upstream.script(model, Behaviour("status", status=401))
        anthropic_upstream.script("premium-a", Behaviour("status", status=401))
        seen.append(
            http.post("/v1/chat/completions", json={**chat_body, "model": "tierwise/cheap"}, headers=auth)
        )
        for path in ("/v1/models", "/healthz", "/readyz", "/metrics", "/dashboard"):
            seen.append(http.get(path, headers=auth))
        seen.append(http.get("/v1/tierwise/stats", headers={"x-api-key": ADMIN}))
    assert {r.status_code for r in seen} >= {200, 401, 404, 502}
    assert openai_upstream.requests[0].headers["authorization"] == "Bearer sk-upstream-secret"
    # ... and nothing the clients got, headers included, nor any record, holds one.
    records = proxy.records()
    assert len(records) == 7
    for value in provider_keys:
        for response in seen:
            assert value not in response.text, response.request.url
            assert all(value not in f"{k}: {v}" for k, v in response.headers.items())
        assert all(value not in repr(dataclasses.asdict(r)) for r in records)
