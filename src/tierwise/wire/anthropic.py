"""Anthropic Messages wire format <-> tierwise.messages, as the Anthropic provider speaks it to upstreams.

``request_body`` turns a neutral request into a Messages API body, ``parse_response`` reads a message
object, ``StreamParser`` reads stream events. The other direction, serving the Messages API to clients, is
in ``tierwise.wire.anthropic_server``.

What the neutral types (OpenAI's semantics) cannot say to the Messages API:

* ``response_format`` (json_object / json_schema) has no Messages API parameter; ``request_body`` appends
  an instruction to the system prompt asking for one JSON object only (conforming to the schema, when
  there is one). The answer is not checked.
* ``temperature`` is clamped into Anthropic's 0..1, and ``top_p`` is only sent without ``temperature``,
  since recent Claude models refuse requests that set both.
* ``n``, penalties, ``seed``, ``logit_bias`` and other OpenAI-only parameters are dropped, as are message
  ``name``s and metadata other than ``user`` (sent as ``metadata.user_id``); ``parallel_tool_calls: false``
  becomes ``disable_parallel_tool_use``.

Errors about untranslatable requests are RequestErrors naming the field the OpenAI way
(``messages[0].tool_calls[1].function.arguments``), as the neutral types follow OpenAI's.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

import orjson

from tierwise.errors import RequestError
from tierwise.messages import (
    ChatRequest,
    ChatResponse,
    FinishReason,
    Message,
    StreamDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)

_FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# tierwise's finish reasons as Anthropic stop reasons.
STOP_REASON: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
JSON_INSTRUCTION = (
    "Respond with a single JSON object and nothing else: no text before or after it, no Markdown code fences."
)
_DATA_URL = re.compile(r"data:([^;,]+)(?:;[^;,]*)*;base64,(.*)", re.DOTALL)


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _usage(data: Any) -> Usage:
    """Anthropic counts cached prompt tokens apart from ``input_tokens``; tierwise counts the whole prompt."""
    if not isinstance(data, dict):
        return Usage()
    prompt = sum(
        int(data.get(key) or 0)
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    return Usage(prompt, int(data.get("output_tokens") or 0))


def _finish(stop_reason: Any) -> FinishReason:
    return _FINISH.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


# ---- neutral -> Anthropic (requests to upstreams) ----


def _image_block(part: dict[str, Any], at: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise RequestError(f"{at}.image_url.url: a URL is required", param=f"{at}.image_url.url")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise RequestError(
            f"{at}.image_url.url: must be an http(s) URL or a base64 data: URL", param=f"{at}.image_url.url"
        )
    return {"type": "image", "source": {"type": "base64", "media_type": match[1], "data": match[2]}}


def _content_blocks(content: str | list[dict[str, Any]] | None, at: str) -> list[dict[str, Any]]:
    # The Messages API refuses empty text blocks, so empty texts are left out.
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind in ("text", "input_text"):
            if part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
        elif kind == "image_url":
            blocks.append(_image_block(part, f"{at}[{j}]"))
        elif kind != "refusal":
            raise RequestError(
                f"{at}[{j}].type: {kind!r} content parts cannot be sent to Anthropic models",
                param=f"{at}[{j}].type",
                code="unsupported_parameter",
            )
    return blocks


def _tool_use_block(call: ToolCall, at: str) -> dict[str, Any]:
    try:
        arguments = orjson.loads(call.arguments) if call.arguments.strip() else {}
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise RequestError(
            f"{at}.function.arguments: must be a JSON object, got {call.arguments[:80]!r}",
            param=f"{at}.function.arguments",
        )
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _turn(message: Message, at: str) -> tuple[str, list[dict[str, Any]]]:
    """The Anthropic role and content blocks of one non-system message."""
    if message.role == "tool":
        if not message.tool_call_id:
            raise RequestError(f"{at}.tool_call_id: required for tool messages", param=f"{at}.tool_call_id")
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if isinstance(message.content, str):
            if message.content:
                result["content"] = message.content
        elif message.content:
            result["content"] = _content_blocks(message.content, f"{at}.content")
        return "user", [result]
    blocks = _content_blocks(message.content, f"{at}.content")
    if message.role == "assistant":
        blocks += [_tool_use_block(c, f"{at}.tool_calls[{j}]") for j, c in enumerate(message.tool_calls)]
        # Thinking blocks open the turn they belong to, as the model wrote them.
        return "assistant", [*(dict(b) for b in message.thinking), *blocks]
    return "user", blocks


def _tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice
    out: dict[str, Any]
    if choice is None or choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise RequestError("tool_choice.function.name: required", param="tool_choice.function.name")
        out = {"type": "tool", "name": name}
    else:
        raise RequestError(
            f"tool_choice: {choice!r} cannot be sent to Anthropic; use auto, none, required or a function",
            param="tool_choice",
            code="unsupported_parameter",
        )
    if request.extra.get("parallel_tool_calls") is False:
        out["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # the API's default is auto
    return out


def _format_instruction(response_format: dict[str, Any] | None) -> str | None:
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return JSON_INSTRUCTION
    if kind == "json_schema":
        spec = (response_format or {}).get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema:
            return f"{JSON_INSTRUCTION} The object must conform to this JSON Schema: {_json_text(schema)}"
        return JSON_INSTRUCTION
    return None


def request_body(
    request: ChatRequest, model: str, *, stream: bool, default_max_tokens: int, thinking: bool = True
) -> dict[str, Any]:
    """The Messages API body for ``request`` on ``model``; raises RequestError for what cannot be translated.

    System and developer messages become the top-level ``system``; tool results become ``tool_result``
    blocks of a user turn; consecutive turns of one role are merged, as the API wants roles to alternate.
    With ``thinking`` (the model supports extended thinking), the request's thinking setting and the
    assistant turns' thinking blocks go along; without it both are left out.
    """
    if not thinking and any(m.thinking for m in request.messages):
        request = replace(request, messages=[replace(m, thinking=[]) for m in request.messages])
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(request.messages):
        if message.role in ("system", "developer"):
            if text := message.text():
                system.append(text)
            continue
        role, blocks = _turn(message, f"messages[{i}]")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            # Tool results must open their user turn; a stable sort keeps each group's order.
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    if instruction := _format_instruction(request.response_format):
        system.append(instruction)
    if request.hint:
        system.append(request.hint)

    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or default_max_tokens,
        "messages": turns,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.tools:
        body["tools"] = [
            {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "input_schema": t.parameters or {"type": "object", "properties": {}},
            }
            for t in request.tools
        ]
        if (choice := _tool_choice(request)) is not None:
            body["tool_choice"] = choice
    if request.temperature is not None:
        body["temperature"] = min(max(request.temperature, 0.0), 1.0)
    elif request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if thinking and request.thinking is not None:
        body["thinking"] = dict(request.thinking)
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user is not None:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


# ---- Anthropic -> neutral (answers from upstreams) ----


def parse_response(data: Any) -> ChatResponse:
    """Read a message object. Raises ValueError (or KeyError, TypeError) when its shape is wrong."""
    if (
        not isinstance(data, dict)
        or data.get("type") != "message"
        or not isinstance(data.get("content"), list)
    ):
        raise ValueError("the response is not a message object")
    texts: list[str] = []
    calls: list[ToolCall] = []
    thinking: list[dict[str, Any]] = []
    for block in data["content"]:
        if block["type"] == "text":
            texts.append(block["text"])
        elif block["type"] == "tool_use":
            calls.append(ToolCall(block["id"], block["name"], _json_text(block.get("input") or {})))
        elif block["type"] in ("thinking", "redacted_thinking"):
            thinking.append(dict(block))
    return ChatResponse(
        id=str(data.get("id", "")),
        model=str(data.get("model", "")),
        content="".join(texts) if texts or not calls else None,
        tool_calls=calls,
        finish_reason=_finish(data.get("stop_reason")),
        usage=_usage(data.get("usage")),
        created=int(time.time()),  # message objects carry no timestamp; OpenAI clients expect one
        thinking=thinking,
    )


# The HTTP status each in-stream error type stands for, so callers can judge it like a status code.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class StreamError(Exception):
    """An ``error`` event in a stream; ``status`` is the HTTP status its type stands for."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.status = ERROR_STATUS.get(error_type, 500)


class StreamParser:
    """Reads the events of one Messages API stream, in order, into StreamDeltas.

    Text arrives as content; each ``tool_use`` block becomes a tool call (numbered from 0 in the order the
    blocks start) whose first delta has the id and name and whose arguments follow in pieces. The
    ``message_delta`` event gives the finish reason and the usage (prompt tokens from ``message_start``).
    ``done`` turns true at ``message_stop``.
    """

    def __init__(self) -> None:
        self.done = False
        self.id = ""
        self.model = ""
        self._calls: dict[int, int] = {}  # content block index -> tool call index
        self._usage = Usage()

    def feed(self, event: Any) -> StreamDelta | None:
        """The delta an event's decoded data carries, if any. Raises StreamError for an ``error`` event and
        ValueError, KeyError or TypeError for a malformed one."""
        if not isinstance(event, dict):
            raise ValueError("a stream event is not a JSON object")
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta["type"] == "text_delta":
                return StreamDelta(content=delta["text"])
            if delta["type"] == "thinking_delta":
                return StreamDelta(thinking=str(delta.get("thinking", "")))
            if delta["type"] == "signature_delta":
                return StreamDelta(thinking_signature=str(delta.get("signature", "")))
            call = self._calls.get(int(event["index"]))
            if delta["type"] == "input_json_delta" and call is not None and delta.get("partial_json"):
                return StreamDelta(tool_calls=[ToolCallDelta(call, arguments=delta["partial_json"])])
            return None  # citations: nothing tierwise passes on
        if kind == "content_block_start":
            block = event["content_block"]
            if block["type"] == "text":
                return StreamDelta(content=block["text"]) if block.get("text") else None
            if block["type"] == "tool_use":
                call = self._calls[int(event["index"])] = len(self._calls)
                # The API starts tool_use blocks with an empty input and streams it; honour one sent whole.
                arguments = _json_text(block["input"]) if block.get("input") else ""
                return StreamDelta(tool_calls=[ToolCallDelta(call, block["id"], block["name"], arguments)])
            if block["type"] == "thinking":
                return StreamDelta(thinking=str(block.get("thinking", "")))
            if block["type"] == "redacted_thinking":
                return StreamDelta(redacted_thinking=str(block.get("data", "")))
            return None
        if kind == "message_start":
            message = event["message"]
            self.id, self.model = str(message.get("id", "")), str(message.get("model", ""))
            self._usage = _usage(message.get("usage"))
            return None
        if kind == "message_delta":
            usage = event.get("usage") or {}
            # output_tokens is cumulative; newer API versions repeat the (cumulative) prompt counts too.
            if usage.get("input_tokens") is not None:
                self._usage.input_tokens = _usage(usage).input_tokens
            if usage.get("output_tokens") is not None:
                self._usage.output_tokens = int(usage["output_tokens"])
            stop = (event.get("delta") or {}).get("stop_reason")
            return StreamDelta(
                finish_reason=_finish(stop) if stop else None,
                usage=Usage(self._usage.input_tokens, self._usage.output_tokens),
            )
        if kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = event.get("error") or {}
            raise StreamError(str(error.get("type", "api_error")), str(error.get("message", "")))
        return None  # ping, content_block_stop, and event types added later
