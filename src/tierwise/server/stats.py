"""The proxy's own numbers: ``GET /v1/tierwise/stats`` (JSON) and ``POST /v1/tierwise/feedback``.

The stats are read from the store in a worker thread, so a large window never stalls the event loop.
Read-only admin views (stats, the dashboard) need the admin key where one is configured; without one they
answer loopback clients only, and never a request that came through a reverse proxy (one carrying
``X-Forwarded-For``, ``Forwarded`` or ``X-Real-IP``): behind a proxy every client looks like loopback.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from tierwise.errors import AuthenticationError, RequestError
from tierwise.policy.engine import RequestContext
from tierwise.report import build_stats, parse_since
from tierwise.store.records import Feedback, RoutingRecord
from tierwise.wire import openai as wire
from tierwise.wire import validate_body

if TYPE_CHECKING:
    from tierwise.server.app import Proxy

_JSON = "application/json"
# How long the stats wait for the store's writer to flush what it holds (the figures may lag one batch).
STATS_FLUSH_S = 0.3
# Beyond the store writers' flush interval, how long feedback waits for a record another process writes (s).
FEEDBACK_WAIT_S = 0.25
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_PROXIED = ("x-forwarded-for", "forwarded", "x-real-ip")


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type=_JSON)


def bearer_token(request: Request) -> str:
    """The token a client sent, as ``x-api-key`` or ``Authorization: Bearer``."""
    bearer = request.headers.get("authorization", "")
    return request.headers.get("x-api-key") or (bearer[7:].strip() if bearer[:7].lower() == "bearer " else "")


def is_admin(proxy: Proxy, token: str) -> bool:
    """Whether ``token`` is the configured admin key (False when none is configured)."""
    admin = proxy.config.auth.admin_key
    return admin is not None and hmac.compare_digest(token.encode(), admin.get_secret_value().encode())


def admin_denied(
    proxy: Proxy, request: Request, *, token: str | None = None, loopback: bool = True
) -> Response | None:
    """None when the caller may use admin endpoints; else the error response to send. Without an admin key,
    ``loopback`` views answer direct loopback clients (never proxied ones); other admin endpoints are off."""
    if proxy.config.auth.admin_key is None:
        if not loopback:
            message = "admin endpoints are off: set auth.admin_key in the config"
        elif any(name in request.headers for name in _PROXIED):
            message = (
                "this request came through a reverse proxy, so it cannot be told from a remote client: "
                "set auth.admin_key in the config to read admin views"
            )
        elif (request.client.host if request.client else "") in _LOOPBACK:
            return None
        else:
            message = "admin views answer loopback clients only while auth.admin_key is unset"
        return _json(wire.error_object(message, type_="permission_error"), 403)
    if is_admin(proxy, token if token is not None else bearer_token(request)):
        return None
    return _json(wire.error_object("the admin key is required", type_="authentication_error"), 401)


async def stats(proxy: Proxy, request: Request) -> Response:
    """``GET /v1/tierwise/stats?window=1h&class=...``: per-class figures, cost over time, recent decisions.

    The store's writer gets a short flush (``STATS_FLUSH_S``) first, so a worker thread is never held long
    under load: the figures may lag the newest requests by one write batch."""
    if (denied := admin_denied(proxy, request)) is not None:
        return denied
    window = request.query_params.get("window", "1h")
    request_class = request.query_params.get("class") or None
    now = time.time()
    try:
        start = parse_since(window, now=now)
    except ValueError:
        return _json(
            wire.error_object(
                f"window: expected a span like 1h, 24h, 7d or 30m, got {window!r}",
                type_="invalid_request_error",
                param="window",
            ),
            400,
        )
    store = proxy.store
    if store is None:
        return _json(wire.error_object("no store is configured", type_="server_error"), 404)
    premium = proxy.config.premium_tier

    def read() -> dict[str, Any]:
        store.flush(timeout=STATS_FLUSH_S)
        return build_stats(
            store.query(since=start),
            store.feedback(since=start - 86400),  # a score may come a while after its request
            store.comparisons(since=start),
            start=start,
            end=now,
            premium_tier=premium,
            request_class=request_class,
        )

    body = await asyncio.to_thread(read)
    body["window"] = window
    return _json(body)


class _FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=200)
    score: float | None = Field(None, ge=0, le=1)
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = Field(None, max_length=4000)
    source: str = Field("user", min_length=1, max_length=64)


async def feedback(proxy: Proxy, request: Request) -> Response:
    """``POST /v1/tierwise/feedback {request_id, score 0..1 | thumbs up/down, comment}``: quality by class.

    Only the key that made a request may score it (the record's ``api_key_id`` is the caller's), or the
    admin key; feedback without a key scores only requests made without one. Any other request id answers
    404, as an unknown one does, so request ids cannot be probed."""
    ctx = RequestContext(request_id="", endpoint="tierwise.feedback")
    admin = is_admin(proxy, bearer_token(request))
    try:
        if not admin:
            proxy._identify(request, ctx)
        data = await proxy._body(request)
        body = validate_body(
            _FeedbackBody, data, param=wire.field_path, unknown=lambda p: f"{p}: unknown field"
        )
        if (body.score is None) == (body.thumbs is None):
            raise RequestError("give exactly one of score (0..1) or thumbs (up|down)", param="score")
    except AuthenticationError as exc:
        return _json(wire.error_object(exc.message, type_="authentication_error"), exc.status)
    except RequestError as exc:
        err = wire.error_object(exc.message, type_="invalid_request_error", param=exc.param, code=exc.code)
        return _json(err, exc.status)
    store = proxy.store
    if store is None:
        return _json(wire.error_object("no store is configured", type_="server_error"), 404)

    def known() -> RoutingRecord | None:
        found = store.get(body.request_id)
        if found is None:  # the request's own record may still be in the writer's queue
            store.flush(timeout=2.0)
            found = store.get(body.request_id)
        # ... or in another worker's or replica's: their writers take up to flush_interval_s.
        deadline = time.monotonic() + proxy.config.store.flush_interval_s + FEEDBACK_WAIT_S
        while found is None and time.monotonic() < deadline:
            time.sleep(0.05)
            found = store.get(body.request_id)
        return found

    scored = await asyncio.to_thread(known)
    if scored is None or not (admin or scored.api_key_id == ctx.api_key_id):
        return _json(
            wire.error_object(
                f"request_id: no request {body.request_id!r} in the records",
                type_="invalid_request_error",
                param="request_id",
                code="not_found",
            ),
            404,
        )
    score = body.score if body.score is not None else (1.0 if body.thumbs == "up" else 0.0)
    item = Feedback(body.request_id, time.time(), score, body.comment, body.source, ctx.api_key_id)
    store.submit(item)
    if proxy.metrics is not None:
        proxy.metrics.observe_feedback(scored.request_class or "unrouted", score)
    return _json({"status": "recorded", "request_id": body.request_id, "score": score})
