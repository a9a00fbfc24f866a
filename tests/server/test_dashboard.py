"""GET /dashboard in a real headless Chromium: the page asks for the admin key, reads the stats endpoint
with it, and shows the same numbers; no console errors, no failed requests.

Needs /usr/bin/chromium (``apt-get install chromium``) and the ``playwright`` package; it never downloads a
browser. Set ``TIERWISE_DASHBOARD_SCREENSHOT=docs/images/dashboard.png`` to save a screenshot of the page.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.test_stats import ADMIN, JSON_FORMAT, stats_config
from tierwise.testing.upstreams import Behaviour, FakeUpstream

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=ARGS,
            headless=True,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def usd(value: float) -> str:
    """The page's money format."""
    return f"${value:.2f}" if abs(value) >= 1 else f"${value:.6f}"


def send(url: str, model: str, klass: str, **extra: Any) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": f"a {klass} request"}], **extra}
    done = httpx.post(url + "/v1/chat/completions", json=body, headers={"x-tierwise-class": klass})
    return done.headers["x-tierwise-request-id"]


def test_the_dashboard_shows_the_stats(start_proxy: Any, browser: Any) -> None:
    with FakeUpstream("openai") as upstream:
        proxy = start_proxy(stats_config(upstream, auth={"admin_key": ADMIN}))
        upstream.script("cheap-a", Behaviour(content="not json"), Behaviour(content='{"a": 1}'))
        upstream.script("mid-a", Behaviour(content='{"a": 2}'))
        ids = [send(proxy.url, "tierwise/auto", "extract", response_format=JSON_FORMAT) for _ in range(2)]
        ids += [send(proxy.url, "tierwise/cheap", "chat") for _ in range(3)]
        ids += [send(proxy.url, "tierwise/premium", "legal")]
        upstream.script("cheap-a", Behaviour("status", status=400))
        upstream.script("cheap-b", Behaviour("status", status=400))
        ids += [send(proxy.url, "tierwise/cheap", "support")]  # fails: an error row
        feedback = httpx.post(
            proxy.url + "/v1/tierwise/feedback", json={"request_id": ids[0], "thumbs": "up"}
        )
        assert feedback.status_code == 200

        page = browser.new_page()
        problems: list[str] = []
        page.on(
            "console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        )
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
        page.on(
            "response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None
        )

        served = httpx.get(proxy.url + "/dashboard")
        assert served.status_code == 200 and "default-src 'none'" in served.headers["content-security-policy"]
        page.goto(proxy.url + "/dashboard")
        # Before a key is given the page asks for one and reads nothing.
        page.wait_for_selector("body[data-state=needs-key]")
        assert "Enter the admin key" in page.inner_text("#message")
        page.fill("#admin-key", ADMIN)
        page.click("#use-key")
        page.wait_for_selector("body[data-state=loaded]", timeout=10_000)

        stats = httpx.get(
            proxy.url + "/v1/tierwise/stats",
            params={"window": "1h"},
            headers={"authorization": f"Bearer {ADMIN}"},
        ).json()
        classes = stats["classes"]
        assert sorted(classes) == ["chat", "extract", "legal", "overall", "support"]
        shown = page.eval_on_selector_all(
            "#classes tbody tr",
            """rows => rows.map(r => [r.dataset.class, Object.fromEntries(
                   [...r.querySelectorAll('td')].map(td => [td.dataset.field, td.textContent]))])""",
        )
        assert [name for name, _ in shown] == list(classes)
        for name, cells in shown:
            row = classes[name]
            assert cells["requests"] == str(row["requests"])
            assert cells["cost_usd"] == usd(row["cost_usd"])
            assert cells["baseline_cost_usd"] == usd(row["baseline_cost_usd"])
            assert cells["errors"] == str(row["errors"])
            if row["saving"] is None:  # nothing served: no baseline
                assert cells["saving"] == ""
            else:
                assert float(cells["saving"].rstrip("%")) / 100 == pytest.approx(row["saving"], abs=0.0005)
        exact = page.get_attribute("#classes tr[data-class=extract] td[data-field=cost_usd]", "data-value")
        assert exact is not None and float(exact) == pytest.approx(classes["extract"]["cost_usd"], rel=1e-12)
        assert page.inner_text("#classes tr[data-class=extract] td[data-field=escalation_rate]") == "50.0%"
        assert (
            page.inner_text("#classes tr[data-class=extract] td[data-field=quality]")
            == "1.00 [0.00, 1.00] n=1"
        )
        assert page.inner_text("#classes tr[data-class=support] td[data-field=errors]") == "1"
        # Every decision is listed with its reason; the escalated one with its path.
        listed = page.eval_on_selector_all("#recent tbody tr", "rows => rows.map(r => r.dataset.requestId)")
        assert sorted(listed) == sorted(ids)
        reason = page.inner_text(f"#recent tr[data-request-id='{ids[0]}'] td[data-field=reason]")
        assert reason.startswith("cascade:cheapest") and "cheap(fail:json) → mid(pass)" in reason
        # The charts are drawn: two cost lines, a bar per cascaded class, a quality mark.
        assert page.locator("#cost-chart polyline").count() == 2
        assert page.locator("#escalation-chart rect").count() == 1
        assert page.locator("#quality-chart circle").count() == 1
        warnings = page.eval_on_selector_all("#warnings li", "items => items.map(i => i.textContent)")
        assert warnings == (stats["warnings"] or ["None."])

        if target := os.environ.get("TIERWISE_DASHBOARD_SCREENSHOT"):
            page.screenshot(path=target, full_page=True)

        # The class filter and the window selector ask the endpoint again.
        page.select_option("#class-filter", "chat")
        sync_api.expect(page.locator("#classes tbody tr")).to_have_count(2)
        assert page.eval_on_selector_all("#classes tbody tr", "rows => rows.map(r => r.dataset.class)") == [
            "chat",
            "overall",
        ]
        assert page.locator("#recent tbody tr").count() == 3
        page.select_option("#window", "7d")
        page.wait_for_selector("body[data-state=loaded]")
        assert page.locator("#classes tbody tr").count() == 2  # the class filter stays
        assert problems == []

        # A wrong key: a clear message, no figures.
        other = browser.new_page()
        other.goto(proxy.url + "/dashboard")
        other.evaluate("sessionStorage.clear()")
        other.fill("#admin-key", "not-the-key")
        other.click("#use-key")
        other.wait_for_selector("body[data-state=denied]")
        assert re.match(r"401: the admin key was not accepted", other.inner_text("#message"))
