"""Routing eval sets: JSONL, one prompt a line, with what each model answered and how well.

    {"id": "...", "category": "...", "messages": [{"role": "user", "content": "..."}],
     "outcomes": {"model-a": {"score": 1.0, "cost_usd": 0.0001, "response": "...",
                              "input_tokens": 12, "output_tokens": 3}, ...}}

Files are read line by line (they may hold 100k+ prompts). A bad line stops the load with the file, the line
number and the field; ``skip_invalid`` reports it and goes on instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import orjson

from tierwise.errors import TierwiseError

ROLES = ("system", "developer", "user", "assistant", "tool")


class DatasetError(TierwiseError):
    """A routing eval set line is malformed; the message names the file, line and field."""


@dataclass(slots=True, frozen=True)
class Outcome:
    score: float
    cost_usd: float | None
    response: str | None
    input_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(slots=True)
class EvalRecord:
    id: str
    category: str
    messages: list[dict[str, Any]]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    ideal_tier: str | None = None
    ideal_output: str | None = None


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_outcome(name: str, raw: Any) -> Outcome:
    where = f"outcomes.{name}"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object, got {type(raw).__name__}")
    score = raw.get("score")
    if not _number(score) or not 0 <= score <= 1:
        raise ValueError(f"{where}.score must be a number in [0, 1], got {orjson.dumps(score).decode()}")
    cost = raw.get("cost_usd")
    if cost is not None and (not _number(cost) or cost < 0):
        raise ValueError(f"{where}.cost_usd must be a number >= 0, got {orjson.dumps(cost).decode()}")
    response = raw.get("response")
    if response is not None and not isinstance(response, str):
        raise ValueError(f"{where}.response must be a string or null, got {type(response).__name__}")
    tokens = []
    for key in ("input_tokens", "output_tokens"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise ValueError(f"{where}.{key} must be a whole number >= 0, got {orjson.dumps(value).decode()}")
        tokens.append(value)
    return Outcome(
        float(score),
        None if cost is None else float(cost),
        response,
        tokens[0],
        tokens[1],
    )


def parse_record(data: Any) -> EvalRecord:
    """Validate one decoded line; raises ValueError naming the field."""
    if not isinstance(data, dict):
        raise ValueError(f"a line must be a JSON object, got {type(data).__name__}")
    rid = data.get("id")
    if not isinstance(rid, str | int) or isinstance(rid, bool) or rid == "":
        raise ValueError("id must be a non-empty string")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"messages[{i}] must be an object")
        if m.get("role") not in ROLES:
            raise ValueError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {m.get('role')!r}")
        if not isinstance(m.get("content"), str | list):
            raise ValueError(f"messages[{i}].content must be a string or a list of parts")
    raw_outcomes = data.get("outcomes")
    ideal_tier = data.get("ideal_tier")
    if raw_outcomes is None and ideal_tier is None:
        raise ValueError("a record needs outcomes, or an ideal_tier label")
    if raw_outcomes is not None and not isinstance(raw_outcomes, dict):
        raise ValueError("outcomes must be an object keyed by model name")
    if ideal_tier is not None and not isinstance(ideal_tier, str):
        raise ValueError("ideal_tier must be a string")
    ideal_output = data.get("ideal_output")
    if ideal_output is not None and not isinstance(ideal_output, str):
        raise ValueError("ideal_output must be a string")
    category = data.get("category", "")
    if not isinstance(category, str):
        raise ValueError("category must be a string")
    outcomes = {str(k): _parse_outcome(str(k), v) for k, v in (raw_outcomes or {}).items()}
    return EvalRecord(str(rid), category, messages, outcomes, ideal_tier, ideal_output)


def iter_records(
    path: str | Path,
    *,
    skip_invalid: bool = False,
    on_skip: Callable[[str], None] | None = None,
) -> Iterator[EvalRecord]:
    """Stream a routing eval set, validating each line."""
    p = Path(path)
    try:
        handle = p.open("rb")
    except OSError as exc:
        raise DatasetError(f"{p}: cannot open ({exc.strerror})") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = parse_record(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                message = f"{p}: line {number}: not valid JSON ({exc})"
            except ValueError as exc:
                message = f"{p}: line {number}: {exc}"
            else:
                yield record
                continue
            if not skip_invalid:
                raise DatasetError(message)
            if on_skip is not None:
                on_skip(message)


def load_records(path: str | Path, *, skip_invalid: bool = False) -> list[EvalRecord]:
    return list(iter_records(path, skip_invalid=skip_invalid))
