"""The gate seam: a gate looks at a request and one tier's answer and says pass or fail, and why."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from tierwise.messages import ChatRequest, ChatResponse


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """One gate's judgement of one answer. ``score`` is in [0, 1], 1 the best; ``cost_usd`` is what judging
    cost (zero for programmatic gates)."""

    gate: str
    passed: bool
    score: float
    reason: str
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Gate(Protocol):
    name: str

    async def check(self, request: ChatRequest, response: ChatResponse) -> GateVerdict:
        """Judge ``response`` as an answer to ``request``."""
        ...


# How a gate that needs a model calls one: (configured model name, request, timeout) -> (answer, cost in USD).
# The engine provides it; it raises tierwise.errors.UpstreamError when the call fails.
CallModel = Callable[[str, ChatRequest, float], Awaitable[tuple[ChatResponse, float]]]
