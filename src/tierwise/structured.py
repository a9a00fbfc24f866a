"""Reading a model's structured (JSON) answer, as the LLM classifier and the critique gate ask for one."""

from __future__ import annotations

from typing import Any

import orjson


def json_object(text: str) -> dict[str, Any]:
    """The JSON object in a model's answer: prose or a code fence around it is tolerated (the first ``{`` to
    the last ``}``, as the LLM classifier reads its model). ValueError names what is wrong."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the answer")
    try:
        data = orjson.loads(text[start : end + 1])
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("the answer is not a JSON object")
    return data
