"""Any OpenAI-compatible Chat Completions endpoint.

OpenAI itself, vLLM, Ollama, OpenRouter, Together, Groq, Gemini's OpenAI endpoint: set ``base_url``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from tierwise.config import OpenAIProviderConfig
from tierwise.errors import UpstreamError
from tierwise.messages import ChatRequest, StreamDelta
from tierwise.providers.base import ProviderResult, ProviderStream
from tierwise.providers.http import HTTPProvider, sse_events
from tierwise.wire import openai as wire


class _OpenAIStream(ProviderStream):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.meta = {}
        self._response = response

    async def __aiter__(self) -> AsyncIterator[StreamDelta]:
        finished = False
        try:
            async for _event, data in sse_events(self._response):
                if data == b"[DONE]":
                    return
                try:
                    payload = orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise UpstreamError(
                        f"malformed JSON in the upstream stream: {data[:80].decode('utf-8', 'replace')!r}"
                    ) from None
                if isinstance(payload, dict) and "error" in payload:
                    raise UpstreamError(f"upstream stream error: {payload['error']}")
                try:
                    delta = wire.parse_chunk(payload)
                except (ValueError, KeyError, TypeError) as exc:
                    raise UpstreamError(f"unexpected chunk shape from upstream: {exc}") from None
                finished = finished or delta.finish_reason is not None
                yield delta
            # The connection closed without [DONE]: a complete answer had said how it finished; anything
            # else was cut short.
            if not finished:
                raise UpstreamError(
                    "the upstream stream ended before the answer finished (no finish_reason, no [DONE])",
                    retryable=True,
                )
        finally:
            self._response.release()

    async def aclose(self) -> None:
        self._response.close()


class OpenAIProvider(HTTPProvider):
    def __init__(self, name: str, config: OpenAIProviderConfig) -> None:
        super().__init__(name, config.base_url)
        self._headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        if config.api_key is not None:
            self._headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"

    async def complete(self, request: ChatRequest, model: str, *, timeout: float) -> ProviderResult:
        body = wire.request_body(request, model, stream=False)
        data = await self.post_json("/chat/completions", body, self._headers, timeout)
        try:
            return ProviderResult(wire.parse_response(data))
        except (ValueError, KeyError, TypeError) as exc:
            raise UpstreamError(f"unexpected response shape from upstream: {exc}", retryable=True) from None

    async def stream(self, request: ChatRequest, model: str, *, timeout: float) -> ProviderStream:
        body = wire.request_body(request, model, stream=True)
        response = await self.post("/chat/completions", body, self._headers, timeout)
        return _OpenAIStream(response)
