"""The Anthropic Messages API as tierwise serves it to clients: their requests in, answers out.

``parse_request`` validates a client's ``POST /v1/messages`` body into a neutral ChatRequest (and
``parse_count_tokens`` a ``POST /v1/messages/count_tokens`` body); ``response_object`` and ``StreamWriter``
write the message object or the stream events the client gets. The upstream direction (what the Anthropic
provider sends and reads) is ``tierwise.wire.anthropic``.

What clients may send that the neutral types cannot carry:

* ``document`` blocks with a text source (``text`` or ``content``) reach the model as text, wrapped in
  ``<document id="N" title="...">`` tags (their ``context`` in a ``<context>`` tag), and become the
  request's ``documents`` (ids "1", "2", ... in order) for the grounding gate. PDF, URL and file sources
  are refused: tierwise does not read PDFs.
* ``thinking`` (the parameter), ``top_k``, and ``thinking`` / ``redacted_thinking`` blocks in assistant
  turns are carried to Anthropic upstreams whose model takes them (``models.<name>.supports_thinking``,
  true by default) and left out for others; an Anthropic upstream's thinking blocks (and streamed
  ``thinking_delta`` / ``signature_delta`` events) reach the client as they were sent.
* ``service_tier``, ``speed``, ``inference_geo``, ``cache_control`` (top level and on blocks),
  ``output_config.effort`` and a document's ``citations`` are accepted and ignored.
* ``output_config.format`` (a JSON schema) becomes ``response_format`` json_schema, so the answer is asked
  for as JSON on every upstream and the cascade's json_schema gate can judge it.
* A tool result's ``is_error`` flag is dropped (its content, which says what failed, is kept).

Server tools (web search, code execution, ...), MCP servers and containers are refused. Validation errors
name the field the way Anthropic does (``messages.0.content.1.source``).
"""

from __future__ import annotations

import re
from html import escape
from typing import Any, Literal

import orjson
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
    Usage,
)
from tierwise.wire import validate_body
from tierwise.wire.anthropic import STOP_REASON


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


_TAG = re.compile(r"<(\s*/?\s*)(document|context)\b", re.IGNORECASE)


def _untagged(text: str) -> str:
    """``text`` with its document and context tags neutralised (``<`` written as ``&lt;``)."""
    return _TAG.sub(lambda m: f"&lt;{m.group(1)}{m.group(2)}", text)


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
    strict: bool | None = None


class _ToolChoiceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class _ThinkingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["enabled", "disabled", "adaptive", "between_tools"]
    budget_tokens: int | None = Field(None, ge=0)
    display: Literal["summarized", "omitted"] | None = None


class _FormatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class _OutputConfigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    effort: str | None = None
    format: _FormatIn | None = None


class CountTokensBody(BaseModel):
    """The request body of ``POST /v1/messages/count_tokens``; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    messages: list[_MessageIn] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[_ToolIn] | None = None
    tool_choice: _ToolChoiceIn | None = None
    thinking: _ThinkingIn | None = None
    output_config: _OutputConfigIn | None = None
    cache_control: dict[str, Any] | None = None
    speed: str | None = None


class MessagesBody(CountTokensBody):
    """The request body of ``POST /v1/messages``; unknown keys are rejected."""

    max_tokens: int = Field(gt=0)
    metadata: _Metadata | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    service_tier: str | None = None
    inference_geo: str | None = None


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


def _optional(block: dict[str, Any], key: str, at: str) -> str | None:
    value = block.get(key)
    if value is not None and not isinstance(value, str):
        raise RequestError(f"{at}.{key}: must be a string", param=f"{at}.{key}")
    return value


class _Reader:
    """Turns one request's content blocks into OpenAI-style content parts, collecting its documents."""

    def __init__(self) -> None:
        self.documents: list[Document] = []

    def part(self, block: dict[str, Any], at: str) -> dict[str, Any]:
        """A client's text, image or document block as an OpenAI-style content part."""
        kind = block.get("type")
        if kind == "text":
            return {"type": "text", "text": _field(block, "text", at)}
        if kind == "document":
            return {"type": "text", "text": self.document(block, at)}
        if kind != "image":
            raise RequestError(
                f"{at}.type: {kind!r} blocks are not supported here",
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

    def document(self, block: dict[str, Any], at: str) -> str:
        """A document block's text, tagged with its number and title, as the model will read it."""
        source = block.get("source")
        where = f"{at}.source"
        kind = source.get("type") if isinstance(source, dict) else None
        if not isinstance(source, dict) or kind not in ("text", "content"):
            raise RequestError(
                f"{where}: {kind!r} document sources are not supported (tierwise does not read PDFs or "
                "files); send the document's text, as a text or content source",
                param=where,
                code="unsupported_parameter",
            )
        if kind == "text":
            text = _field(source, "data", where)
        else:
            inner = source.get("content")
            if isinstance(inner, str):
                text = inner
            elif isinstance(inner, list):
                texts = []
                for k, part in enumerate(inner):
                    if not isinstance(part, dict) or part.get("type") != "text":
                        raise RequestError(
                            f"{where}.content.{k}.type: a document's content must be text blocks",
                            param=f"{where}.content.{k}.type",
                            code="unsupported_parameter",
                        )
                    texts.append(_field(part, "text", f"{where}.content.{k}"))
                text = "\n".join(texts)
            else:
                raise RequestError(
                    f"{where}.content: must be a string or a list of text blocks", param=f"{where}.content"
                )
        title = _optional(block, "title", at)
        context = _optional(block, "context", at)
        number = str(len(self.documents) + 1)
        self.documents.append(Document(number, text, title))
        attrs = f' id="{number}"' + (f' title="{escape(title)}"' if title else "")
        # The text and context cannot close their tags early or open new ones: a "<document", "</document",
        # "<context" or "</context" inside them reaches the model as "&lt;document"... (the rest as sent).
        inside = (f"<context>{_untagged(context)}</context>\n" if context else "") + _untagged(text)
        return f"<document{attrs}>\n{inside}\n</document>"

    def messages(self, message: _MessageIn, at: str) -> list[Message]:
        blocks = _blocks_in(message.content, at)
        if message.role == "assistant":
            return [self._assistant(blocks, at)]
        # OpenAI wants tool results as messages of their own, right after the assistant's call.
        results: list[Message] = []
        parts: list[dict[str, Any]] = []
        for j, block in enumerate(blocks):
            if block["type"] != "tool_result":
                parts.append(self.part(block, f"{at}.{j}"))
                continue
            inner = block.get("content")
            if inner is None or isinstance(inner, str):
                content: str | list[dict[str, Any]] = inner or ""
            elif isinstance(inner, list):
                where = f"{at}.{j}.content"
                content = _parts_content(
                    [self.part(b, f"{where}.{k}") for k, b in enumerate(_blocks_in(inner, where))]
                )
            else:
                raise RequestError(
                    f"{at}.{j}.content: must be a string or a list of blocks", param=f"{at}.{j}.content"
                )
            results.append(Message("tool", content, tool_call_id=_field(block, "tool_use_id", f"{at}.{j}")))
        if parts:
            results.append(Message("user", _parts_content(parts)))
        return results

    def _assistant(self, blocks: list[dict[str, Any]], at: str) -> Message:
        texts: list[str] = []
        thinking: list[dict[str, Any]] = []
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
            elif block["type"] in ("thinking", "redacted_thinking"):
                thinking.append(block)
            else:
                raise RequestError(
                    f"{at}.{j}.type: {block['type']!r} blocks are not supported in assistant turns",
                    param=f"{at}.{j}.type",
                    code="unsupported_parameter",
                )
        text = "".join(texts)
        return Message("assistant", text if text or not calls else None, tool_calls=calls, thinking=thinking)


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


def _request(body: CountTokensBody) -> ChatRequest:
    """The parts of a Messages body that count_tokens takes too, as a ChatRequest."""
    reader = _Reader()
    messages: list[Message] = []
    if body.system:
        texts = []
        for j, block in enumerate(_blocks_in(body.system, "system")):
            if block["type"] != "text":
                raise RequestError(f"system.{j}.type: must be text", param=f"system.{j}.type")
            texts.append(_field(block, "text", f"system.{j}"))
        messages.append(Message("system", "\n".join(texts)))
    for i, message in enumerate(body.messages):
        messages.extend(reader.messages(message, f"messages.{i}.content"))

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
    response_format = None
    if body.output_config is not None and (fmt := body.output_config.format) is not None:
        response_format = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.schema_}}
    return ChatRequest(
        messages=messages,
        model=body.model,
        tools=[Tool(t.name, t.description, t.input_schema, t.strict) for t in body.tools or []],
        tool_choice=tool_choice,
        response_format=response_format,
        extra=extra,
        documents=reader.documents,
    )


def parse_request(data: Any) -> ChatRequest:
    """Validate a decoded ``POST /v1/messages`` body; raises RequestError naming the offending field."""
    body = validate_body(
        MessagesBody, data, param=_param, unknown=lambda p: f"{p}: Extra inputs are not permitted"
    )
    request = _request(body)
    request.max_tokens = body.max_tokens
    request.temperature = body.temperature
    request.top_p = body.top_p
    request.stop = list(body.stop_sequences or [])
    request.user = body.metadata.user_id if body.metadata else None
    request.stream = body.stream
    request.top_k = body.top_k
    if body.thinking is not None:
        request.thinking = body.thinking.model_dump(exclude_none=True)
    return request


def parse_count_tokens(data: Any) -> ChatRequest:
    """Validate a decoded ``POST /v1/messages/count_tokens`` body into the request it would make."""
    body = validate_body(
        CountTokensBody, data, param=_param, unknown=lambda p: f"{p}: Extra inputs are not permitted"
    )
    return _request(body)


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
    content: list[dict[str, Any]] = [dict(b) for b in response.thinking]
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
        self._thinking_blocks = 0
        self._signed = False
        # ("text", 0), ("tool", tool call index), ("thinking", n) or ("redacted", n)
        self._open: tuple[str, int] | None = None
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

    def _thinking(self, delta: StreamDelta, out: list[tuple[str, dict[str, Any]]]) -> None:
        # A thinking block stays open until its signature; text after that opens the next one.
        if delta.thinking is not None or delta.thinking_signature is not None:
            if self._open is None or self._open[0] != "thinking" or self._signed:
                self._thinking_blocks += 1
                self._signed = False
                self._switch(("thinking", self._thinking_blocks), {"type": "thinking", "thinking": ""}, out)
            if delta.thinking:
                out.append(self._delta({"type": "thinking_delta", "thinking": delta.thinking}))
            if delta.thinking_signature is not None:
                out.append(self._delta({"type": "signature_delta", "signature": delta.thinking_signature}))
                self._signed = True
        if delta.redacted_thinking is not None:
            self._thinking_blocks += 1
            block = {"type": "redacted_thinking", "data": delta.redacted_thinking}
            self._switch(("redacted", self._thinking_blocks), block, out)
            self._close(out)

    def add(self, delta: StreamDelta) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        self._thinking(delta, out)
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
