"""Provider-neutral chat types.

Every wire format (OpenAI Chat Completions, Anthropic Messages, replayed eval sets) is translated into these
types at the edge; the engine, the classifier and the gates only ever see them. Their semantics follow
OpenAI's Chat Completions because that is the format most upstreams speak: an adapter for another format
translates to and from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(slots=True)
class ToolCall:
    """A function call the model asked for; ``arguments`` is the raw JSON text the model produced."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Message:
    """One conversation turn. ``content`` is plain text or a list of OpenAI-style content parts."""

    role: Role
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    # An assistant turn's extended-thinking blocks (Anthropic's ``thinking``/``redacted_thinking``, signatures
    # included), sent back unchanged to Anthropic upstreams, which need them in tool-use loops.
    thinking: list[dict[str, Any]] = field(default_factory=list)

    def text(self) -> str:
        """The message's text parts joined; images and other parts are left out."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(
            str(part.get("text", "")) for part in self.content if part.get("type") in ("text", "input_text")
        )


@dataclass(slots=True)
class Tool:
    """A function the model may call, described by a JSON schema."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    strict: bool | None = None


@dataclass(slots=True)
class Document:
    """A retrieved source the answer should rest on (for the grounding gate); never sent upstream as such."""

    id: str
    text: str
    title: str | None = None


@dataclass(slots=True)
class ChatRequest:
    """A chat request as the engine sees it, whatever wire format it arrived in."""

    messages: list[Message]
    model: str = "tierwise/auto"
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    user: str | None = None
    metadata: dict[str, str] | None = None
    stream: bool = False
    # Other OpenAI parameters (seed, penalties, ...) forwarded as they are to OpenAI-compatible upstreams.
    extra: dict[str, Any] = field(default_factory=dict)
    # Retrieved documents the client attached (the ``documents`` extension field), for the grounding gate.
    documents: list[Document] = field(default_factory=list)
    # Anthropic's extended-thinking setting and top_k, for Anthropic upstreams (others have no such thing).
    thinking: dict[str, Any] | None = None
    top_k: int | None = None
    # A cascade's hint for a senior tier (the juniors' drafts); each wire format adds it to the system prompt.
    # Kept apart from ``messages`` so that the client's conversation stays as it was sent.
    hint: str | None = None

    def system_text(self) -> str:
        return "\n".join(m.text() for m in self.messages if m.role in ("system", "developer"))

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""

    def all_text(self) -> str:
        return "\n".join(m.text() for m in self.messages)


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(slots=True)
class ChatResponse:
    """A complete (non-streamed) answer."""

    id: str
    model: str
    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    created: int = 0
    # Extended-thinking blocks an Anthropic upstream answered with, as it sent them (signatures included).
    thinking: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: the first piece of each call carries its id and name."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True)
class StreamDelta:
    """One streamed event: some text, pieces of tool calls, and at the end the finish reason and usage."""

    content: str | None = None
    tool_calls: list[ToolCallDelta] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    # Extended thinking, streamed by Anthropic upstreams: a piece of a thinking block's text, the signature
    # that closes the block, or a whole redacted block's data.
    thinking: str | None = None
    thinking_signature: str | None = None
    redacted_thinking: str | None = None


def add_thinking(blocks: list[dict[str, Any]], delta: StreamDelta) -> None:
    """Grow ``blocks`` (thinking blocks as the Messages API writes them) by a delta's thinking pieces: text
    goes into the open thinking block (a new one after a signed or redacted block), a signature closes it."""
    if delta.thinking is not None:
        if not blocks or blocks[-1]["type"] != "thinking" or "signature" in blocks[-1]:
            blocks.append({"type": "thinking", "thinking": ""})
        blocks[-1]["thinking"] += delta.thinking
    if delta.thinking_signature is not None:
        if not blocks or blocks[-1]["type"] != "thinking" or "signature" in blocks[-1]:
            blocks.append({"type": "thinking", "thinking": ""})
        blocks[-1]["signature"] = delta.thinking_signature
    if delta.redacted_thinking is not None:
        blocks.append({"type": "redacted_thinking", "data": delta.redacted_thinking})


@dataclass(slots=True)
class StreamAccumulator:
    """Builds the final ChatResponse out of the deltas of a stream, for the record and the gates."""

    id: str
    model: str
    created: int = 0
    parts: list[str] = field(default_factory=list)
    calls: dict[int, ToolCall] = field(default_factory=dict)
    finish_reason: FinishReason = "stop"
    usage: Usage | None = None
    thinking: list[dict[str, Any]] = field(default_factory=list)

    def add(self, delta: StreamDelta) -> None:
        if delta.content:
            self.parts.append(delta.content)
        if (
            delta.thinking is not None
            or delta.thinking_signature is not None
            or delta.redacted_thinking is not None
        ):
            add_thinking(self.thinking, delta)
        for piece in delta.tool_calls:
            call = self.calls.get(piece.index)
            if call is None:
                call = self.calls[piece.index] = ToolCall(
                    id=piece.id or "", name=piece.name or "", arguments=""
                )
            if piece.id:
                call.id = piece.id
            if piece.name:
                call.name = piece.name
            call.arguments += piece.arguments
        if delta.finish_reason:
            self.finish_reason = delta.finish_reason
        if delta.usage:
            self.usage = delta.usage

    def response(self) -> ChatResponse:
        return ChatResponse(
            id=self.id,
            model=self.model,
            content="".join(self.parts) if self.parts or not self.calls else None,
            tool_calls=[self.calls[i] for i in sorted(self.calls)],
            finish_reason=self.finish_reason,
            usage=self.usage or Usage(),
            created=self.created,
            thinking=self.thinking,
        )
