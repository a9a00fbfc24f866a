"""The HTTP proxy: an ASGI app that speaks OpenAI's Chat Completions API in front of the engine."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tierwise.config import RouterConfig
from tierwise.errors import (
    AllAttemptsFailed,
    AuthenticationError,
    ConfigError,
    LimitExceeded,
    RequestError,
    UpstreamError,
)
from tierwise.keys import KeyRing
from tierwise.messages import ChatRequest, Usage
from tierwise.metrics import CONTENT_TYPE, Metrics, MetricsSink
from tierwise.policy import engine as engine_mod
from tierwise.policy.engine import Completion, Engine, RequestContext
from tierwise.policy.streaming import StreamingCompletion
from tierwise.providers import build_providers
from tierwise.server import collector, workers
from tierwise.server import dashboard as dashboard_page
from tierwise.server import stats as stats_api
from tierwise.server import sync as config_sync
from tierwise.server.ids import random_id
from tierwise.server.messages import MessagesAPI
from tierwise.shadow import Shadow, ShadowState
from tierwise.store import BatchStore, PostgresStore, RecordSink, open_store
from tierwise.store.records import RoutingRecord
from tierwise.wire import openai as wire

_JSON = "application/json"


# A client-chosen request class (``x-tierwise-class``): it becomes a metric label and a response header.
CLASS_HEADER = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# The printable ASCII a header value keeps as it is when the value has to be percent-encoded.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def new_request_id() -> str:
    """A request id nobody can guess (feedback is scored by it): 80 random bits."""
    return random_id("chatcmpl-tw")


def header_value(value: str) -> str:
    """``value`` as an HTTP header value: printable ASCII stays as it is; anything else (a non-ASCII team,
    rule or keyword name from the config) is percent-encoded as UTF-8, the whole value, so it decodes back."""
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe=_HEADER_SAFE)


class InternalError(RequestError):
    """An unexpected failure before the request reached an upstream (recorded as a 500 error)."""

    status = 500


def _fmt_cost(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.8f}"


# How long a replaced engine keeps its upstream connections open for the requests still using it.
RETIRE_AFTER_S = 120.0
# How long shutdown waits for background shadow comparisons before cancelling them.
SHADOW_DRAIN_S = 5.0


class Proxy:
    """The proxy's state for one process: config, engine, store, and the key table.

    ``reload`` reads the config file again (and the router artifact it names) and swaps in a new engine
    without a restart; requests already running finish on the engine they started on. The bind address and
    the store stay as they were started.
    """

    def __init__(
        self,
        config: RouterConfig,
        engine: Engine,
        store: BatchStore | None,
        *,
        config_path: Path | None = None,
        sink: RecordSink | None = None,
        keys: KeyRing | None = None,
    ) -> None:
        self.store = store
        # The API keys in the store, and every key's budget and rate limit (tierwise.keys); auth.keys are
        # also _keys, by digest, for authentication.
        self.keys = keys if keys is not None else KeyRing(store, interval_s=config.store.sync_interval_s)
        self.config_path = config_path
        # With a PostgreSQL store: the config versions this replica shares with the others.
        self.sync: config_sync.ConfigSync | None = None
        # Held while the engine is swapped (a reload, or a version another replica published).
        self.reload_lock = asyncio.Lock()
        # Where a reloaded engine writes its records (the metrics, then the store).
        self.sink: RecordSink | None = sink if sink is not None else store
        self.metrics: Metrics | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        # The shadow comparisons' running tasks, daily spend (counted in the store's usage rows, with the
        # keys') and skip counts: they outlive every reload.
        self.shadow_state = ShadowState(self.keys)
        self._apply(config, engine)

    def _apply(self, config: RouterConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.shadow = Shadow(config, engine, self.sink, self.shadow_state)
        self._keys = {
            hashlib.sha256(k.key.get_secret_value().encode()).hexdigest(): k for k in config.auth.keys
        }
        self.keys.set_config_keys(config.auth.keys)

    async def reload(self) -> RouterConfig:
        """Load the config again and switch to it; a bad one raises ConfigError and the old one stays."""

        def build() -> tuple[config_sync.Snapshot, Engine]:
            snapshot = config_sync.read_snapshot(self.config_path)
            return snapshot, Engine(snapshot.config, build_providers(snapshot.config), sink=self.sink)

        async with self.reload_lock:
            snapshot, engine = await asyncio.to_thread(build)
            self.swap(snapshot.config, engine)
            if self.sync is not None:  # every other replica follows within store.sync_interval_s
                await self.sync.published(snapshot, "reload")
        return snapshot.config

    def swap(self, config: RouterConfig, engine: Engine) -> None:
        """Serve ``config`` with ``engine`` from now on; the old engine finishes what it has running."""
        old = self.engine
        self._apply(config, engine)
        collector.thaw()  # under serve, so that the old engine can be collected once retired
        task = asyncio.create_task(self._retire(old, RETIRE_AFTER_S))
        self._retiring.add(task)
        task.add_done_callback(self._retired)

    @staticmethod
    async def _retire(engine: Engine, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        finally:
            await engine.aclose()

    def _retired(self, task: asyncio.Task[None]) -> None:
        self._retiring.discard(task)
        if not self._retiring and not task.cancelled():
            collector.refreeze()  # no replaced engine is left

    async def aclose(self) -> None:
        await self.shadow_state.drain(SHADOW_DRAIN_S)  # every engine's comparisons, before and after reloads
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        await self.engine.aclose()

    # ---- request context ----

    def _identify(self, request: Request, ctx: RequestContext) -> None:
        """Fill in who is asking: API key id, user tier, class override. Raises when auth fails."""
        headers = request.headers
        auth = self.config.auth
        token = stats_api.bearer_token(request)
        key = stored = None
        if token:
            digest = hashlib.sha256(token.encode()).hexdigest()
            key = self._keys.get(digest)
            stored = None if key is not None else self.keys.find(digest)
            if key is not None:
                ctx.api_key_id, ctx.user_tier = key.id, key.user_tier
                ctx.class_override = key.team
            elif stored is not None:
                ctx.api_key_id = stored.id
                if stored.revoked_at is not None:
                    raise AuthenticationError(f"the API key {stored.id!r} was revoked")
                ctx.user_tier, ctx.class_override = stored.user_tier, stored.team
            else:
                # An unknown key is still told apart in the records, never stored.
                ctx.api_key_id = "sha256:" + digest[:12]
        if auth.required and key is None and stored is None:
            raise AuthenticationError("a valid API key is required (Authorization: Bearer ...)")
        if ctx.user_tier is None and auth.user_tier_header:
            ctx.user_tier = headers.get(auth.user_tier_header)
        if ctx.user_tier is None:
            ctx.user_tier = auth.default_user_tier
        chosen = headers.get("x-tierwise-class")
        if chosen is not None:
            if not CLASS_HEADER.fullmatch(chosen):
                raise RequestError(
                    "x-tierwise-class: expected 1 to 64 of A-Z a-z 0-9 _ . : -", param="x-tierwise-class"
                )
            ctx.class_override = chosen

    async def _body(self, request: Request) -> Any:
        limit = self.config.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(f"the request body exceeds the {limit}-byte limit", code="request_too_large")
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(
                    f"the request body exceeds the {limit}-byte limit", code="request_too_large"
                )
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            raise RequestError("the request body is empty; send a JSON object", code="invalid_json")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise RequestError(f"the request body is not valid JSON: {exc}", code="invalid_json") from None

    def snapshot(self) -> tuple[Engine, Shadow]:
        """The engine and shadow a request uses from start to end, whatever reload happens meanwhile."""
        return self.engine, self.shadow

    async def decide(
        self, chat: ChatRequest, ctx: RequestContext, engine: Engine, shadow: Shadow
    ) -> engine_mod.Route:
        """The route that serves: the baseline model's in shadow mode, else the engine's decision. The key's
        budget and rate limit, if it has any, are checked first (LimitExceeded); past its budget it may go
        down."""
        self.keys.admit(ctx, engine.config.auth.over_budget)
        if ctx.route_down is not None:
            return await engine.decide(chat, ctx)
        return shadow.serve_route(chat, ctx) or await engine.decide(chat, ctx)

    @staticmethod
    def record_failure(
        engine: Engine, ctx: RequestContext, exc: Exception, requested_model: str | None
    ) -> str:
        """Record an unexpected failure before routing ended as a 500 error; returns the client's message."""
        message = f"internal error: {exc.__class__.__name__}"
        if engine.sink is not None:
            engine.sink.submit(
                RoutingRecord(
                    request_id=ctx.request_id,
                    ts=ctx.ts,
                    endpoint=ctx.endpoint,
                    status="error",
                    http_status=500,
                    requested_model=requested_model,
                    api_key_id=ctx.api_key_id,
                    user_tier=ctx.user_tier,
                    error=f"{message}: {exc}"[:300],
                    latency_ms=(time.perf_counter() - ctx.started) * 1000,
                )
            )
        return message

    # ---- endpoints ----

    async def chat_completions(self, request: Request) -> Response:
        ctx = RequestContext(request_id=new_request_id(), endpoint="openai.chat")
        engine, shadow = self.snapshot()
        requested: str | None = None
        try:
            self._identify(request, ctx)
            data = await self._body(request)
            if isinstance(data, dict) and isinstance(data.get("model"), str):
                requested = data["model"]
            chat, include_usage = wire.parse_request(data)
            route = await self.decide(chat, ctx, engine, shadow)
        except RequestError as exc:
            engine.record_rejected(ctx, exc, requested_model=requested)
            return self._error(exc, ctx)
        except Exception as exc:  # a bug, not the client's fault: recorded, answered in OpenAI's shape
            message = self.record_failure(engine, ctx, exc, requested)
            return self._internal_error(message, ctx)
        try:
            if chat.stream:
                streaming = await engine.stream(chat, ctx, route)
                return self._stream_response(streaming, chat, ctx, include_usage, engine, shadow)
            completion = await engine.complete(chat, ctx, route)
            shadow.after(chat, ctx, completion.record, completion.response)
            body = wire.response_object(
                completion.response, request_id=ctx.request_id, model=completion.record.model or ""
            )
            headers = self._headers(completion, ctx, engine)
        except AllAttemptsFailed as exc:
            return self._upstream_failed(exc, ctx)
        except Exception as exc:  # recorded by the engine; the client still gets an answer in OpenAI's shape
            return self._internal_error(f"internal error: {exc.__class__.__name__}", ctx)
        return Response(orjson.dumps(body), media_type=_JSON, headers=headers)

    @staticmethod
    def _internal_error(message: str, ctx: RequestContext) -> Response:
        body = wire.error_object(message, type_="server_error")
        return Response(
            orjson.dumps(body), 500, media_type=_JSON, headers={"x-tierwise-request-id": ctx.request_id}
        )

    def _headers(
        self, done: Completion | StreamingCompletion, ctx: RequestContext, engine: Engine
    ) -> dict[str, str]:
        """The ``x-tierwise-*`` response headers; every value is safe for HTTP (see ``header_value``)."""
        if isinstance(done, Completion):
            route, model = done.route, done.record.model or ""
            tier = done.record.tier or route.tier
            cost: float | None = done.record.cost_usd
            baseline = done.record.baseline_cost_usd
            estimated = False
        else:
            # A stream's cost is known only at its end (it is in the record and the final usage chunk);
            # the headers carry the estimate from the input and the expected output.
            route, model, tier = done.route, done.planned.model, done.planned.tier
            usage = Usage(route.features.input_tokens, route.features.expected_output_tokens)
            cost = engine.pricing.cost(model, usage)
            baseline = engine.baseline_cost(usage)
            estimated = True
        headers = {
            "x-tierwise-request-id": ctx.request_id,
            "x-tierwise-tier": tier,
            "x-tierwise-model": model,
            "x-tierwise-class": route.request_class,
            "x-tierwise-reason": route.reason,
            "x-tierwise-cost-usd": _fmt_cost(cost),
            "x-tierwise-baseline-cost-usd": _fmt_cost(baseline),
        }
        if estimated:
            headers["x-tierwise-cost-estimated"] = "true"
        if route.policy == "cascade":
            headers["x-tierwise-path"] = "->".join(route.path)
        for key, value in done.meta.items():
            headers[f"x-tierwise-{key}"] = value
        return {name: header_value(value) for name, value in headers.items()}

    def _stream_response(
        self,
        streaming: StreamingCompletion,
        chat: ChatRequest,
        ctx: RequestContext,
        include_usage: bool,
        engine: Engine,
        shadow: Shadow,
    ) -> Response:
        model = streaming.planned.model
        rid, created = ctx.request_id, streaming.created

        async def events() -> AsyncIterator[bytes]:
            first = True
            try:
                async for delta in streaming:
                    # A usage-only delta goes out at the end, in the usage chunk the client asked for.
                    if delta.content is not None or delta.tool_calls or delta.finish_reason or first:
                        chunk = wire.chunk_object(
                            delta, request_id=rid, model=model, created=created, first=first
                        )
                        first = False
                        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            except UpstreamError as exc:
                err = wire.error_object(f"upstream failed mid-stream: {exc.message}", type_="upstream_error")
                yield b"data: " + orjson.dumps(err) + b"\n\n"
                return
            except Exception as exc:
                err = wire.error_object(
                    f"internal error mid-stream: {exc.__class__.__name__}", type_="server_error"
                )
                yield b"data: " + orjson.dumps(err) + b"\n\n"
                return
            shadow.after(chat, ctx, streaming.record, streaming.accumulated.response())
            if include_usage:
                record = streaming.record
                assert record is not None  # written when the iteration above ended
                usage = Usage(record.input_tokens, record.output_tokens)
                chunk = wire.usage_chunk(usage, request_id=rid, model=model, created=created)
                chunk["tierwise"] = {
                    "cost_usd": record.cost_usd,
                    "baseline_cost_usd": record.baseline_cost_usd,
                }
                yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            yield b"data: [DONE]\n\n"

        headers = self._headers(streaming, ctx, engine)
        headers["cache-control"] = "no-cache"
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def _error(self, error: RequestError, ctx: RequestContext) -> Response:
        kind = "authentication_error" if isinstance(error, AuthenticationError) else "invalid_request_error"
        headers = {"x-tierwise-request-id": ctx.request_id}
        if isinstance(error, LimitExceeded):
            kind = error.openai_type
            if error.retry_after is not None:
                headers["retry-after"] = str(error.retry_after)
        body = wire.error_object(error.message, type_=kind, param=error.param, code=error.code)
        return Response(orjson.dumps(body), status_code=error.status, media_type=_JSON, headers=headers)

    def _upstream_failed(self, exc: AllAttemptsFailed, ctx: RequestContext) -> Response:
        body = wire.error_object(str(exc), type_="upstream_error", code="all_attempts_failed")
        body["error"]["attempts"] = exc.attempts_shown()
        return Response(
            orjson.dumps(body),
            status_code=502,
            media_type=_JSON,
            headers={"x-tierwise-request-id": ctx.request_id},
        )

    async def admin_reload(self, request: Request) -> Response:
        """``POST /v1/tierwise/admin/reload`` with the admin key: reload the config and router artifact."""
        if (denied := stats_api.admin_denied(self, request, loopback=False)) is not None:
            return denied
        try:
            config = await self.reload()
        except ConfigError as exc:
            body = wire.error_object(
                f"reload failed, still serving the previous config: {exc}", type_="config_error"
            )
            return Response(orjson.dumps(body), 400, media_type=_JSON)
        summary = {
            "status": "reloaded",
            "tiers": config.tiers,
            "classifier": config.routing.classifier.model_dump(mode="json"),
        }
        if self.sync is not None:  # the version every replica now follows, or why it was not shared
            summary["config_version"] = self.sync.status()
        elif (asked := workers.restart_all()) is not None:
            # Other workers of this server (SQLite: no shared config versions): the supervisor restarts
            # each, and each reads the config file again (tierwise.server.workers).
            summary["workers"] = (
                f"restart of all {workers.count()} workers requested"
                if asked
                else "this worker only: its supervisor is gone, the others were not restarted"
            )
        return Response(orjson.dumps(summary), media_type=_JSON)

    async def models(self, request: Request) -> Response:
        """``GET /v1/models``: what clients may put in ``model``, in OpenAI's list shape, or in Anthropic's
        when the client speaks the Messages API (it sends ``anthropic-version``, as Anthropic's SDKs do)."""
        names = self.engine.model_names
        if "anthropic-version" in request.headers:
            data = [
                {"type": "model", "id": name, "display_name": name, "created_at": "1970-01-01T00:00:00Z"}
                for name in names
            ]
            body = {"data": data, "has_more": False, "first_id": names[0], "last_id": names[-1]}
            return Response(orjson.dumps(body), media_type=_JSON)
        listed = [{"id": name, "object": "model", "created": 0, "owned_by": "tierwise"} for name in names]
        return Response(orjson.dumps({"object": "list", "data": listed}), media_type=_JSON)

    async def metrics_endpoint(self, request: Request) -> Response:
        """Prometheus exposition of the per-class counters (tierwise.metrics)."""
        if self.metrics is None:
            return Response(b"", status_code=404)
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def readyz(self, request: Request) -> Response:
        problems = self.store.problems() if self.store is not None else []
        status = 503 if problems else 200
        # Open circuits do not make the proxy unready: the fallbacks serve around them.
        body: dict[str, Any] = {
            "status": "ready" if not problems else "degraded",
            "problems": problems,
            "circuits": self.engine.circuits.snapshot(),
        }
        if self.sync is not None:
            # A version this replica cannot apply is reported, not made unready: it still serves the last one.
            body["config_version"] = self.sync.status()
        if workers.count() > 1:
            body["worker"] = os.getpid()
        return Response(orjson.dumps(body), status_code=status, media_type=_JSON)


class _App(Starlette):
    """Starlette, with the request endpoints (POST chat completions and messages) dispatched straight from the
    ASGI call: they carry nearly all the traffic, and skip the router's path matching and the middleware
    stack (their handlers catch every exception, record it and answer in their API's error shape).
    Everything else goes through Starlette."""

    def __init__(self, *, fast: dict[str, Callable[[Request], Awaitable[Response]]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fast = fast

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self._fast.get(scope["path"])
            if handler is not None:
                response = await handler(Request(scope, receive))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(
    config: RouterConfig,
    *,
    store: BatchStore | None = None,
    engine: Engine | None = None,
    config_path: Path | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The proxy as an ASGI app. Without ``store``, records go to the store the config names (SQLite or
    PostgreSQL). ``config_path`` is what a reload (SIGHUP or the admin endpoint) reads; None: the embedded
    default. With a PostgreSQL store the replicas sharing it share config versions (tierwise.server.sync).
    ``clock`` is the wall clock API key budgets and rate limits count by (tierwise.keys)."""
    if store is None:
        store = open_store(config.store)
    metrics = Metrics()
    keys = KeyRing(store, interval_s=config.store.sync_interval_s, clock=clock)
    sink = keys.sink(MetricsSink(metrics, store))
    if engine is None:
        engine = Engine(config, build_providers(config), sink=sink)
    proxy = Proxy(config, engine, store, config_path=config_path, sink=sink, keys=keys)
    proxy.metrics = metrics
    if isinstance(store, PostgresStore):
        proxy.sync = config_sync.ConfigSync(proxy, store, config.store.sync_interval_s)
    metrics.track_circuits(lambda: proxy.engine.circuits)
    metrics.track_shadow(proxy.shadow_state)
    messages_api = MessagesAPI(proxy)

    def on_sighup() -> None:
        async def run() -> None:
            try:
                await proxy.reload()
                print("tierwise: configuration reloaded", file=sys.stderr)
            except ConfigError as exc:
                print(f"tierwise: reload failed, still serving the previous config:\n{exc}", file=sys.stderr)

        task = asyncio.ensure_future(run())
        proxy._retiring.add(task)
        task.add_done_callback(proxy._retiring.discard)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        hooked = False
        keys_task = syncing = publishing = None
        # Everything after the store starts is inside the try: a failing startup step still closes it.
        await asyncio.to_thread(store.start)
        try:
            await proxy.keys.refresh()  # the store's API keys, before the first request
            keys_task = asyncio.create_task(proxy.keys.run())
            if workers.count() > 1:
                publishing = asyncio.create_task(workers.publish_state(metrics))
            if proxy.sync is not None:
                await proxy.sync.startup()
                syncing = asyncio.create_task(proxy.sync.run())
            try:
                loop.add_signal_handler(signal.SIGHUP, on_sighup)
                hooked = True
            except (NotImplementedError, RuntimeError, ValueError, AttributeError):
                pass  # not the main thread (tests), or no SIGHUP on this platform
            yield
        finally:
            if hooked:
                loop.remove_signal_handler(signal.SIGHUP)
            for task in (keys_task, syncing, publishing):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            if publishing is not None:
                workers.stopped()  # this worker's live gauges leave the sums
            try:
                await proxy.aclose()
            finally:
                await asyncio.to_thread(store.close)
                if proxy.sync is not None:
                    proxy.sync.close()

    app = _App(
        fast={
            "/v1/chat/completions": proxy.chat_completions,
            "/chat/completions": proxy.chat_completions,
            "/v1/messages": messages_api.create,
        },
        routes=[
            Route("/v1/chat/completions", proxy.chat_completions, methods=["POST"]),
            Route("/chat/completions", proxy.chat_completions, methods=["POST"]),
            Route("/v1/messages", messages_api.create, methods=["POST"]),
            Route("/v1/messages/count_tokens", messages_api.count_tokens, methods=["POST"]),
            Route("/v1/models", proxy.models, methods=["GET"]),
            Route("/healthz", proxy.healthz, methods=["GET"]),
            Route("/metrics", proxy.metrics_endpoint, methods=["GET"]),
            Route("/readyz", proxy.readyz, methods=["GET"]),
            Route("/v1/tierwise/admin/reload", proxy.admin_reload, methods=["POST"]),
            Route("/v1/tierwise/stats", functools.partial(stats_api.stats, proxy), methods=["GET"]),
            Route("/v1/tierwise/feedback", functools.partial(stats_api.feedback, proxy), methods=["POST"]),
            Route("/dashboard", functools.partial(dashboard_page.dashboard, proxy), methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.proxy = proxy
    return app
