"""Draw docs/images/dashboard.png: a day of made-up traffic in a records file, the proxy serving it on
loopback, and the dashboard in headless Chromium (/usr/bin/chromium; nothing is downloaded).

    .venv/bin/python docs/images/make_dashboard_screenshot.py [OUT.png]

The records, feedback and shadow comparisons are written straight to the store (the numbers are invented to
show every part of the page); the page reads them through GET /v1/tierwise/stats like any other.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for tests.conftest
from tests.conftest import RunningProxy, router_config

from tierwise.store import Attempt, Comparison, Feedback, RoutingRecord, SQLiteStore

ADMIN = "dashboard-demo-key"
# class: (share of traffic, chance to escalate or None for direct, tier when direct, latency ms)
CLASSES = {
    "chat": (0.40, None, "cheap", 420),
    "summarize": (0.25, 0.12, "cheap", 650),
    "extract": (0.20, 0.35, "cheap", 900),
    "code": (0.10, 0.68, "mid", 2400),
    "legal": (0.05, None, "premium", 3100),
}
COST = {"cheap": 0.00021, "mid": 0.0024, "premium": 0.0121}


def seed(path: Path, now: float) -> list[str]:
    rng = random.Random(7)
    store = SQLiteStore(path).start()
    ids = []
    for i in range(900):
        klass = rng.choices(list(CLASSES), weights=[c[0] for c in CLASSES.values()])[0]
        _, escalate, tier, latency = CLASSES[klass]
        ts = now - 86400 * (1 - (i + rng.random()) / 900)
        rid = f"chatcmpl-demo{i:05d}"
        decision: dict[str, object] = {"tier": tier, "policy": "direct"}
        attempts = [Attempt(tier, f"{tier}-model", "demo", "ok", latency)]
        cost, reason = COST[tier], f"task={klass}"
        if escalate is not None:
            reason = "cascade:cheapest"
            if rng.random() < escalate:
                tier, path = "mid", ["cheap(fail:json)", "mid(pass)"]
                attempts.append(Attempt("mid", "mid-model", "demo", "ok", latency * 1.8))
                cost = COST["cheap"] + COST["mid"]
            else:
                path = ["cheap(pass)"]
            decision = {"tier": tier, "policy": "cascade", "path": path, "hinted": True}
        status = "error" if rng.random() < 0.01 else "ok"
        store.submit(
            RoutingRecord(
                rid, ts, "openai.chat", status, 200 if status == "ok" else 502,  # type: ignore[arg-type]
                request_class=klass, tier=tier, model=f"{tier}-model", reason=reason, decision=decision,
                attempts=attempts, cost_usd=cost if status == "ok" else 0.0,
                baseline_cost_usd=COST["premium"],
                latency_ms=sum(a.latency_ms for a in attempts) * rng.uniform(0.7, 1.5),
            )
        )  # fmt: skip
        ids.append(rid)
        if rng.random() < 0.15:
            good = {"chat": 0.9, "summarize": 0.85, "extract": 0.8, "code": 0.7, "legal": 0.9}[klass]
            store.submit(Feedback(rid, ts + 60, 1.0 if rng.random() < good else 0.0))
        if klass in ("chat", "summarize", "extract") and rng.random() < 0.3:
            win = {"chat": 0.55, "summarize": 0.5, "extract": 0.35}[klass]
            draw = rng.random()
            score = 1.0 if draw < win * 0.5 else 0.5 if draw < win + 0.3 else 0.0
            store.submit(
                Comparison(rid, ts, "shadow", klass, "cheap", "cheap-model", "premium-model", COST["cheap"],
                           COST["premium"], judge="judge:premium-model", score=score)
            )  # fmt: skip
    store.close()
    return ids


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("dashboard.png"))
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "records.db"
        seed(db, time.time())
        config = router_config("http://127.0.0.1:9/v1", auth={"admin_key": ADMIN})
        proxy = RunningProxy(config, db)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch_persistent_context(
                    str(Path(tmp) / "profile"),
                    executable_path="/usr/bin/chromium",
                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                          "--disable-background-networking", "--disable-component-update", "--disable-sync"],
                    viewport={"width": 1400, "height": 900},
                )  # fmt: skip
                page = browser.new_page()
                page.goto(proxy.url + "/dashboard")
                page.select_option("#window", "24h")
                page.fill("#admin-key", ADMIN)
                page.click("#use-key")
                page.wait_for_selector("body[data-state=loaded]")
                # The recent decisions table is long: keep its first rows in the picture.
                page.evaluate(
                    "[...document.querySelectorAll('#recent tbody tr')].slice(8).forEach(r => r.remove())"
                )
                page.screenshot(path=str(out), full_page=True)
                browser.close()
        finally:
            proxy.stop()
    print(out)


if __name__ == "__main__":
    main()
