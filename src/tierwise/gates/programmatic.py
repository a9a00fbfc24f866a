"""Programmatic gates: zero-cost checks of an answer's form. Each passes when it does not apply (a JSON check
on a request that asked for no JSON), so a cascade can list them all and let each speak where it knows.

    not_empty       the answer has text or tool calls
    not_truncated   the answer did not stop at the token limit (finish_reason "length")
    no_refusal      the answer does not open with a refusal ("I'm sorry, but I can't ...")
    json            the answer parses as JSON when the request asked for JSON (response_format)
    json_schema     the answer matches the request's response_format json_schema
    tool_arguments  every tool call names an offered tool and its arguments match that tool's schema
    code_parses     every ```python block of the answer parses
    regex           must_match / must_not_match patterns (configured)
    length          min_chars / max_chars bounds (configured)
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tierwise.config import GateSpec
from tierwise.gates.base import Gate, GateVerdict
from tierwise.messages import ChatRequest, ChatResponse

Check = Callable[[ChatRequest, ChatResponse], tuple[bool | None, str]]

_REFUSAL = re.compile(
    r"^\s*(?:I'm sorry|I am sorry|Sorry|I apologi[sz]e)?[,.]?\s*(?:but\s+)?(?:as an AI[^.]*,\s*)?"
    r"I(?: can't| cannot| can not| won't| will not|'m unable to| am unable to|'m not able to"
    r"| am not able to) "
    r"(?:help(?!\s+but\b)|assist|comply|provide|do that|fulfil|fulfill|answer)",
    re.IGNORECASE,
)
_FENCE = re.compile(r"```([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def _text(response: ChatResponse) -> str:
    return response.content or ""


def _strip_fence(text: str) -> str:
    body = text.strip()
    match = _FENCE.fullmatch(body)
    return match.group(2) if match else body


def _wants_json(request: ChatRequest) -> bool:
    return bool(
        request.response_format and request.response_format.get("type") in ("json_object", "json_schema")
    )


def not_empty(request: ChatRequest, response: ChatResponse) -> tuple[bool | None, str]:
    if _text(response).strip() or response.tool_calls:
        return True, "has content"
    return False, "the answer is empty"


def not_truncated(request: ChatRequest, response: ChatResponse) -> tuple[bool | None, str]:
    if response.finish_reason == "length":
        return False, "the answer stopped at the token limit"
    return True, f"finished ({response.finish_reason})"


def no_refusal(request: ChatRequest, response: ChatResponse) -> tuple[bool | None, str]:
    opening = _text(response)[:300].replace("\u2019", "'")  # typographic apostrophes, as models often write
    if _REFUSAL.match(opening):
        return False, "the answer is a refusal"
    return True, "no refusal"


def json_parses(request: ChatRequest, response: ChatResponse) -> tuple[bool | None, str]:
    if not _wants_json(request):
        return None, "no JSON asked for"
    try:
        orjson.loads(_strip_fence(_text(response)))
    except orjson.JSONDecodeError as exc:
        return False, f"not valid JSON ({exc})"
    return True, "valid JSON"


def json_schema(request: ChatRequest, response: ChatResponse) -> tuple[bool | None, str]:
    fmt = request.response_format or {}
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    if not isinstance(schema, dict):
        return None, "no json_schema asked for"
    try:
        data = orjson.loads(_strip_fence(_text(response)))
    except orjson.JSONDecodeError as exc:
        return False, f"not valid JSON ({exc})"
    error = _schema_error(schema, data)
    return (False, f"does not match the schema: {error}") if error else (True, "matches the schema")


def _schema_error(schema: dict[str, Any], data: Any) -> str | None:
    import jsonschema

    try:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        error = jsonschema.exceptions.best_match(cls(schema).iter_errors(data))
    except jsonschema.exceptions.SchemaError as exc:
        return f"the schema itself is invalid ({exc.message})"
    except (jsonschema.exceptions.UnknownType, TypeError, ValueError) as exc:
        return f"the schema itself is invalid ({exc.__class__.__name__}: {exc})"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


def tool_arguments(request: ChatRequest, response: ChatResponse) -> tuple[bool | None, str]:
    if not response.tool_calls:
        return None, "no tool calls"
    tools = {t.name: t for t in request.tools}
    for call in response.tool_calls:
        tool = tools.get(call.name)
        if tool is None:
            return False, f"calls {call.name!r}, which was not offered"
        try:
            args = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError as exc:
            return False, f"{call.name}: arguments are not valid JSON ({exc})"
        if tool.parameters:
            error = _schema_error(tool.parameters, args)
            if error:
                return False, f"{call.name}: {error}"
    return True, f"{len(response.tool_calls)} valid tool call(s)"


def code_parses(request: ChatRequest, response: ChatResponse) -> tuple[bool | None, str]:
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(_text(response))]
    python = [body for lang, body in blocks if lang in ("python", "py", "python3")]
    if not python:
        return None, "no Python code blocks"
    for i, body in enumerate(python):
        try:
            with warnings.catch_warnings():
                # Warnings (an invalid escape in a string) are not syntax errors, whatever the filters.
                warnings.simplefilter("ignore")
                ast.parse(body)
        except (SyntaxError, ValueError) as exc:
            line = getattr(exc, "lineno", None)
            return False, f"Python block {i + 1} does not parse ({f'line {line}: ' if line else ''}{exc})"
    return True, f"{len(python)} Python block(s) parse"


PROGRAMMATIC_GATES: dict[str, Check] = {
    "not_empty": not_empty,
    "not_truncated": not_truncated,
    "no_refusal": no_refusal,
    "json": json_parses,
    "json_schema": json_schema,
    "tool_arguments": tool_arguments,
    "code_parses": code_parses,
}


@dataclass
class ProgrammaticGate:
    """A check as a Gate: a check that does not apply passes with score 1."""

    name: str
    check_fn: Check

    async def check(self, request: ChatRequest, response: ChatResponse) -> GateVerdict:
        ok, reason = self.check_fn(request, response)
        passed = ok is not False
        return GateVerdict(self.name, passed, 1.0 if passed else 0.0, reason)


def _regex_check(spec: GateSpec) -> Check:
    must = re.compile(spec.must_match) if spec.must_match else None
    must_not = re.compile(spec.must_not_match) if spec.must_not_match else None

    def check(request: ChatRequest, response: ChatResponse) -> tuple[bool | None, str]:
        text = _text(response)
        if must is not None and not must.search(text):
            return False, f"does not match {spec.must_match!r}"
        if must_not is not None and must_not.search(text):
            return False, f"matches {spec.must_not_match!r}"
        return True, "patterns hold"

    return check


def _length_check(spec: GateSpec) -> Check:
    def check(request: ChatRequest, response: ChatResponse) -> tuple[bool | None, str]:
        n = len(_text(response))
        if spec.min_chars is not None and n < spec.min_chars:
            return False, f"{n} characters, fewer than {spec.min_chars}"
        if spec.max_chars is not None and n > spec.max_chars:
            return False, f"{n} characters, more than {spec.max_chars}"
        return True, f"{n} characters"

    return check


def programmatic_gate(spec: GateSpec) -> Gate:
    if spec.type == "regex":
        return ProgrammaticGate("regex", _regex_check(spec))
    if spec.type == "length":
        return ProgrammaticGate("length", _length_check(spec))
    return ProgrammaticGate(spec.type, PROGRAMMATIC_GATES[spec.type])
