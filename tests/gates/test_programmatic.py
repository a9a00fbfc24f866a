"""Programmatic gates judged against crafted answers, built the way a cascade builds them: from GateSpecs."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pydantic
import pytest

from tierwise.config import GateSpec
from tierwise.gates import GateVerdict, build_gates
from tierwise.messages import ChatRequest, ChatResponse, Message, Tool, ToolCall

# --- helpers ---------------------------------------------------------------------------------------------


def request(response_format: dict[str, Any] | None = None, tools: list[Tool] | None = None) -> ChatRequest:
    return ChatRequest(
        messages=[Message(role="user", content="question")],
        response_format=response_format,
        tools=tools or [],
    )


def response(
    content: str | None = "an answer",
    tool_calls: list[ToolCall] | None = None,
    finish_reason: Any = "stop",
) -> ChatResponse:
    return ChatResponse(
        id="resp-1", model="m", content=content, tool_calls=tool_calls or [], finish_reason=finish_reason
    )


async def judge(spec: str | dict[str, Any], req: ChatRequest, resp: ChatResponse) -> GateVerdict:
    gates = build_gates([GateSpec.model_validate(spec)])
    assert len(gates) == 1
    verdict = await gates[0].check(req, resp)
    assert isinstance(verdict, GateVerdict)
    return verdict


def assert_verdict(verdict: GateVerdict, gate: str, passed: bool, reason: str) -> None:
    """``reason`` is a regex that must be found (case-insensitively) in the verdict's reason."""
    assert verdict.gate == gate
    assert verdict.passed is passed, verdict.reason
    assert verdict.score == (1.0 if passed else 0.0)
    assert verdict.cost_usd == 0.0
    assert re.search(reason, verdict.reason, re.IGNORECASE), f"{reason!r} not in {verdict.reason!r}"


def json_schema_format(schema: Any) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


# --- not_empty -------------------------------------------------------------------------------------------

CALL = ToolCall(id="call-1", name="get_weather", arguments='{"city": "Paris"}')


@pytest.mark.parametrize(
    ("content", "tool_calls", "passed", "reason"),
    [
        ("Paris is the capital of France.", [], True, r"has content"),
        ("", [], False, r"empty"),
        (None, [], False, r"empty"),
        ("   \n\t  ", [], False, r"empty"),
        (None, [CALL], True, r"has content"),
        ("", [CALL], True, r"has content"),
    ],
    ids=["text", "empty-string", "none", "whitespace-only", "tool-calls-only", "empty-text-with-tool-calls"],
)
async def test_not_empty(content: str | None, tool_calls: list[ToolCall], passed: bool, reason: str) -> None:
    verdict = await judge("not_empty", request(), response(content, tool_calls))
    assert_verdict(verdict, "not_empty", passed, reason)


# --- not_truncated ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finish_reason", "passed", "reason"),
    [
        ("length", False, r"token limit"),
        ("stop", True, r"finished \(stop\)"),
        ("tool_calls", True, r"finished \(tool_calls\)"),
    ],
)
async def test_not_truncated(finish_reason: str, passed: bool, reason: str) -> None:
    verdict = await judge("not_truncated", request(), response("The list goes: 1, 2, 3", None, finish_reason))
    assert_verdict(verdict, "not_truncated", passed, reason)


# --- no_refusal ------------------------------------------------------------------------------------------

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I'm sorry, I can't assist with that request.",
    "I am sorry, but I cannot provide that information.",
    "As an AI language model, I cannot provide medical advice.",
    "I'm sorry, but as an AI language model, I cannot provide legal advice.",
    "I cannot comply with this request.",
    "I apologize, but I cannot fulfill this request.",
    "Sorry, I can't do that.",
    "I won't help with creating malware.",
    "  I am unable to assist with that.",
    "i can not answer that question.",
]

NOT_REFUSALS = [
    "Sure! Here is the summary. Note that I can't verify the figures in section 3.",
    "Sorry for the delay, here is the summary: revenue rose 4%.",
    "The function returns None because you can't mutate a tuple.",
    "Here's how to do it:\n1. Open the file\n2. I cannot stress enough: back it up first.",
    "",
]


@pytest.mark.parametrize("text", REFUSALS)
async def test_no_refusal_flags_refusal_openings(text: str) -> None:
    verdict = await judge("no_refusal", request(), response(text))
    assert_verdict(verdict, "no_refusal", False, r"refusal")


@pytest.mark.parametrize("text", NOT_REFUSALS)
async def test_no_refusal_passes_ordinary_answers(text: str) -> None:
    verdict = await judge("no_refusal", request(), response(text))
    assert_verdict(verdict, "no_refusal", True, r"no refusal")


async def test_no_refusal_flags_im_unable_to() -> None:
    verdict = await judge("no_refusal", request(), response("I'm unable to help with that request."))
    assert_verdict(verdict, "no_refusal", False, r"refusal")


async def test_no_refusal_flags_typographic_apostrophes() -> None:
    verdict = await judge("no_refusal", request(), response("I’m sorry, but I can’t help with that."))
    assert_verdict(verdict, "no_refusal", False, r"refusal")


async def test_no_refusal_passes_cant_help_but_idiom() -> None:
    text = "I can't help but notice the loop is off by one; here is the fix: use range(n)."
    verdict = await judge("no_refusal", request(), response(text))
    assert_verdict(verdict, "no_refusal", True, r"no refusal")


# --- json ------------------------------------------------------------------------------------------------

JSON_OBJECT = {"type": "json_object"}


@pytest.mark.parametrize(
    ("response_format", "content", "passed", "reason"),
    [
        (JSON_OBJECT, '{"name": "Ada", "age": 36}', True, r"valid JSON"),
        (JSON_OBJECT, "  [1, 2, 3]\n", True, r"valid JSON"),
        (JSON_OBJECT, '```json\n{"name": "Ada"}\n```', True, r"valid JSON"),
        (JSON_OBJECT, '```\n{"name": "Ada"}\n```', True, r"valid JSON"),
        (JSON_OBJECT, '{"name": "Ada",}', False, r"not valid JSON \(.+\)"),
        (JSON_OBJECT, "{'name': 'Ada'}", False, r"not valid JSON \(.+\)"),
        (JSON_OBJECT, "Sure! The name is Ada.", False, r"not valid JSON \(.+\)"),
        (JSON_OBJECT, '{"name": "Ada"', False, r"not valid JSON \(.+\)"),
        (JSON_OBJECT, "", False, r"not valid JSON \(.+\)"),
        (json_schema_format({"type": "object"}), '{"a": 1}', True, r"valid JSON"),
        (json_schema_format({"type": "object"}), "{a: 1}", False, r"not valid JSON"),
        (None, "not json at all", True, r"no JSON asked for"),
        ({"type": "text"}, "not json at all", True, r"no JSON asked for"),
    ],
    ids=[
        "object",
        "array-with-whitespace",
        "json-fence",
        "bare-fence",
        "trailing-comma",
        "single-quotes",
        "prose",
        "unterminated",
        "empty",
        "json_schema-type-valid",
        "json_schema-type-invalid",
        "no-response-format",
        "text-format",
    ],
)
async def test_json(response_format: dict[str, Any] | None, content: str, passed: bool, reason: str) -> None:
    verdict = await judge("json", request(response_format), response(content))
    assert_verdict(verdict, "json", passed, reason)


# --- json_schema -----------------------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("content", "passed", "reason"),
    [
        ('{"name": "Ada", "age": 36}', True, r"matches the schema"),
        ('{"name": "Ada", "age": 36, "tags": ["math"], "address": {"city": "London"}}', True, r"matches"),
        ('```json\n{"name": "Ada", "age": 36}\n```', True, r"matches the schema"),
        ('{"name": "Ada"}', False, r"does not match the schema: \(root\): 'age' is a required property"),
        ('{"name": "Ada", "age": "36"}', False, r"schema: age: '36' is not of type 'integer'"),
        ('{"name": "Ada", "age": -1}', False, r"age: -1 is less than the minimum of 0"),
        ('{"name": "Ada", "age": 36, "email": "a@b"}', False, r"\(root\): .*additional properties.*'email'"),
        ('{"name": "Ada", "age": 36, "tags": ["x", 2]}', False, r"tags/1: 2 is not of type 'string'"),
        ('{"name": "Ada", "age": 36, "address": {}}', False, r"address: 'city' is a required property"),
        ('["Ada", 36]', False, r"\(root\): .*is not of type 'object'"),
        ('{"name": "Ada", "age": 36', False, r"not valid JSON \(.+\)"),
    ],
    ids=[
        "valid",
        "valid-nested",
        "valid-fenced",
        "missing-required",
        "wrong-type",
        "below-minimum",
        "extra-property",
        "wrong-item-type",
        "nested-missing-required",
        "array-not-object",
        "invalid-json",
    ],
)
async def test_json_schema(content: str, passed: bool, reason: str) -> None:
    verdict = await judge("json_schema", request(json_schema_format(PERSON)), response(content))
    assert_verdict(verdict, "json_schema", passed, reason)


@pytest.mark.parametrize(
    "response_format",
    [
        None,
        {"type": "json_object"},
        {"type": "text"},
        {"type": "json_schema"},
        {"type": "json_schema", "json_schema": {"name": "x"}},
    ],
    ids=["none", "json_object", "text", "json_schema-without-body", "json_schema-without-schema"],
)
async def test_json_schema_not_applicable(response_format: dict[str, Any] | None) -> None:
    verdict = await judge("json_schema", request(response_format), response("not even JSON"))
    assert_verdict(verdict, "json_schema", True, r"no json_schema asked for")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "nonsense"},
        {"type": 12},
        {"type": "object", "properties": {"a": {"type": "bogus"}}},
        {"type": "object", "properties": {"a": {"minimum": "zero"}}},
        {"type": "object", "required": "a"},
    ],
    ids=["unknown-type", "type-not-string", "nested-unknown-type", "minimum-not-number", "required-not-list"],
)
async def test_json_schema_invalid_schema_fails_clearly(schema: dict[str, Any]) -> None:
    verdict = await judge("json_schema", request(json_schema_format(schema)), response('{"a": 1}'))
    assert_verdict(verdict, "json_schema", False, r"schema itself is invalid")


# --- tool_arguments --------------------------------------------------------------------------------------

WEATHER = Tool(
    name="get_weather",
    description="Current weather for a city",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer"},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
)
NO_PARAMS = Tool(name="get_time")


def call(name: str, arguments: str, id: str = "call-1") -> ToolCall:
    return ToolCall(id=id, name=name, arguments=arguments)


@pytest.mark.parametrize(
    ("calls", "passed", "reason"),
    [
        ([call("get_weather", '{"city": "Paris"}')], True, r"1 valid tool call"),
        ([call("get_weather", '{"city": "Paris", "unit": "c", "days": 3}')], True, r"1 valid tool call"),
        (
            [call("get_weather", '{"city": "Paris"}'), call("get_time", "", "call-2")],
            True,
            r"2 valid tool call",
        ),
        ([call("get_time", "")], True, r"1 valid tool call"),
        ([call("get_weather", "{city: Paris}")], False, r"get_weather: arguments are not valid JSON \(.+\)"),
        ([call("get_weather", '{"city": "Paris"')], False, r"get_weather: arguments are not valid JSON"),
        ([call("get_stock_price", '{"ticker": "ACME"}')], False, r"'get_stock_price', which was not offered"),
        ([call("get_weather", "{}")], False, r"get_weather: \(root\): 'city' is a required property"),
        (
            [call("get_weather", '{"city": 75001}')],
            False,
            r"get_weather: city: 75001 is not of type 'string'",
        ),
        (
            [call("get_weather", '{"city": "Paris", "unit": "k"}')],
            False,
            r"get_weather: unit: 'k' is not one of",
        ),
        (
            [call("get_weather", '{"city": "Paris", "days": "3"}')],
            False,
            r"get_weather: days: '3' is not of type",
        ),
        ([call("get_weather", '{"city": "Paris", "country": "FR"}')], False, r"get_weather: .*'country'"),
        (
            [call("get_weather", '{"city": "Paris"}'), call("send_email", "{}", "call-2")],
            False,
            r"'send_email', which was not offered",
        ),
    ],
    ids=[
        "valid",
        "valid-all-fields",
        "two-valid",
        "no-params-schema-empty-args",
        "args-not-json",
        "args-truncated",
        "tool-not-offered",
        "missing-required-field",
        "wrong-field-type",
        "enum-violation",
        "integer-as-string",
        "extra-field",
        "second-call-not-offered",
    ],
)
async def test_tool_arguments(calls: list[ToolCall], passed: bool, reason: str) -> None:
    verdict = await judge(
        "tool_arguments", request(tools=[WEATHER, NO_PARAMS]), response(None, calls, "tool_calls")
    )
    assert_verdict(verdict, "tool_arguments", passed, reason)


async def test_tool_arguments_with_no_tools_offered_fails_naming_the_tool() -> None:
    calls = [call("get_weather", '{"city": "Paris"}')]
    verdict = await judge("tool_arguments", request(), response(None, calls, "tool_calls"))
    assert_verdict(verdict, "tool_arguments", False, r"'get_weather', which was not offered")


@pytest.mark.parametrize("tools", [[WEATHER], []], ids=["tools-offered", "no-tools"])
async def test_tool_arguments_without_tool_calls_passes(tools: list[Tool]) -> None:
    verdict = await judge("tool_arguments", request(tools=tools), response("It is sunny in Paris."))
    assert_verdict(verdict, "tool_arguments", True, r"no tool calls")


# --- code_parses -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "passed", "reason"),
    [
        ("```python\ndef add(a, b):\n    return a + b\n```", True, r"1 Python block\(s\) parse"),
        (
            "Use this:\n```py\nprint('hi')\n```\nand this:\n```python3\nx = [1, 2]\n```",
            True,
            r"2 Python block",
        ),
        ("```Python\nimport os\n```", True, r"1 Python block"),
        ('```python title="demo.py"\nx = 1\n```', True, r"1 Python block"),
        (
            "```python\ndef add(a, b)\n    return a + b\n```",
            False,
            r"Python block 1 does not parse \(line 1: .+\)",
        ),
        (
            "```python\nx = 1\ny = 2\nz = = 3\n```",
            False,
            r"Python block 1 does not parse \(line 3: invalid syntax",
        ),
        (
            "```python\nok = 1\n```\ntext\n```python\n\nfor i in range(3)\n    pass\n```",
            False,
            r"Python block 2 .*line 2",
        ),
        ("```javascript\nfunction f( {\n```", True, r"no Python code blocks"),
        ("```\ndef broken(:\n```", True, r"no Python code blocks"),
        ("```js\nconst x = ;\n```\n```python\nx = 1\n```", True, r"1 Python block"),
        ("No code here, just def broken(: prose.", True, r"no Python code blocks"),
        ("", True, r"no Python code blocks"),
    ],
    ids=[
        "valid",
        "py-and-python3",
        "capitalised-language",
        "info-string-after-language",
        "missing-colon",
        "error-on-line-3",
        "second-block-broken",
        "javascript-not-checked",
        "unlabelled-fence-not-checked",
        "broken-js-valid-python",
        "no-fences",
        "empty",
    ],
)
async def test_code_parses(content: str, passed: bool, reason: str) -> None:
    verdict = await judge("code_parses", request(), response(content))
    assert_verdict(verdict, "code_parses", passed, reason)


async def test_code_parses_valid_code_with_invalid_escape_passes_quietly() -> None:
    content = "```python\nimport re\nDIGITS = re.compile('\\d+')\n```"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error", SyntaxWarning)
        verdict = await judge("code_parses", request(), response(content))
    assert_verdict(verdict, "code_parses", True, r"1 Python block")
    assert not caught


# --- regex -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "content", "passed", "reason"),
    [
        ({"must_match": r"\bAnswer:\s*\d+"}, "Work...\nAnswer: 42", True, r"patterns hold"),
        (
            {"must_match": r"\bAnswer:\s*\d+"},
            "The answer is forty-two.",
            False,
            r"does not match '\\\\bAnswer",
        ),
        ({"must_not_match": r"(?i)lorem ipsum"}, "A real answer.", True, r"patterns hold"),
        (
            {"must_not_match": r"(?i)lorem ipsum"},
            "Lorem Ipsum dolor sit amet",
            False,
            r"matches '\(\?i\)lorem ipsum'",
        ),
        ({"must_match": r"^\{", "must_not_match": "TODO"}, '{"a": 1}', True, r"patterns hold"),
        ({"must_match": r"^\{", "must_not_match": "TODO"}, '{"a": "TODO"}', False, r"matches 'TODO'"),
        ({"must_match": r"^\{", "must_not_match": "TODO"}, "TODO", False, r"does not match '\^"),
        ({}, "anything", True, r"patterns hold"),
    ],
    ids=[
        "must-match-hit",
        "must-match-miss",
        "must-not-match-clean",
        "must-not-match-hit",
        "both-hold",
        "both-forbidden-present",
        "both-required-missing",
        "no-patterns",
    ],
)
async def test_regex(spec: dict[str, Any], content: str, passed: bool, reason: str) -> None:
    verdict = await judge({"type": "regex", **spec}, request(), response(content))
    assert_verdict(verdict, "regex", passed, reason)


async def test_regex_with_no_content_and_must_match_fails() -> None:
    verdict = await judge({"type": "regex", "must_match": "."}, request(), response(None))
    assert_verdict(verdict, "regex", False, r"does not match '\.'")


# --- length ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "content", "passed", "reason"),
    [
        ({"min_chars": 5}, "hello", True, r"^5 characters$"),
        ({"min_chars": 5}, "hey", False, r"3 characters, fewer than 5"),
        ({"max_chars": 10}, "0123456789", True, r"^10 characters$"),
        ({"max_chars": 10}, "0123456789X", False, r"11 characters, more than 10"),
        ({"min_chars": 2, "max_chars": 4}, "abc", True, r"^3 characters$"),
        ({"min_chars": 2, "max_chars": 4}, "a", False, r"1 characters, fewer than 2"),
        ({"min_chars": 2, "max_chars": 4}, "abcde", False, r"5 characters, more than 4"),
        ({"min_chars": 1}, "", False, r"0 characters, fewer than 1"),
        ({"max_chars": 0}, "", True, r"^0 characters$"),
        ({}, "anything", True, r"^8 characters$"),
    ],
    ids=[
        "min-exact",
        "below-min",
        "max-exact",
        "above-max",
        "within-both",
        "below-both",
        "above-both",
        "empty-below-min",
        "empty-max-zero",
        "no-bounds",
    ],
)
async def test_length(spec: dict[str, Any], content: str, passed: bool, reason: str) -> None:
    verdict = await judge({"type": "length", **spec}, request(), response(content))
    assert_verdict(verdict, "length", passed, reason)


async def test_length_counts_no_content_as_zero() -> None:
    verdict = await judge({"type": "length", "min_chars": 1}, request(), response(None))
    assert_verdict(verdict, "length", False, r"0 characters, fewer than 1")


# --- GateSpec and build_gates ----------------------------------------------------------------------------

ALL_TYPES = [
    "not_empty",
    "not_truncated",
    "no_refusal",
    "json",
    "json_schema",
    "tool_arguments",
    "code_parses",
    "regex",
    "length",
]


@pytest.mark.parametrize("name", ALL_TYPES)
def test_bare_string_spec(name: str) -> None:
    spec = GateSpec.model_validate(name)
    assert spec.type == name
    assert spec == GateSpec.model_validate({"type": name})
    (gate,) = build_gates([spec])
    assert gate.name == name


def test_build_gates_keeps_order_and_count() -> None:
    gates = build_gates([GateSpec.model_validate(name) for name in ALL_TYPES])
    assert [g.name for g in gates] == ALL_TYPES
    assert build_gates([]) == []


async def test_every_gate_passes_a_plain_answer() -> None:
    gates = build_gates([GateSpec.model_validate(name) for name in ALL_TYPES])
    plain = response("Paris is the capital of France.")
    verdicts = [await g.check(request(), plain) for g in gates]
    assert [(v.gate, v.passed, v.score) for v in verdicts] == [(name, True, 1.0) for name in ALL_TYPES]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "regex", "must_match": "(unclosed"}, r"must_match: not a valid regular expression"),
        (
            {"type": "regex", "must_match": "ok", "must_not_match": "[z-a]"},
            r"must_not_match: not a valid regular",
        ),
        ({"type": "regex", "must_match": "*oops"}, r"must_match: not a valid regular expression \(.+\)"),
        ("llm_judge", r"type"),
        ({"type": "spellcheck"}, r"type"),
        ({}, r"type"),
        ({"type": "length", "min_chars": -1}, r"min_chars"),
        ({"type": "length", "max_chars": -5}, r"max_chars"),
        ({"type": "not_empty", "weight": 0.5}, r"weight"),
    ],
    ids=[
        "bad-must-match",
        "bad-must-not-match",
        "bad-must-match-quantifier",
        "unknown-bare-name",
        "unknown-type",
        "missing-type",
        "negative-min-chars",
        "negative-max-chars",
        "unknown-field",
    ],
)
def test_gate_spec_rejects(spec: Any, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        GateSpec.model_validate(spec)


def test_verdict_to_dict() -> None:
    verdict = GateVerdict("length", False, 0.0, "3 characters, fewer than 5")
    assert verdict.to_dict() == {
        "gate": "length",
        "passed": False,
        "score": 0.0,
        "reason": "3 characters, fewer than 5",
        "cost_usd": 0.0,
    }
