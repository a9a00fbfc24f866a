"""Routing eval sets: the JSONL loader accepts good files and names the line and field of a bad one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tierwise.evals.dataset import DatasetError, iter_records, load_records
from tierwise.providers.replay import load_replay_set


def good(rid: Any = "r1", **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": rid,
        "category": "math",
        "messages": [{"role": "user", "content": "What is 2 + 2?"}],
        "outcomes": {
            "gpt-4o": {
                "score": 1.0,
                "cost_usd": 0.0002,
                "response": "4",
                "input_tokens": 14,
                "output_tokens": 1,
            },
            "small-model": {"score": 0, "cost_usd": None, "response": None},
        },
    }
    record.update(changes)
    return record


def write(tmp_path: Path, *lines: Any) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n",
        encoding="utf-8",
    )
    return path


def with_outcome(**fields: Any) -> dict[str, Any]:
    outcome: dict[str, Any] = {"score": 0.5, **fields}
    return good("bad", outcomes={"gpt-4o": outcome})


def test_a_good_file_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        good("r1"),
        "",
        good(
            "r2",
            category="chat",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
                {"role": "assistant", "content": "Hi!"},
                {"role": "user", "content": "Bye"},
            ],
            ideal_output="Goodbye!",
        ),
        good(7),
    )
    records = load_records(path)
    assert [r.id for r in records] == ["r1", "r2", "7"]
    first = records[0]
    assert first.category == "math"
    assert first.messages == [{"role": "user", "content": "What is 2 + 2?"}]
    gpt = first.outcomes["gpt-4o"]
    assert (gpt.score, gpt.cost_usd, gpt.response, gpt.input_tokens, gpt.output_tokens) == (
        1.0,
        0.0002,
        "4",
        14,
        1,
    )
    small = first.outcomes["small-model"]
    assert (small.score, small.cost_usd, small.response, small.input_tokens) == (0.0, None, None, None)
    assert records[1].ideal_output == "Goodbye!"
    assert len(records[1].messages) == 4


def test_ideal_tier_only_records_are_accepted(tmp_path: Path) -> None:
    record = good("labelled", ideal_tier="cheap")
    del record["outcomes"]
    (loaded,) = load_records(write(tmp_path, record))
    assert loaded.ideal_tier == "cheap"
    assert loaded.outcomes == {}


def test_category_is_optional(tmp_path: Path) -> None:
    record = good()
    del record["category"]
    assert load_records(write(tmp_path, record))[0].category == ""


BAD_LINES = {
    "not JSON": ('{"id": "x", "messages": [', "not valid JSON"),
    "not an object": ([1, 2, 3], "a line must be a JSON object, got list"),
    "missing id": ({k: v for k, v in good().items() if k != "id"}, "id must be a non-empty string"),
    "empty id": (good(""), "id must be a non-empty string"),
    "boolean id": (good(True), "id must be a non-empty string"),
    "no messages": (good(messages=[]), "messages must be a non-empty list"),
    "messages not a list": (good(messages="hi"), "messages must be a non-empty list"),
    "message not an object": (good(messages=["hi"]), "messages[0] must be an object"),
    "bad role": (
        good(messages=[{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]),
        "messages[1].role must be one of system, developer, user, assistant, tool, got 'robot'",
    ),
    "bad content": (
        good(messages=[{"role": "user", "content": 5}]),
        "messages[0].content must be a string or a list of parts",
    ),
    "neither outcomes nor ideal_tier": (
        {"id": "x", "messages": [{"role": "user", "content": "a"}]},
        "a record needs outcomes, or an ideal_tier label",
    ),
    "outcomes not an object": (good(outcomes=[1]), "outcomes must be an object keyed by model name"),
    "ideal_tier not a string": (good(ideal_tier=2), "ideal_tier must be a string"),
    "ideal_output not a string": (good(ideal_output=["x"]), "ideal_output must be a string"),
    "category not a string": (good(category=3), "category must be a string"),
    "outcome not an object": (good(outcomes={"gpt-4o": 0.5}), "outcomes.gpt-4o must be an object, got float"),
    "score a word": (
        good(outcomes={"gpt-4o": {"score": "high"}}),
        'outcomes.gpt-4o.score must be a number in [0, 1], got "high"',
    ),
    "score missing": (
        good(outcomes={"gpt-4o": {}}),
        "outcomes.gpt-4o.score must be a number in [0, 1], got null",
    ),
    "score above 1": (with_outcome(score=1.5), "outcomes.gpt-4o.score must be a number in [0, 1], got 1.5"),
    "score negative": (
        with_outcome(score=-0.1),
        "outcomes.gpt-4o.score must be a number in [0, 1], got -0.1",
    ),
    "score boolean": (with_outcome(score=True), "outcomes.gpt-4o.score must be a number in [0, 1], got true"),
    "negative cost": (with_outcome(cost_usd=-1), "outcomes.gpt-4o.cost_usd must be a number >= 0, got -1"),
    "cost a string": (
        with_outcome(cost_usd="$1"),
        'outcomes.gpt-4o.cost_usd must be a number >= 0, got "$1"',
    ),
    "response not a string": (
        with_outcome(response=5),
        "outcomes.gpt-4o.response must be a string or null, got int",
    ),
    "negative input tokens": (
        with_outcome(input_tokens=-3),
        "outcomes.gpt-4o.input_tokens must be a whole number >= 0, got -3",
    ),
    "fractional output tokens": (
        with_outcome(output_tokens=1.5),
        "outcomes.gpt-4o.output_tokens must be a whole number >= 0, got 1.5",
    ),
}


@pytest.mark.parametrize(("line", "message"), BAD_LINES.values(), ids=BAD_LINES.keys())
def test_a_bad_line_stops_the_load_naming_line_and_field(tmp_path: Path, line: Any, message: str) -> None:
    path = write(tmp_path, good("r1"), good("r2"), line, good("r4"))
    with pytest.raises(DatasetError) as caught:
        load_records(path)
    assert str(caught.value).startswith(f"{path}: line 3: {message}")


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path, good("r1"), "", "", good(outcomes={"gpt-4o": {"score": "high"}}))
    with pytest.raises(DatasetError, match=r": line 4: outcomes\.gpt-4o\.score"):
        load_records(path)


def test_records_before_a_bad_line_are_yielded_first(tmp_path: Path) -> None:
    path = write(tmp_path, good("r1"), [1], good("r3"))
    seen = []
    with pytest.raises(DatasetError, match="line 2"):
        for record in iter_records(path):
            seen.append(record.id)
    assert seen == ["r1"]


def test_skip_invalid_reports_and_skips(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        good("r1"),
        good("r2", outcomes={"gpt-4o": {"score": "high"}}),
        "{oops",
        good("r4"),
    )
    skipped: list[str] = []
    records = list(iter_records(path, skip_invalid=True, on_skip=skipped.append))
    assert [r.id for r in records] == ["r1", "r4"]
    assert len(skipped) == 2
    assert skipped[0] == f'{path}: line 2: outcomes.gpt-4o.score must be a number in [0, 1], got "high"'
    assert skipped[1].startswith(f"{path}: line 3: not valid JSON")


def test_skip_invalid_without_a_reporter(tmp_path: Path) -> None:
    path = write(tmp_path, [1], good("r2"))
    assert [r.id for r in load_records(path, skip_invalid=True)] == ["r2"]


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.jsonl"
    with pytest.raises(DatasetError, match="cannot open"):
        load_records(path)


def test_builtin_arena_demo_loads() -> None:
    records = load_replay_set("builtin:arena-demo")
    assert len(records) == 240
    assert len({r.id for r in records}) == 240
    models = {"Mistral-7B-Instruct-v0.1", "Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"}
    for record in records:
        assert models <= set(record.outcomes)
        assert record.messages[-1]["role"] == "user"
        for outcome in record.outcomes.values():
            assert 0 <= outcome.score <= 1
