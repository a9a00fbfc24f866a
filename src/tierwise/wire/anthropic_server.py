"""The Anthropic Messages API as tierwise serves it to clients: their requests in, answers out.

``parse_request`` validates a client's ``POST /v1/messages`` body into a neutral ChatRequest;
``response_object`` and ``StreamWriter`` write the message object or the stream events the client gets.
The upstream direction (what the Anthropic provider sends and reads) is ``tierwise.wire.anthropic``.

What clients may send that the neutral types cannot carry: ``top_k`` and ``service_tier`` are accepted and
ignored, ``thinking`` blocks in assistant turns are dropped, a tool result's ``is_error`` flag is dropped
(its content, which says what failed, is kept); server tools (web search, code execution, ...) and
document blocks are refused. Validation errors name the field the way Anthropic does
(``messages.0.content.1.source``).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from tierwise.errors import RequestError
from tierwise.messages import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    Message,
    StreamDelta,
    Tool,
    ToolCall,
    Usage,
)
from tierwise.wire import validate_body
from tierwise.wire.anthropic import STOP_REASON


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str | None = None


class _ToolIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: str | None = None
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    input_schema: dict[str, Any]
    cache_control: dict[str, Any] | None = None


class _ToolChoiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesBody(BaseModel):
    """The request body of ``POST /v1/messages``; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    messages: list[_MessageIn] = Field(min_length=1)
    max_tokens: int = Field(gt=0)
    system: str | list[dict[str, Any]] | None = None
    metadata: _Metadata | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    tools: list[_ToolIn] | None = None
    tool_choice: _ToolChoiceIn | None = None
    service_tier: str | None = None


def _param(loc: tuple[int | str, ...]) -> str:
    # Pydantic names the member of a union it tried (``str``, ``list[...]``); Anthropic's names leave it out.
    return ".".join(
        str(p) for p in loc if not (isinstance(p, str) and p.startswith(("str", "list[", "dict[")))
    )


def _field(block: dict[str, Any], key: str, at: str) -> str:
    value = block.get(key)
    if not isinstance(value, str):
        raise RequestError(f"{at}.{key}: Field required (a string)", param=f"{at}.{key}")
    return value


def _part_in(block: dict[str, Any], at: str) -> dict[str, Any]:
    """A client's text or image block as an OpenAI-style content part."""
    if block.get("type") == "text":
        return {"type": "text", "text": _field(block, "text", at)}
    if block.get("type") != "image":
        raise RequestError(
            f"{at}.type: {block.get('type')!r} blocks are not supported here",
            param=f"{at}.type",
            code="unsupported_parameter",
        )
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") not in ("base64", "url"):
        raise RequestError(f"{at}.source: must be a base64 or url image source", param=f"{at}.source")
    if source["type"] == "url":
        url = _field(source, "url", f"{at}.source")
    else:
        media_type = _field(source, "media_type", f"{at}.source")
        url = f"data:{media_type};base64,{_field(source, 'data', f'{at}.source')}"
    return {"type": "image_url", "image_url": {"url": url}}


def _blocks_in(content: str | list[dict[str, Any]], at: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise RequestError(f"{at}.{j}.type: Field required", param=f"{at}.{j}.type")
    return content


def _parts_content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts) if len(parts) == 1 else parts
    return parts


def _messages_in(message: _MessageIn, at: str) -> list[Message]:
    blocks = _blocks_in(message.content, at)
    if message.role == "assistant":
        texts: list[str] = []
        calls: list[ToolCall] = []
        for j, block in enumerate(blocks):
            if block["type"] == "text":
                texts.append(_field(block, "text", f"{at}.{j}"))
            elif block["type"] == "tool_use":
                if not isinstance(block.get("input"), dict):
                    raise RequestError(f"{at}.{j}.input: must be an object", param=f"{at}.{j}.input")
                calls.append(
                    ToolCall(
                        _field(block, "id", f"{at}.{j}"),
                        _field(block, "name", f"{at}.{j}"),
                        _json_text(block["input"]),
                    )
                )
            elif block["type"] not in ("thinking", "redacted_thinking"):
                _part_in(block, f"{at}.{j}")  # raises: assistants send no images
        text = "".join(texts)
        return [Message("assistant", text if text or not calls else None, tool_calls=calls)]
    # OpenAI wants tool results as messages of their own, right after the assistant's call.
    results: list[Message] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        if block["type"] != "tool_result":
            parts.append(_part_in(block, f"{at}.{j}"))
            continue
        inner = block.get("content")
        if inner is None or isinstance(inner, str):
            content: str | list[dict[str, Any]] = inner or ""
        elif isinstance(inner, list):
            where = f"{at}.{j}.content"
            content = _parts_content(
                [_part_in(b, f"{where}.{k}") for k, b in enumerate(_blocks_in(inner, where))]
            )
        else:
            raise RequestError(
                f"{at}.{j}.content: must be a string or a list of blocks", param=f"{at}.{j}.content"
            )
        results.append(Message("tool", content, tool_call_id=_field(block, "tool_use_id", f"{at}.{j}")))
    if parts:
        results.append(Message("user", _parts_content(parts)))
    return results


def parse_request(data: Any) -> ChatRequest:
    """Validate a decoded ``POST /v1/messages`` body; raises RequestError naming the offending field."""
    body = validate_body(
        MessagesBody, data, param=_param, unknown=lambda p: f"{p}: Extra inputs are not permitted"
    )

    messages: list[Message] = []
    if body.system:
        texts = []
        for j, block in enumerate(_blocks_in(body.system, "system")):
            if block["type"] != "text":
                raise RequestError(f"system.{j}.type: must be text", param=f"system.{j}.type")
            texts.append(_field(block, "text", f"system.{j}"))
        messages.append(Message("system", "\n".join(texts)))
    for i, message in enumerate(body.messages):
        messages.extend(_messages_in(message, f"messages.{i}.content"))

    for i, tool in enumerate(body.tools or []):
        if tool.type not in (None, "custom"):
            raise RequestError(
                f"tools.{i}.type: server tool {tool.type!r} is not supported",
                param=f"tools.{i}.type",
                code="unsupported_parameter",
            )
    extra: dict[str, Any] = {}
    tool_choice: str | dict[str, Any] | None = None
    if (choice := body.tool_choice) is not None:
        if choice.type == "tool":
            if not choice.name:
                raise RequestError("tool_choice.name: required when type is tool", param="tool_choice.name")
            tool_choice = {"type": "function", "function": {"name": choice.name}}
        else:
            tool_choice = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use:
            extra["parallel_tool_calls"] = False
    return ChatRequest(
        messages=messages,
        model=body.model,
        tools=[Tool(t.name, t.description, t.input_schema) for t in body.tools or []],
        tool_choice=tool_choice,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=list(body.stop_sequences or []),
        user=body.metadata.user_id if body.metadata else None,
        stream=body.stream,
        extra=extra,
    )


# ---- neutral -> Anthropic (answers to clients) ----


def _input_object(arguments: str) -> dict[str, Any]:
    # A model can produce arguments that are not a JSON object; keep them visible rather than lose them.
    try:
        value = orjson.loads(arguments) if arguments.strip() else {}
    except orjson.JSONDecodeError:
        value = None
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def response_object(response: ChatResponse, *, request_id: str, model: str) -> dict[str, Any]:
    """The message object a client receives."""
    content: list[dict[str, Any]] = []
    if response.content or not response.tool_calls:
        content.append({"type": "text", "text": response.content or ""})
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": _input_object(c.arguments)}
        for c in response.tool_calls
    ]
    return {
        "id": request_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASON[response.finish_reason],
        "stop_sequence": None,
        "usage": {"input_tokens": response.usage.input_tokens, "output_tokens": response.usage.output_tokens},
    }


class StreamWriter:
    """Writes the events of a Messages API stream, as (event name, data) pairs, out of StreamDeltas.

    Call ``start()`` first, ``add()`` for each delta, and ``finish()`` at the end: the stop reason and the
    usage go out at the end, since OpenAI-shaped upstreams report usage after the finish reason.
    """

    def __init__(self, *, message_id: str, model: str, input_tokens: int = 0) -> None:
        self._id, self._model, self._input_tokens = message_id, model, input_tokens
        self._block = -1
        self._open: tuple[str, int] | None = None  # ("text", 0) or ("tool", tool call index)
        self._finish: FinishReason = "stop"
        self._usage: Usage | None = None

    def start(self) -> list[tuple[str, dict[str, Any]]]:
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]

    def _switch(
        self, to: tuple[str, int], block: dict[str, Any], out: list[tuple[str, dict[str, Any]]]
    ) -> None:
        if self._open == to:
            return
        self._close(out)
        self._block += 1
        self._open = to
        out.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": self._block, "content_block": block},
            )
        )

    def _close(self, out: list[tuple[str, dict[str, Any]]]) -> None:
        if self._open is not None:
            out.append(("content_block_stop", {"type": "content_block_stop", "index": self._block}))
            self._open = None

    def _delta(self, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "content_block_delta", {"type": "content_block_delta", "index": self._block, "delta": delta}

    def add(self, delta: StreamDelta) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        if delta.content:
            self._switch(("text", 0), {"type": "text", "text": ""}, out)
            out.append(self._delta({"type": "text_delta", "text": delta.content}))
        for piece in delta.tool_calls:
            block = {"type": "tool_use", "id": piece.id or "", "name": piece.name or "", "input": {}}
            self._switch(("tool", piece.index), block, out)
            if piece.arguments:
                out.append(self._delta({"type": "input_json_delta", "partial_json": piece.arguments}))
        if delta.finish_reason:
            self._finish = delta.finish_reason
        if delta.usage:
            self._usage = delta.usage
        return out

    def finish(self) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        self._close(out)
        usage = self._usage or Usage(self._input_tokens, 0)
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": STOP_REASON[self._finish], "stop_sequence": None},
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        }
        return [*out, ("message_delta", message_delta), ("message_stop", {"type": "message_stop"})]


def error_object(message: str, *, type_: str) -> dict[str, Any]:
    """An error body in the Messages API's shape (``type_`` as in ERROR_STATUS)."""
    return {"type": "error", "error": {"type": type_, "message": message}}
