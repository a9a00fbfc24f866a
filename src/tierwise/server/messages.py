"""The proxy's Anthropic Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Claude clients (the ``anthropic`` SDKs, coding agents reading ``ANTHROPIC_BASE_URL``) route through tierwise
by changing only their base URL. A request goes through the same engine as ``/v1/chat/completions``: the same
routing, cascade, records (endpoint ``anthropic.messages``), metrics and ``x-tierwise-*`` headers; only the
wire shapes differ (``tierwise.wire.anthropic_server``). Whichever upstream answers, OpenAI-compatible or
Anthropic, the client gets a message object or a stream of Messages API events.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tierwise.errors import (
    AllAttemptsFailed,
    AuthenticationError,
    LimitExceeded,
    RequestError,
    UnknownModelError,
    UpstreamError,
)
from tierwise.features import estimate_input_tokens
from tierwise.messages import ChatRequest, StreamDelta, Usage
from tierwise.policy.engine import AUTO_MODELS, Engine, RequestContext
from tierwise.policy.streaming import StreamingCompletion
from tierwise.server.ids import random_id
from tierwise.shadow import Shadow
from tierwise.wire import anthropic_server as wire
from tierwise.wire.anthropic import ERROR_STATUS

if TYPE_CHECKING:
    from tierwise.server.app import Proxy

ENDPOINT = "anthropic.messages"
# The API version tierwise speaks; clients send it as ``anthropic-version`` (the header may be left out).
API_VERSION = "2023-06-01"
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
_JSON = "application/json"


def new_message_id() -> str:
    """A message id in Anthropic's style; it is also the request's id in the records and headers. Random
    (80 bits): feedback is scored by it, so nobody may guess another client's."""
    return random_id("msg_tw")


class _TooLarge(RequestError):
    status = 413


def _as_anthropic(exc: RequestError) -> RequestError:
    """The body-size refusal as the Messages API reports it (413 ``request_too_large``)."""
    if exc.code == "request_too_large" and not isinstance(exc, _TooLarge):
        return _TooLarge(exc.message, param=exc.param, code=exc.code)
    return exc


def _error_type(error: RequestError) -> str:
    if isinstance(error, AuthenticationError):
        return "authentication_error"
    if isinstance(error, UnknownModelError):
        return "not_found_error"
    if isinstance(error, LimitExceeded):
        return "rate_limit_error"
    if error.status == 413:
        return "request_too_large"
    return "invalid_request_error"


def _stream_error_type(status: int | None) -> str:
    """The Messages API error type an upstream's failure stands for (``api_error`` when it is unclear)."""
    if status in (429, 529):
        return next(t for t, s in ERROR_STATUS.items() if s == status)
    return "api_error"


def _check_version(request: Request) -> None:
    version = request.headers.get("anthropic-version")
    if version is None:
        return
    if not _VERSION.fullmatch(version.strip()) or version.strip() < API_VERSION:
        raise RequestError(
            f"anthropic-version: {version!r} is not supported; tierwise speaks {API_VERSION}",
            param="anthropic-version",
        )


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessagesAPI:
    """The Messages API endpoints of one proxy. Each request takes one snapshot of the engine and shadow at
    its start (``proxy.snapshot``), so a reload applies to the next request and a request already running
    finishes on the engine it started on."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def _error(
        self,
        type_: str,
        message: str,
        status: int,
        ctx: RequestContext,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> Response:
        body = wire.error_object(message, type_=type_)
        body["error"].update(extra)
        headers = {**(headers or {}), "request-id": ctx.request_id, "x-tierwise-request-id": ctx.request_id}
        return Response(orjson.dumps(body), status_code=status, media_type=_JSON, headers=headers)

    def _rejected(
        self, engine: Engine, exc: RequestError, ctx: RequestContext, model: str | None
    ) -> Response:
        exc = _as_anthropic(exc)
        engine.record_rejected(ctx, exc, requested_model=model)
        headers = None
        if isinstance(exc, LimitExceeded) and exc.retry_after is not None:
            headers = {"retry-after": str(exc.retry_after)}
        return self._error(_error_type(exc), exc.message, exc.status, ctx, headers)

    def _upstream_failed(self, exc: AllAttemptsFailed, ctx: RequestContext) -> Response:
        """Every planned model failed. When every attempt was refused with one of the statuses Anthropic
        clients back off on (429, 529), the client gets that status; otherwise 502 with ``api_error``."""
        statuses = {a.http_status for a in exc.attempts}
        status = 429 if statuses == {429} else 529 if statuses == {529} else 502
        return self._error(_stream_error_type(status), str(exc), status, ctx, attempts=exc.attempts_shown())

    async def create(self, request: Request) -> Response:
        """``POST /v1/messages``."""
        proxy = self.proxy
        engine, shadow = proxy.snapshot()
        ctx = RequestContext(request_id=new_message_id(), endpoint=ENDPOINT)
        requested: str | None = None
        try:
            proxy._identify(request, ctx)
            _check_version(request)
            data = await proxy._body(request)
            if isinstance(data, dict) and isinstance(data.get("model"), str):
                requested = data["model"]
            chat = wire.parse_request(data)
            route = await proxy.decide(chat, ctx, engine, shadow)
        except RequestError as exc:
            return self._rejected(engine, exc, ctx, requested)
        except Exception as exc:  # a bug, not the client's fault: recorded, answered in Anthropic's shape
            message = proxy.record_failure(engine, ctx, exc, requested)
            return self._error("api_error", message, 500, ctx)
        try:
            if chat.stream:
                streaming = await engine.stream(chat, ctx, route)
                return self._stream(streaming, chat, ctx, engine, shadow)
            completion = await engine.complete(chat, ctx, route)
            shadow.after(chat, ctx, completion.record, completion.response)
            body = wire.response_object(
                completion.response, request_id=ctx.request_id, model=completion.record.model or ""
            )
            headers = proxy._headers(completion, ctx, engine)
        except AllAttemptsFailed as exc:
            return self._upstream_failed(exc, ctx)
        except Exception as exc:  # recorded by the engine; the client still gets an Anthropic-shaped answer
            return self._error("api_error", f"internal error: {exc.__class__.__name__}", 500, ctx)
        headers["request-id"] = ctx.request_id
        return Response(orjson.dumps(body), media_type=_JSON, headers=headers)

    def _stream(
        self,
        streaming: StreamingCompletion,
        chat: ChatRequest,
        ctx: RequestContext,
        engine: Engine,
        shadow: Shadow,
    ) -> Response:
        writer = wire.StreamWriter(
            message_id=ctx.request_id,
            model=streaming.planned.model,
            input_tokens=streaming.route.features.input_tokens,
        )

        async def events() -> AsyncIterator[bytes]:
            for name, data in writer.start():
                yield _sse(name, data)
            try:
                async for delta in streaming:
                    for name, data in writer.add(delta):
                        yield _sse(name, data)
            except UpstreamError as exc:
                error = wire.error_object(
                    f"upstream failed mid-stream: {exc.message}", type_=_stream_error_type(exc.status)
                )
                yield _sse("error", error)
                return
            except Exception as exc:
                error = wire.error_object(
                    f"internal error mid-stream: {exc.__class__.__name__}", type_="api_error"
                )
                yield _sse("error", error)
                return
            shadow.after(chat, ctx, streaming.record, streaming.accumulated.response())
            record = streaming.record
            assert record is not None  # written when the iteration above ended
            # The record's tokens: the upstream's usage, or estimates when it reported none.
            writer.add(StreamDelta(usage=Usage(record.input_tokens, record.output_tokens)))
            for name, data in writer.finish():
                if name == "message_delta":
                    data["tierwise"] = {
                        "cost_usd": record.cost_usd,
                        "baseline_cost_usd": record.baseline_cost_usd,
                    }
                yield _sse(name, data)

        headers = self.proxy._headers(streaming, ctx, engine)
        headers["request-id"] = ctx.request_id
        headers["cache-control"] = "no-cache"
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def count_tokens(self, request: Request) -> Response:
        """``POST /v1/messages/count_tokens``: the router's own estimate of the input tokens (characters / 4
        per message, plus per-message and per-tool overheads), not the upstream tokenizer's count. It calls
        no model and leaves no record."""
        proxy = self.proxy
        engine = proxy.engine
        ctx = RequestContext(request_id=new_message_id(), endpoint=ENDPOINT)
        try:
            proxy._identify(request, ctx)
            _check_version(request)
            chat = wire.parse_count_tokens(await proxy._body(request))
            model = chat.model
            if (
                model not in AUTO_MODELS
                and model not in engine.model_names
                and engine.config.routing.alias_for(model) is None
            ):
                raise UnknownModelError(model, engine.model_names)
        except RequestError as exc:
            exc = _as_anthropic(exc)
            return self._error(_error_type(exc), exc.message, exc.status, ctx)
        body = {"input_tokens": estimate_input_tokens(chat)}
        headers = {"request-id": ctx.request_id, "x-tierwise-request-id": ctx.request_id}
        return Response(orjson.dumps(body), media_type=_JSON, headers=headers)
