"""The wire shapes FakeUpstream answers in: OpenAI Chat Completions and Anthropic Messages.

Plain functions from what an answer holds (model, text, tool calls, finish reason, token usage) to the
bodies, stream events and error objects the real APIs send, so that the code under test parses exactly what
it would parse in production. They know nothing of HTTP or of scripting; ids come from the caller's counter
(``ids``) so that one upstream's ids stay unique across everything it sends.

A tool call is ``(id, name, arguments)``, arguments being the JSON text the model produced.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal

import orjson

Shape = Literal["openai", "anthropic"]
ToolCall = tuple[str, str, str]

OPENAI_ERRORS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}
ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ANTHROPIC_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def pieces(text: str, n: int = 3) -> list[str]:
    if not text:
        return []
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


def last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            texts = [
                part["text"]
                for part in content
                if isinstance(part, dict)
                and part.get("type") in ("text", "input_text")
                and isinstance(part.get("text"), str)
            ]
            if texts:
                return "\n".join(texts)
    return ""


def anthropic_problem(body: dict[str, Any]) -> str | None:
    """The first thing the real Messages API would reject a request for, among a few cheap checks."""
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (a positive integer)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = message.get("content")
        if content == "" or content == []:
            return f"messages.{i}: all messages must have non-empty content"
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "text" and not block.get("text"):
                    return "messages: text content blocks must be non-empty"
    return None


def request_problem(shape: Shape, body: dict[str, Any]) -> str | None:
    """Why the API of ``shape`` would answer this request body with a 400, or None if it would not."""
    if shape == "anthropic":
        return anthropic_problem(body)
    messages = body.get("messages")
    return None if isinstance(messages, list) and messages else "messages: a non-empty array is required"


def models_list(shape: Shape, models: list[str]) -> dict[str, Any]:
    """The body of ``GET /v1/models`` listing ``models``."""
    if shape == "openai":
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "tierwise-fake"} for m in models],
        }
    return {
        "data": [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in models
        ],
        "has_more": False,
        "first_id": models[0] if models else None,
        "last_id": models[-1] if models else None,
    }


def error_body(shape: Shape, status: int, message: str, ids: Iterator[int]) -> dict[str, Any]:
    """The error object the API of ``shape`` sends with HTTP ``status``."""
    if shape == "openai":
        type_, code = OPENAI_ERRORS.get(status, ("server_error", None))
        return {"error": {"message": message, "type": type_, "param": None, "code": code}}
    type_ = ANTHROPIC_ERRORS.get(status, "api_error")
    return {
        "type": "error",
        "error": {"type": type_, "message": message},
        "request_id": f"req_fake{next(ids)}",
    }


def stream_error(shape: Shape, status: int, ids: Iterator[int]) -> bytes:
    """An error arriving mid-stream: Anthropic's ``event: error``, OpenAI's ``data: {"error": ...}``."""
    data = orjson.dumps(error_body(shape, status, f"scripted stream error ({status})", ids))
    if shape == "openai":
        return b"data: " + data + b"\n\n"
    return b"event: error\ndata: " + data + b"\n\n"


# ---- OpenAI Chat Completions ----


def openai_usage(usage: tuple[int, int]) -> dict[str, int]:
    prompt, completion = usage
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def openai_completion(
    model: str,
    text: str | None,
    calls: list[ToolCall],
    finish: str,
    *,
    usage: tuple[int, int],
    ids: Iterator[int],
) -> dict[str, Any]:
    """A ``chat.completion`` body."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in calls
        ]
    return {
        "id": f"chatcmpl-fake{next(ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": openai_usage(usage),
        "system_fingerprint": None,
    }


def openai_chunks(
    body: dict[str, Any],
    model: str,
    text: str | None,
    calls: list[ToolCall],
    finish: str,
    *,
    usage: tuple[int, int],
    ids: Iterator[int],
) -> list[bytes]:
    """The ``chat.completion.chunk`` events of a streamed answer, through ``data: [DONE]``.

    ``body`` is the request's: its ``stream_options.include_usage`` decides whether a usage chunk ends the
    stream (and whether every other chunk carries ``"usage": null``, as the API's do).
    """
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    base = {
        "id": f"chatcmpl-fake{next(ids)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        data: dict[str, Any] = {
            **base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if include_usage:
            data["usage"] = None
        return b"data: " + orjson.dumps(data) + b"\n\n"

    out = [chunk({"role": "assistant", "content": "" if text is not None else None, "refusal": None})]
    out.extend(chunk({"content": piece}) for piece in pieces(text or ""))
    for i, (cid, name, args) in enumerate(calls):
        first = {"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}
        out.append(chunk({"tool_calls": [first]}))
        out.extend(chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}) for p in pieces(args))
    out.append(chunk({}, finish))
    if include_usage:
        out.append(b"data: " + orjson.dumps({**base, "choices": [], "usage": openai_usage(usage)}) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


# ---- Anthropic Messages ----


def anthropic_stop(finish: str) -> str:
    """The Anthropic ``stop_reason`` for one of tierwise's finish reasons; other values pass as they are."""
    return ANTHROPIC_STOP.get(finish, finish)


def anthropic_message(
    model: str,
    text: str | None,
    calls: list[ToolCall],
    stop: str,
    *,
    usage: tuple[int, int],
    ids: Iterator[int],
    thinking: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A ``message`` body; the tool calls' arguments must be JSON objects (FakeUpstream checks them).
    ``thinking`` (text, signature) opens the content with a thinking block."""
    content: list[dict[str, Any]] = []
    if thinking is not None:
        content.append({"type": "thinking", "thinking": thinking[0], "signature": thinking[1]})
    if text:
        content.append({"type": "text", "text": text})
    content.extend(
        {"type": "tool_use", "id": cid, "name": name, "input": orjson.loads(args)}
        for cid, name, args in calls
    )
    return {
        "id": f"msg_fake{next(ids)}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage[0],
            "output_tokens": usage[1],
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def anthropic_events(
    model: str,
    text: str | None,
    calls: list[ToolCall],
    stop: str,
    *,
    usage: tuple[int, int],
    ids: Iterator[int],
    thinking: tuple[str, str] | None = None,
) -> list[bytes]:
    """The events of a streamed answer, ``message_start`` through ``message_stop``, ping included;
    ``thinking`` (text, signature) streams a thinking block first."""

    def event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    message = anthropic_message(model, None, [], stop, usage=usage, ids=ids)
    message.update(stop_reason=None, usage={**message["usage"], "output_tokens": 1})
    out = [event("message_start", {"type": "message_start", "message": message})]
    ping = event("ping", {"type": "ping"})
    index = 0

    def start(block: dict[str, Any]) -> None:
        out.append(
            event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block},
            )
        )
        if index == 0:  # the API pings once, right after the first block starts
            out.append(ping)

    def delta(payload: dict[str, Any]) -> None:
        out.append(
            event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": payload})
        )

    if thinking is not None:
        start({"type": "thinking", "thinking": ""})
        for piece in pieces(thinking[0]):
            delta({"type": "thinking_delta", "thinking": piece})
        delta({"type": "signature_delta", "signature": thinking[1]})
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    if text:
        start({"type": "text", "text": ""})
        for piece in pieces(text):
            delta({"type": "text_delta", "text": piece})
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    for cid, name, args in calls:
        start({"type": "tool_use", "id": cid, "name": name, "input": {}})
        for piece in ["", *pieces(args)]:
            delta({"type": "input_json_delta", "partial_json": piece})
        out.append(event("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    if index == 0:
        out.append(ping)
    out.append(
        event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage[1]},
            },
        )
    )
    out.append(event("message_stop", {"type": "message_stop"}))
    return out
