"""OpenAI Chat Completions wire format <-> tierwise.messages, both directions.

The server uses it to read clients' requests and write responses; the OpenAI provider uses it to talk to
any OpenAI-compatible upstream. Validation errors name the field the way OpenAI does (``messages[0].role``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tierwise.errors import RequestError
from tierwise.messages import (
    ChatRequest,
    ChatResponse,
    Document,
    FinishReason,
    Message,
    StreamDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from tierwise.wire import validate_body

# Parameters forwarded unchanged to OpenAI-compatible upstreams (and dropped for other formats).
PASSTHROUGH = (
    "seed", "presence_penalty", "frequency_penalty", "logit_bias", "service_tier", "store",
    "reasoning_effort", "parallel_tool_calls", "prediction", "verbosity",
)  # fmt: skip


class _Function(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _ToolSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: _Function


class _CallFunction(BaseModel):
    name: str
    arguments: str


class _ToolCallIn(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: _CallFunction


class _MessageIn(BaseModel):
    # Clients echo back assistant messages with fields we need not read (refusal, annotations, audio).
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[_ToolCallIn] | None = None
    tool_call_id: str | None = None


class _ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1)
    text: str
    title: str | None = None


class ChatCompletionsBody(BaseModel):
    """The request body of ``POST /v1/chat/completions``; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    messages: list[_MessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    tools: list[_ToolSpec] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: _ResponseFormat | None = None
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    n: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    logprobs: bool | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    service_tier: str | None = None
    store: bool | None = None
    reasoning_effort: str | None = None
    parallel_tool_calls: bool | None = None
    prediction: dict[str, Any] | None = None
    verbosity: str | None = None
    # tierwise's extension (send with the SDK's extra_body): retrieved documents for the grounding gate.
    documents: list[_Document] | None = None


def field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith(("function-", "list[", "str", "dict[")):
            out += f".{part}" if out else part
    return out


def parse_request(data: Any) -> tuple[ChatRequest, bool]:
    """Validate a decoded JSON body. Returns the request and whether the client wants usage in the stream."""
    body = validate_body(
        ChatCompletionsBody,
        data,
        param=field_path,
        unknown=lambda p: f"Unrecognized request argument supplied: {p}",
    )
    if body.n not in (None, 1):
        raise RequestError("n: only n=1 is supported", param="n", code="unsupported_parameter")
    if body.logprobs:
        raise RequestError(
            "logprobs: not supported by tierwise", param="logprobs", code="unsupported_parameter"
        )
    if isinstance(body.tool_choice, str) and body.tool_choice not in ("auto", "none", "required"):
        raise RequestError("tool_choice: must be auto, none, required or a function", param="tool_choice")
    if (
        body.response_format
        and body.response_format.type == "json_schema"
        and not body.response_format.json_schema
    ):
        raise RequestError(
            "response_format.json_schema: required when type is json_schema",
            param="response_format.json_schema",
        )
    messages = []
    for m in body.messages:
        messages.append(
            Message(
                role=m.role,
                content=m.content,
                tool_calls=[
                    ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or []
                ],
                tool_call_id=m.tool_call_id,
                name=m.name,
            )
        )
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    request = ChatRequest(
        messages=messages,
        model=body.model,
        tools=[
            Tool(t.function.name, t.function.description, t.function.parameters or {}, t.function.strict)
            for t in body.tools or []
        ],
        tool_choice=body.tool_choice,
        response_format=body.response_format.model_dump(exclude_none=True) if body.response_format else None,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stop,
        user=body.user,
        metadata=body.metadata,
        stream=body.stream,
        extra={k: v for k in PASSTHROUGH if (v := getattr(body, k)) is not None},
        documents=[Document(d.id, d.text, d.title) for d in body.documents or []],
    )
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return request, include_usage


# ---- neutral -> OpenAI (requests to upstreams, responses to clients) ----


def _message_out(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out


def request_body(request: ChatRequest, model: str, *, stream: bool) -> dict[str, Any]:
    """The body to send an OpenAI-compatible upstream for ``request`` on ``model``."""
    messages = [_message_out(m) for m in request.messages]
    if request.hint:
        # Into the system prompt: first message, as some OpenAI-compatible servers accept system nowhere else.
        first = messages[0] if messages else None
        if (
            first is not None
            and first["role"] in ("system", "developer")
            and isinstance(first["content"], str)
        ):
            messages[0] = {**first, "content": f"{first['content']}\n\n{request.hint}"}
        else:
            messages.insert(0, {"role": "system", "content": request.hint})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.parameters,
                    **({"strict": t.strict} if t.strict is not None else {}),
                },
            }
            for t in request.tools
        ]
    if request.tool_choice is not None:
        body["tool_choice"] = request.tool_choice
    if request.response_format is not None:
        body["response_format"] = request.response_format
    if request.max_tokens is not None:
        body["max_completion_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = request.stop
    if request.user is not None:
        body["user"] = request.user
    body.update(request.extra)
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _finish(value: Any) -> FinishReason:
    if value in ("stop", "length", "tool_calls", "content_filter"):
        return value  # type: ignore[no-any-return]
    if value == "function_call":
        return "tool_calls"
    return "stop"


def _usage(data: Any) -> Usage:
    if not isinstance(data, dict):
        return Usage()
    return Usage(int(data.get("prompt_tokens") or 0), int(data.get("completion_tokens") or 0))


def parse_response(data: Any) -> ChatResponse:
    """Read an upstream's chat.completion object. Raises ValueError when its shape is wrong."""
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise ValueError("the response has no choices")
    choice = data["choices"][0]
    message = choice.get("message") or {}
    calls = [
        ToolCall(c.get("id", ""), c["function"]["name"], c["function"].get("arguments") or "")
        for c in message.get("tool_calls") or []
    ]
    return ChatResponse(
        id=str(data.get("id", "")),
        model=str(data.get("model", "")),
        content=message.get("content"),
        tool_calls=calls,
        finish_reason=_finish(choice.get("finish_reason")),
        usage=_usage(data.get("usage")),
        created=int(data.get("created") or 0),
    )


def parse_chunk(data: Any) -> StreamDelta:
    """Read one chat.completion.chunk from an upstream's stream."""
    if not isinstance(data, dict):
        raise ValueError("a stream chunk is not a JSON object")
    choices = data.get("choices")
    usage = data.get("usage")
    if choices is None and isinstance(usage, dict):
        choices = []  # a usage-only chunk (some servers leave out choices, or send null, instead of [])
    if not isinstance(choices, list):
        raise ValueError("a stream chunk without a choices list")
    delta = StreamDelta(usage=_usage(usage) if usage else None)
    if choices:
        choice = choices[0]
        d = choice.get("delta") or {}
        delta.content = d.get("content")
        for c in d.get("tool_calls") or []:
            fn = c.get("function") or {}
            delta.tool_calls.append(
                ToolCallDelta(int(c.get("index", 0)), c.get("id"), fn.get("name"), fn.get("arguments") or "")
            )
        if choice.get("finish_reason"):
            delta.finish_reason = _finish(choice["finish_reason"])
    return delta


def _usage_out(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def response_object(response: ChatResponse, *, request_id: str, model: str) -> dict[str, Any]:
    """The chat.completion object a client receives."""
    message: dict[str, Any] = {"role": "assistant", "content": response.content, "refusal": None}
    if response.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in response.tool_calls
        ]
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": response.created,
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": response.finish_reason, "logprobs": None}
        ],
        "usage": _usage_out(response.usage),
    }


def chunk_object(
    delta: StreamDelta, *, request_id: str, model: str, created: int, first: bool = False
) -> dict[str, Any]:
    """One chat.completion.chunk a client receives (usage goes in a chunk of its own, see usage_chunk)."""
    d: dict[str, Any] = {}
    if first:
        d["role"] = "assistant"
    if delta.content is not None:
        d["content"] = delta.content
    if delta.tool_calls:
        calls = []
        for piece in delta.tool_calls:
            call: dict[str, Any] = {"index": piece.index}
            if piece.id:
                call["id"] = piece.id
                call["type"] = "function"
            fn: dict[str, Any] = {"arguments": piece.arguments}
            if piece.name:
                fn["name"] = piece.name
            call["function"] = fn
            calls.append(call)
        d["tool_calls"] = calls
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": d, "finish_reason": delta.finish_reason, "logprobs": None}],
    }


def usage_chunk(usage: Usage, *, request_id: str, model: str, created: int) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": _usage_out(usage),
    }


def error_object(
    message: str, *, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
