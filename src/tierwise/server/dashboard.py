"""``GET /dashboard``: one static HTML page (inline CSS and vanilla JS, nothing fetched from elsewhere) that
asks for the admin key, keeps it in the tab's sessionStorage and reads ``GET /v1/tierwise/stats`` with it.

The page holds no figures itself, so it is served without the key; the stats endpoint it calls is what the
admin key (or, without one, the loopback-only rule) protects. A Content-Security-Policy allows exactly the
page's own inline script and style (by their SHA-256) and requests to this origin.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from tierwise.server.app import Proxy


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@functools.cache
def page() -> tuple[bytes, str]:
    """The page's bytes and its Content-Security-Policy."""
    text = resources.files("tierwise.server").joinpath("static/dashboard.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", text, flags=re.S)
    styles = re.findall(r"<style>(.*?)</style>", text, flags=re.S)
    policy = "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(_digest(s) for s in scripts),
            "style-src " + " ".join(_digest(s) for s in styles),
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return text.encode(), policy


async def dashboard(proxy: Proxy, request: Request) -> Response:
    """``GET /dashboard``: the page; its data comes from the stats endpoint, with the admin key."""
    body, policy = page()
    headers = {
        "content-security-policy": policy,
        "cache-control": "no-cache",
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
    }
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)
