"""Reload-proof shadow state, feedback ownership, request ids, header safety and the routing catch-all."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest

from tests.conftest import router_config
from tests.server.test_shadow import comparisons
from tierwise.errors import AllAttemptsFailed
from tierwise.policy.engine import Engine
from tierwise.providers import build_providers
from tierwise.server.app import Proxy, create_app, header_value
from tierwise.server.sync import adopt_config
from tierwise.store import SQLiteStore
from tierwise.store.records import Attempt
from tierwise.testing.upstreams import FakeUpstream

ASK = [{"role": "user", "content": "Say hello to the team"}]
ANTHROPIC = {"anthropic-version": "2023-06-01"}


def chat(proxy: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"model": "tierwise/auto", "messages": ASK}
    return httpx.post(proxy.base_url + "/chat/completions", json=body, headers=headers or {})


def message(proxy: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"model": "tierwise/auto", "max_tokens": 50, "messages": ASK}
    return httpx.post(proxy.base_url + "/messages", json=body, headers={**ANTHROPIC, **(headers or {})})


# ---- 1. shadow state survives a reload ----


async def test_a_reload_keeps_the_shadow_spend_and_drains_earlier_comparisons(
    openai_upstream: FakeUpstream,
) -> None:
    config = router_config(openai_upstream.base_url, mode="shadow", shadow={"sample": 1.0})
    proxy = Proxy(config, Engine(config, build_providers(config)), None)
    first = proxy.shadow
    first.state.spend(0.5)
    done: list[bool] = []

    async def comparison() -> None:
        await asyncio.sleep(0.1)
        done.append(True)

    task = asyncio.create_task(comparison())
    first.tasks.add(task)
    task.add_done_callback(first.tasks.discard)
    proxy.swap(config, Engine(config, build_providers(config)))
    assert proxy.shadow is not first
    assert proxy.shadow.spent_today == pytest.approx(0.5)
    assert len(proxy.shadow.tasks) == 1  # the concurrency count carries over
    await proxy.aclose()
    assert done == [True]  # drained, not cancelled, though it started before the reload


# ---- 2. a failed background answer's spend counts ----


def test_a_failed_background_answer_still_counts_what_it_cost(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url, mode="shadow", shadow={"sample": 1.0}))
    shadow = proxy.app.state.proxy.shadow
    paid = Attempt("cheap", "cheap-a", "up", "error", 5.0, error="gate failed", cost_usd=0.01)

    async def failing(*args: Any, **kwargs: Any) -> Any:
        raise AllAttemptsFailed([paid, Attempt("cheap", "cheap-b", "up", "error", 5.0, http_status=500)])

    shadow.engine.complete = failing
    assert chat(proxy).status_code == 200
    (pair,) = comparisons(proxy, 1)
    assert pair.error is not None and "AllAttemptsFailed" in pair.error
    assert pair.router_cost_usd == pytest.approx(0.01)
    assert shadow.spent_today >= 0.01


# ---- 3. feedback only from the key that made the request ----


def test_only_the_requesting_key_or_the_admin_key_may_score_a_request(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url, auth={"admin_key": "adm"}))

    def score(rid: str, token: str | None) -> int:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        body = {"request_id": rid, "score": 1.0}
        return httpx.post(proxy.url + "/v1/tierwise/feedback", json=body, headers=headers).status_code

    alice = chat(proxy, {"authorization": "Bearer alice"}).headers["x-tierwise-request-id"]
    anonymous = chat(proxy).headers["x-tierwise-request-id"]
    assert score(alice, "bob") == 404
    assert score(alice, None) == 404
    assert score(anonymous, "bob") == 404
    assert score(alice, "alice") == 200
    assert score(anonymous, None) == 200
    assert score(alice, "adm") == 200 and score(anonymous, "adm") == 200


def test_request_ids_are_random_per_request(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    a, b = (chat(proxy).headers["x-tierwise-request-id"] for _ in range(2))
    c, d = (message(proxy).headers["x-tierwise-request-id"] for _ in range(2))
    assert a.startswith("chatcmpl-tw") and c.startswith("msg_tw")
    # No shared per-process prefix: the first random bytes differ (a 1 in 2**40 chance of a false failure).
    assert a[11:21] != b[11:21] and c[6:16] != d[6:16]
    assert len(a) == len("chatcmpl-tw") + 20 and len(c) == len("msg_tw") + 20


# ---- 4. client-controlled header values ----


@pytest.mark.parametrize("value", ["bad label!", "x" * 65, "été", ""])
def test_a_bad_class_header_is_refused_on_both_apis(
    start_proxy: Any, openai_upstream: FakeUpstream, value: str
) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    raw: dict[str, str | bytes] = {"x-tierwise-class": value.encode()}
    with httpx.Client() as client:
        openai_reply = client.post(
            proxy.base_url + "/chat/completions",
            json={"model": "tierwise/auto", "messages": ASK},
            headers=raw,
        )
        claude_reply = client.post(
            proxy.base_url + "/messages",
            json={"model": "tierwise/auto", "max_tokens": 50, "messages": ASK},
            headers={**ANTHROPIC, **raw},
        )
    assert openai_reply.status_code == 400
    error = openai_reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "x-tierwise-class"
    assert claude_reply.status_code == 400
    body = claude_reply.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "x-tierwise-class" in body["error"]["message"]
    assert [r.status for r in proxy.records()] == ["rejected", "rejected"]
    assert openai_upstream.requests == []


def test_a_good_class_header_is_kept(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    reply = chat(proxy, {"x-tierwise-class": "team.a:b-c_1"})
    assert reply.status_code == 200 and reply.headers["x-tierwise-class"] == "team.a:b-c_1"


def test_non_ascii_header_values_are_percent_encoded(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    keys = [{"id": "k1", "key": "sk-team", "team": "équipe-北"}]
    proxy = start_proxy(router_config(openai_upstream.base_url, auth={"keys": keys}))
    for send in (chat, message):
        reply = send(proxy, {"authorization": "Bearer sk-team"})
        assert reply.status_code == 200, reply.text
        assert reply.headers["x-tierwise-class"] == quote("équipe-北")
        assert unquote(reply.headers["x-tierwise-class"]) == "équipe-北"
    assert header_value("plain ascii; 50%") == "plain ascii; 50%"
    assert header_value("a\r\nb") == "a%0D%0Ab"
    assert unquote(header_value("règle 50%")) == "règle 50%"


# ---- 5. one engine per request, 6. the routing step's catch-all ----


def test_a_reload_during_routing_does_not_mix_engines(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    live = router_config(openai_upstream.base_url)
    shadow = router_config(openai_upstream.base_url, mode="shadow", shadow={"sample": 0.0})
    proxy = start_proxy(live)
    inner: Proxy = proxy.app.state.proxy
    admit = inner.keys.admit

    def reload_while_routing(config: Any) -> None:
        def admit_then_reload(*args: Any) -> None:
            admit(*args)
            inner.keys.admit = admit  # type: ignore[method-assign]
            inner.swap(config, Engine(config, build_providers(config), sink=inner.sink))

        inner.keys.admit = admit_then_reload  # type: ignore[method-assign]

    # Live (cheap-a) when the request starts; shadow (the baseline, premium-a) lands while it routes.
    reload_while_routing(shadow)
    assert chat(proxy).headers["x-tierwise-model"] == "cheap-a"
    assert chat(proxy).headers["x-tierwise-model"] == "premium-a"  # the next request sees the reload
    # And the other way round on the Messages API.
    reload_while_routing(live)
    assert message(proxy).headers["x-tierwise-model"] == "premium-a"
    assert message(proxy).headers["x-tierwise-model"] == "cheap-a"


def test_an_unexpected_routing_failure_is_recorded_and_answered_in_the_apis_shape(
    start_proxy: Any, openai_upstream: FakeUpstream
) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    inner: Proxy = proxy.app.state.proxy

    def broken(*args: Any) -> None:
        raise RuntimeError("bug")

    inner.keys.admit = broken  # type: ignore[method-assign]
    openai_reply = chat(proxy)
    assert openai_reply.status_code == 500
    assert openai_reply.json()["error"]["type"] == "server_error"
    claude_reply = message(proxy)
    assert claude_reply.status_code == 500
    assert claude_reply.json()["type"] == "error" and claude_reply.json()["error"]["type"] == "api_error"
    records = proxy.records()
    assert [(r.status, r.http_status) for r in records] == [("error", 500), ("error", 500)]
    assert {r.request_id for r in records} == {
        openai_reply.headers["x-tierwise-request-id"],
        claude_reply.headers["x-tierwise-request-id"],
    }


# ---- 7. loopback-only admin views behind a reverse proxy ----


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded", "X-Real-IP"])
def test_admin_views_refuse_proxied_requests_without_an_admin_key(
    start_proxy: Any, openai_upstream: FakeUpstream, header: str
) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    assert httpx.get(proxy.url + "/v1/tierwise/stats").status_code == 200
    reply = httpx.get(proxy.url + "/v1/tierwise/stats", headers={header: "203.0.113.7"})
    assert reply.status_code == 403 and "auth.admin_key" in reply.json()["error"]["message"]


# ---- 9. a failing startup still closes the store ----


async def test_a_failing_startup_closes_the_store(tmp_path: Path, openai_upstream: FakeUpstream) -> None:
    store = SQLiteStore(tmp_path / "records.db")
    app = create_app(router_config(openai_upstream.base_url), store=store)

    async def refresh() -> None:
        raise RuntimeError("the key table is away")

    app.state.proxy.keys.refresh = refresh
    with pytest.raises(RuntimeError, match="away"):
        async with app.router.lifespan_context(app):
            pass
    assert store._thread is None


# ---- 10. a database row never chooses the store ----


def test_an_adopted_version_keeps_the_replicas_own_store_section(openai_upstream: FakeUpstream) -> None:
    own = router_config(openai_upstream.base_url)
    text = (
        "providers:\n  up: {type: openai, base_url: 'http://127.0.0.1:9', api_key: k}\n"
        "models:\n  a: {provider: up}\n  b: {provider: up}\n  c: {provider: up}\n"
        "tiers:\n  cheap: [a]\n  mid: [b]\n  premium: [c]\n"
        "store:\n  redact: 'not_a_module_anyone_has:steal'\n"
    )
    config, differs = adopt_config(text, "row", own)
    assert differs and config.store == own.store and config.store.redact is None
    same, differs = adopt_config(text.split("store:")[0], "row", own)
    assert not differs and same.store == own.store
