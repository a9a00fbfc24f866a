"""GET /v1/tierwise/stats and POST /v1/tierwise/feedback: a scripted run of known requests through loopback
upstreams, every figure checked against values worked out by hand.

Every fake answer reports 10 input and 5 output tokens, so one answer costs (10 * input + 5 * output price)
/ 1e6: cheap-a $3e-6, cheap-b $6e-6, mid-a $3e-5, premium-a $3e-4 (also every served request's
premium-only baseline).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.conftest import router_config
from tierwise.server.app import create_app
from tierwise.store import SQLiteStore
from tierwise.testing.upstreams import Behaviour, FakeUpstream

CHEAP_A, CHEAP_B, MID_A, PREMIUM_A = 3e-6, 6e-6, 3e-5, 3e-4
ADMIN = "admin-secret-for-tests"
# The "chat" class's controlled upstream delays: 20, 40, ..., 200 ms.
DELAYS_MS = [20 * i for i in range(1, 11)]
JSON_FORMAT = {"type": "json_object"}


def stats_config(upstream: FakeUpstream, **overrides: Any) -> Any:
    # A cascade for tierwise/auto with the json gate only; explicit tiers go direct, and a tier's models
    # failing does not move the request up a tier (so a failed request is an error, not premium's answer).
    return router_config(
        upstream.base_url,
        routing={"policy": "cascade", "cascade": {"gates": [{"type": "json"}]}},
        retry={"attempts": 1, "fallback_up": False, "timeout_s": 5},
        **overrides,
    )


async def _send(client: httpx.AsyncClient, model: str, klass: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": f"a {klass} request"}], **extra}
    return await client.post("/v1/chat/completions", json=body, headers={"x-tierwise-class": klass})


async def scripted_run(url: str, upstream: FakeUpstream) -> dict[str, list[str]]:
    """The known traffic; returns the request ids by class (in the order sent where it matters)."""
    ids: dict[str, list[str]] = {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:

        async def send(model: str, klass: str, **extra: Any) -> httpx.Response:
            response = await _send(client, model, klass, **extra)
            ids.setdefault(klass, []).append(response.headers["x-tierwise-request-id"])
            return response

        # "extract": 4 cascades asking for JSON. The first cheap answer is not JSON and escalates to mid.
        upstream.script("cheap-a", Behaviour(content="not json"), *[Behaviour(content='{"a": 1}')] * 3)
        upstream.script("mid-a", Behaviour(content='{"a": 2}'))
        for _ in range(4):
            done = await send("tierwise/auto", "extract", response_format=JSON_FORMAT)
            assert done.status_code == 200, done.text
        # "support": a fallback (cheap-a fails, cheap-b answers), then an error (both fail: 502).
        upstream.script("cheap-a", Behaviour("status", status=400), Behaviour("status", status=400))
        upstream.script("cheap-b", Behaviour(content="fine"), Behaviour("status", status=400))
        assert (await send("tierwise/cheap", "support")).status_code == 200
        assert (await send("tierwise/cheap", "support")).status_code == 502
        # "legal": 2 premium answers after 100 ms; "chat": 10 cheap answers after 20..200 ms, all at once.
        upstream.script("premium-a", *[Behaviour(delay_s=0.1)] * 2)
        upstream.script("cheap-a", *[Behaviour(delay_s=d / 1000) for d in DELAYS_MS])
        sent = await asyncio.gather(
            *[send("tierwise/premium", "legal") for _ in range(2)],
            *[send("tierwise/cheap", "chat") for _ in DELAYS_MS],
        )
        assert [r.status_code for r in sent] == [200] * 12
    return ids


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai") as up:
        yield up


def get_stats(url: str, **params: str) -> dict[str, Any]:
    response = httpx.get(url + "/v1/tierwise/stats", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def post_feedback(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + "/v1/tierwise/feedback", json=body)


async def test_stats_match_a_scripted_run(start_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = start_proxy(stats_config(upstream))
    ids = await scripted_run(proxy.url, upstream)
    # Feedback: a score, a thumbs up and (on another class) a thumbs down. A source's later score on the
    # same request replaces its earlier one.
    escalated_id = ids["extract"][0]
    for body, score in [
        ({"request_id": escalated_id, "score": 0.2}, 0.2),
        ({"request_id": escalated_id, "score": 0.8, "comment": "on second thought"}, 0.8),
        ({"request_id": ids["extract"][1], "thumbs": "up"}, 1.0),
        ({"request_id": ids["chat"][0], "thumbs": "down"}, 0.0),
    ]:
        done = post_feedback(proxy.url, body)
        assert done.status_code == 200, done.text
        assert done.json() == {"status": "recorded", "request_id": body["request_id"], "score": score}

    stats = get_stats(proxy.url, window="1h")
    classes = stats["classes"]
    assert stats["window"] == "1h" and stats["class"] is None and stats["premium_tier"] == "premium"
    assert sorted(classes) == ["chat", "extract", "legal", "overall", "support"]
    assert {name: row["requests"] for name, row in classes.items()} == {
        "chat": 10, "extract": 4, "legal": 2, "support": 2, "overall": 18,
    }  # fmt: skip

    extract = classes["extract"]
    assert extract["cost_usd"] == pytest.approx(3 * CHEAP_A + CHEAP_A + MID_A)
    assert extract["baseline_cost_usd"] == pytest.approx(4 * PREMIUM_A)
    assert extract["saving"] == pytest.approx(1 - (4 * CHEAP_A + MID_A) / (4 * PREMIUM_A))
    assert extract["cascaded"] == 4 and extract["escalation_rate"] == pytest.approx(0.25)
    assert extract["health"] == "normal"
    # The json gate judged 5 answers: the bad cheap one failed; 3 cheap and the mid one passed.
    assert extract["gates"] == {"json": {"pass": 4, "fail": 1}}
    assert extract["tier_mix"] == {"cheap": 0.75, "mid": 0.25}
    # Quality: 0.8 and 1.0 (thumbs up); mean 0.9, 95% interval 0.9 ± 1.96 * stdev / sqrt(2), clipped at 1.
    half = 1.96 * (0.2**2 / 2) ** 0.5 / 2**0.5
    assert extract["quality"]["n"] == 2 and extract["quality"]["mean"] == pytest.approx(0.9)
    assert extract["quality"]["ci95"] == pytest.approx([0.9 - half, 1.0])
    # The escalated request's senior got the junior's hint; its feedback is the hinted group's quality.
    hinted = extract["hints"]["hinted"]
    assert hinted["escalated"] == 1 and hinted["feedback"]["mean"] == pytest.approx(0.8)
    assert "unhinted" not in extract["hints"]

    support = classes["support"]
    assert support["errors"] == 1 and support["upstream_fallbacks"] == 1 and support["rejected"] == 0
    assert support["cost_usd"] == pytest.approx(CHEAP_B)  # failed attempts cost nothing
    assert support["baseline_cost_usd"] == pytest.approx(PREMIUM_A)  # served requests only
    assert support["escalation_rate"] is None and support["cascaded"] == 0

    legal = classes["legal"]
    assert legal["cost_usd"] == pytest.approx(2 * PREMIUM_A) and legal["saving"] == pytest.approx(0)
    assert legal["tier_mix"] == {"premium": 1.0}

    chat = classes["chat"]
    assert chat["cost_usd"] == pytest.approx(10 * CHEAP_A)
    assert chat["saving"] == pytest.approx(1 - CHEAP_A / PREMIUM_A)
    assert chat["quality"] == {"n": 1, "mean": 0.0, "ci95": [0.0, 1.0]}
    # p50 / p95 of 20..200 ms (inclusive percentiles): 110 and 191 ms, plus the proxy's own time, which on
    # loopback is a few ms; the tolerance is one 20 ms step between delays, not timing noise.
    assert 110 <= chat["latency_ms"]["p50"] < 110 + 20
    assert 191 <= chat["latency_ms"]["p95"] < 191 + 20
    # Premium answered after 100 ms: chat's p95 is worse than that, and that is the only warning.
    assert 100 <= stats["premium_p95_ms"] < 100 + 20
    assert len(stats["warnings"]) == 1
    assert re.fullmatch(
        r"chat: p95 latency \d+ ms is worse than the premium model's \d+ ms", stats["warnings"][0]
    )

    overall = classes["overall"]
    assert overall["errors"] == 1 and overall["upstream_fallbacks"] == 1 and overall["cascaded"] == 4
    assert overall["escalation_rate"] == pytest.approx(0.25)
    assert overall["cost_usd"] == pytest.approx(
        sum(classes[c]["cost_usd"] for c in classes if c != "overall")
    )
    assert overall["baseline_cost_usd"] == pytest.approx(17 * PREMIUM_A)  # 17 served
    assert overall["quality"]["n"] == 3

    # The series covers the window in 24 buckets and adds up to the same totals.
    assert len(stats["series"]) == 24
    assert sum(b["requests"] for b in stats["series"]) == 18
    assert sum(b["cost_usd"] for b in stats["series"]) == pytest.approx(overall["cost_usd"])
    assert sum(b["baseline_cost_usd"] for b in stats["series"]) == pytest.approx(17 * PREMIUM_A)
    assert sum(b["escalated"] for b in stats["series"]) == 1
    assert stats["until"] - stats["since"] == pytest.approx(3600)
    # Recent decisions: every request, newest first, with its reason and path.
    recent = stats["recent"]
    assert {r["request_id"] for r in recent} == {i for group in ids.values() for i in group}
    assert [r["ts"] for r in recent] == sorted((r["ts"] for r in recent), reverse=True)
    first = next(r for r in recent if r["request_id"] == escalated_id)
    assert first["reason"] == "cascade:cheapest" and first["path"] == ["cheap(fail:json)", "mid(pass)"]
    assert first["tier"] == "mid" and first["model"] == "mid-a"
    failed = next(r for r in recent if r["request_id"] == ids["support"][1])
    assert failed["status"] == "error" and failed["reason"] == "explicit:tier"

    # class= keeps one class: its row, the overall of that class alone, its decisions only.
    only = get_stats(proxy.url, window="24h", **{"class": "chat"})
    assert only["class"] == "chat" and sorted(only["classes"]) == ["chat", "overall"]
    assert only["classes"]["overall"]["requests"] == 10
    assert only["classes"]["overall"]["cost_usd"] == pytest.approx(10 * CHEAP_A)
    assert {r["request_id"] for r in only["recent"]} == set(ids["chat"])
    # The premium yardstick is the whole window's, so the chat view keeps its latency warning.
    assert only["premium_p95_ms"] == pytest.approx(stats["premium_p95_ms"])
    assert only["warnings"] == stats["warnings"]
    assert get_stats(proxy.url, **{"class": "nothing-here"})["classes"]["overall"]["requests"] == 0


def test_feedback_errors(start_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = start_proxy(stats_config(upstream))
    served = httpx.post(
        proxy.url + "/v1/chat/completions",
        json={"model": "tierwise/cheap", "messages": [{"role": "user", "content": "hi"}]},
    )
    rid = served.headers["x-tierwise-request-id"]

    unknown = post_feedback(proxy.url, {"request_id": "chatcmpl-nope", "score": 1})
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert error["param"] == "request_id" and error["type"] == "invalid_request_error"
    assert "chatcmpl-nope" in error["message"] and error["code"] == "not_found"

    for body in ({"request_id": rid}, {"request_id": rid, "score": 1, "thumbs": "up"}):
        bad = post_feedback(proxy.url, body)
        assert bad.status_code == 400
        assert bad.json()["error"]["param"] == "score" and "exactly one" in bad.json()["error"]["message"]
    for score in (1.5, -0.1):
        bad = post_feedback(proxy.url, {"request_id": rid, "score": score})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "score"
    bad = post_feedback(proxy.url, {"request_id": rid, "thumbs": "sideways"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "thumbs"
    bad = post_feedback(proxy.url, {"request_id": rid, "score": 1, "stars": 5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "stars"
    # Nothing above was recorded.
    assert get_stats(proxy.url)["classes"]["overall"]["quality"]["n"] == 0


def test_window_is_validated(start_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = start_proxy(stats_config(upstream))
    for window in ("a week", "7", "1y", "-1h"):
        bad = httpx.get(proxy.url + "/v1/tierwise/stats", params={"window": window})
        assert bad.status_code == 400, window
        assert bad.json()["error"]["param"] == "window" and "1h, 24h, 7d" in bad.json()["error"]["message"]
    for window in ("30m", "24h", "7d", "2w", "90s"):
        assert get_stats(proxy.url, window=window)["window"] == window
    assert get_stats(proxy.url)["window"] == "1h"  # the default


def test_the_admin_key_guards_stats_where_configured(start_proxy: Any, upstream: FakeUpstream) -> None:
    proxy = start_proxy(stats_config(upstream, auth={"admin_key": ADMIN}))
    url = proxy.url + "/v1/tierwise/stats"
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": ADMIN}):
        denied = httpx.get(url, headers=headers)
        assert denied.status_code == 401
        assert denied.json()["error"]["type"] == "authentication_error"
    assert httpx.get(url, headers={"authorization": f"Bearer {ADMIN}"}).status_code == 200
    assert httpx.get(url, headers={"x-api-key": ADMIN}).status_code == 200


def test_without_an_admin_key_only_loopback_clients_see_stats(tmp_path: Any, upstream: FakeUpstream) -> None:
    config = stats_config(upstream)
    app = create_app(config, store=SQLiteStore(tmp_path / "records.db"))
    # The ASGI app as a client elsewhere on the network would reach it.
    with TestClient(app, client=("192.0.2.7", 40000)) as remote:
        denied = remote.get("/v1/tierwise/stats")
        assert denied.status_code == 403
        assert denied.json()["error"]["type"] == "permission_error"
        assert "auth.admin_key" in denied.json()["error"]["message"]
    with TestClient(app, client=("127.0.0.1", 40000)) as local:
        assert local.get("/v1/tierwise/stats").status_code == 200
