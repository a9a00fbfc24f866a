"""Streamed answers: a stream whose first event has arrived (so failures before it can still be retried), and
the StreamingCompletion a client reads, which writes the request's record however the stream ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tierwise.errors import UpstreamError, UpstreamTimeout
from tierwise.features import estimate_tokens
from tierwise.messages import ChatRequest, StreamAccumulator, StreamDelta, Usage
from tierwise.policy.direct import PlannedModel
from tierwise.providers.base import ProviderStream
from tierwise.store.records import Attempt, RecordStatus, RoutingRecord

if TYPE_CHECKING:
    from tierwise.policy.engine import Engine, RequestContext, Route


@dataclass(slots=True)
class OpenedStream:
    """A stream whose first event has arrived (or that ended before any)."""

    stream: ProviderStream
    iterator: AsyncIterator[StreamDelta]
    first: StreamDelta | None


async def open_stream(starting: Awaitable[ProviderStream] | ProviderStream) -> OpenedStream:
    """Open a stream (or take one already open) and wait for its first event, so that failures before it
    can still be retried."""
    opened = starting if isinstance(starting, ProviderStream) else await starting
    iterator = aiter(opened)
    try:
        first = await anext(iterator)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await opened.aclose()
        raise
    return OpenedStream(opened, iterator, first)


class StreamingCompletion:
    """An answer being streamed. Iterate it for deltas; the record is written when the stream ends,
    however it ends (finished, failed upstream, or abandoned by the client)."""

    def __init__(
        self,
        engine: Engine,
        request: ChatRequest,
        ctx: RequestContext,
        route: Route,
        attempts: list[Attempt],
        planned: PlannedModel,
        opened: OpenedStream,
    ) -> None:
        self.route = route
        self.planned = planned
        self.meta = opened.stream.meta
        self.created = int(time.time())
        self.record: RoutingRecord | None = None
        self._engine, self._request, self._ctx, self._attempts = engine, request, ctx, attempts
        self._opened, self._iterator, self._first = opened.stream, opened.iterator, opened.first
        self.accumulated = StreamAccumulator(id=ctx.request_id, model=planned.model, created=self.created)

    async def __aiter__(self) -> AsyncIterator[StreamDelta]:
        status: RecordStatus = "error"
        error: str | None = "the client went away before the stream ended"
        timeout = self._engine.config.retry.timeout_s
        iterator = self._iterator
        try:
            if self._first is not None:
                self.accumulated.add(self._first)
                yield self._first
                while True:
                    try:
                        async with asyncio.timeout(timeout):
                            delta = await anext(iterator)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise UpstreamTimeout(f"the stream stalled for {timeout:g}s") from None
                    self.accumulated.add(delta)
                    yield delta
            status, error = "ok", None
        except UpstreamError as exc:
            error = f"upstream failed mid-stream: {exc.message}"
            raise
        except Exception as exc:
            error = f"internal error mid-stream: {exc!r}"
            raise
        finally:
            await self._opened.aclose()
            self._finish(status, error)

    def _finish(self, status: RecordStatus, error: str | None) -> None:
        response = self.accumulated.response()
        if self.accumulated.usage is None:
            # The upstream sent no usage (or broke off): estimate the tokens that were produced.
            out = estimate_tokens(response.content or "") + sum(
                estimate_tokens(c.arguments) for c in response.tool_calls
            )
            response.usage = Usage(self.route.features.input_tokens, out)
        last = self._attempts[-1]
        last.input_tokens, last.output_tokens = response.usage.input_tokens, response.usage.output_tokens
        last.cost_usd = self._engine._attempt_cost(self.planned.model, response.usage, self._opened.cost_usd)
        if status != "ok":
            last.status, last.error = "error", error
        record = self._engine._record(
            self._request,
            self._ctx,
            self.route,
            self._attempts,
            status,
            200,
            response=response,
            planned=self.planned,
            error=error,
        )
        self.record = record
        self._engine._submit(record)
