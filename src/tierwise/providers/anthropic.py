"""Anthropic's Messages API (``POST /v1/messages``), or any endpoint that speaks it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from typing import Any

import aiohttp
import orjson

from tierwise.config import AnthropicProviderConfig
from tierwise.errors import UpstreamConnectionError, UpstreamError
from tierwise.messages import ChatRequest, StreamDelta
from tierwise.providers.base import ProviderResult, ProviderStream
from tierwise.providers.http import RETRYABLE_STATUS, HTTPProvider, sse_events
from tierwise.wire import anthropic as wire


class _AnthropicStream(ProviderStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.meta = {}
        self._response = response

    async def __aiter__(self) -> AsyncIterator[StreamDelta]:
        parser = wire.StreamParser()
        try:
            async for _event, data in sse_events(self._response):
                try:
                    payload = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise UpstreamError(
                        f"malformed JSON in the upstream stream: {data[:80].decode('utf-8', 'replace')!r}"
                    ) from None
                try:
                    delta = parser.feed(payload)
                except wire.StreamError as exc:
                    # Anthropic reports overload and the like in the stream once it has started (HTTP 200).
                    raise UpstreamError(
                        f"upstream stream error: {exc}",
                        status=exc.status,
                        retryable=exc.status in RETRYABLE_STATUS,
                    ) from None
                except (ValueError, KeyError, TypeError) as exc:
                    raise UpstreamError(f"unexpected event shape from upstream: {exc!r}") from None
                if delta is not None:
                    yield delta
                if parser.done:
                    return
            # A stream cut short without message_stop is a truncated answer, not a finished one.
            raise UpstreamConnectionError("the stream ended before message_stop")
        finally:
            self._response.release()

    async def aclose(self) -> None:
        self._response.close()


class AnthropicProvider(HTTPProvider):
    """Talks to ``{base_url}/v1/messages`` with an ``x-api-key`` and the configured ``anthropic-version``.

    Requests are translated by ``tierwise.wire.anthropic``; one that cannot be translated (tool call
    arguments that are not a JSON object, an unsupported content part) raises RequestError, not
    UpstreamError, since no upstream would take it.
    """

    def __init__(
        self, name: str, config: AnthropicProviderConfig, *, no_thinking: Collection[str] = ()
    ) -> None:
        super().__init__(name, config.base_url)
        # Upstream model names that take no extended thinking (models.<name>.supports_thinking: false).
        self._no_thinking = frozenset(no_thinking)
        # Tolerate a base URL given with the /v1 the SDKs leave out.
        self._path = "/messages" if self.base_url.endswith("/v1") else "/v1/messages"
        self._default_max_tokens = config.default_max_tokens
        self._headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        self._headers["anthropic-version"] = config.version
        if config.api_key is not None:
            self._headers["x-api-key"] = config.api_key.get_secret_value()

    def _body(self, request: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
        return wire.request_body(
            request,
            model,
            stream=stream,
            default_max_tokens=self._default_max_tokens,
            thinking=model not in self._no_thinking,
        )

    async def complete(self, request: ChatRequest, model: str, *, timeout: float) -> ProviderResult:
        body = self._body(request, model, stream=False)
        data = await self.post_json(self._path, body, self._headers, timeout)
        try:
            return ProviderResult(wire.parse_response(data))
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"unexpected response shape from upstream: {exc!r}", retryable=True) from None

    async def stream(self, request: ChatRequest, model: str, *, timeout: float) -> ProviderStream:
        body = self._body(request, model, stream=True)
        response = await self.post(self._path, body, self._headers, timeout)
        return _AnthropicStream(response)
