"""``parse_chunk``: an upstream's chat.completion.chunk, including the usage-only one that ends a stream,
whether its ``choices`` is empty, null or missing."""

from __future__ import annotations

from typing import Any

import pytest

from tierwise.wire.openai import parse_chunk

USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


@pytest.mark.parametrize(
    "chunk",
    [
        {"id": "c", "choices": [], "usage": USAGE},
        {"id": "c", "choices": None, "usage": USAGE},
        {"id": "c", "usage": USAGE},
    ],
)
def test_a_usage_only_chunk_is_read(chunk: dict[str, Any]) -> None:
    delta = parse_chunk(chunk)
    assert delta.usage is not None
    assert (delta.usage.input_tokens, delta.usage.output_tokens) == (12, 3)
    assert delta.content is None and delta.tool_calls == [] and delta.finish_reason is None


def test_a_content_chunk_is_read() -> None:
    delta = parse_chunk({"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]})
    assert delta.content == "hi" and delta.usage is None and delta.finish_reason == "stop"


@pytest.mark.parametrize(
    "chunk",
    [{"id": "c"}, {"id": "c", "choices": None}, {"choices": "x", "usage": USAGE}, {"usage": None}],
)
def test_a_chunk_with_neither_choices_nor_usage_is_refused(chunk: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="without a choices list"):
        parse_chunk(chunk)


def test_an_empty_redacted_thinking_block_is_kept_when_streamed() -> None:
    from tierwise.messages import StreamAccumulator, StreamDelta

    acc = StreamAccumulator(id="m", model="x")
    acc.add(StreamDelta(redacted_thinking=""))
    acc.add(StreamDelta(content="hi"))
    assert acc.response().thinking == [{"type": "redacted_thinking", "data": ""}]
