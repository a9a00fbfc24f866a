"""The provider seam: one class per upstream API, owning its HTTP client, auth and wire format.

A provider turns a ChatRequest into a call to one upstream model. It raises UpstreamError (and its
subclasses) for every failure, with ``retryable`` set when trying the same model again may help; retries,
fallbacks and records are the engine's business, not the provider's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from tierwise.messages import ChatRequest, ChatResponse, StreamDelta, ToolCallDelta


@dataclass(slots=True)
class ProviderResult:
    response: ChatResponse
    # What the call cost when the provider knows it exactly (replayed records); else priced from usage.
    cost_usd: float | None = None
    # Facts the client may want to see, sent as ``x-tierwise-<key>`` response headers.
    meta: dict[str, str] = field(default_factory=dict)


class ProviderStream(ABC):
    """An open streamed answer: iterate it for deltas; ``aclose`` releases the connection early."""

    meta: dict[str, str]
    cost_usd: float | None = None

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[StreamDelta]: ...

    async def aclose(self) -> None:
        return None


class BufferedStream(ProviderStream):
    """A complete answer replayed as a stream: text in small pieces, tool calls whole, then finish and usage.
    Used for recorded answers and for a cascade's junior answer that passed its gates."""

    def __init__(self, result: ProviderResult, chunk_chars: int = 24) -> None:
        self.meta = result.meta
        self.cost_usd = result.cost_usd
        self._response = result.response
        self._chunk = chunk_chars

    async def __aiter__(self) -> AsyncIterator[StreamDelta]:
        text = self._response.content or ""
        for start in range(0, len(text), self._chunk):
            yield StreamDelta(content=text[start : start + self._chunk])
        if self._response.tool_calls:
            calls = self._response.tool_calls
            yield StreamDelta(
                tool_calls=[ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(calls)]
            )
        yield StreamDelta(finish_reason=self._response.finish_reason, usage=self._response.usage)


class Provider(ABC):
    """One upstream API endpoint (an account at OpenAI, an Anthropic key, a vLLM server, a replay set)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @abstractmethod
    async def complete(self, request: ChatRequest, model: str, *, timeout: float) -> ProviderResult:
        """The whole answer of ``model`` to ``request``."""

    @abstractmethod
    async def stream(self, request: ChatRequest, model: str, *, timeout: float) -> ProviderStream:
        """Start a streamed answer. Raises UpstreamError if the upstream refuses it before any event."""

    async def aclose(self) -> None:
        return None
