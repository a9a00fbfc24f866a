"""The replay provider: recorded answers for recorded prompts, the nearest record for new ones."""

from __future__ import annotations

from typing import Any

import pytest

from tierwise.config import ReplayProviderConfig
from tierwise.errors import UpstreamError
from tierwise.evals.dataset import parse_record
from tierwise.features import estimate_input_tokens
from tierwise.messages import ChatRequest, Message, StreamDelta
from tierwise.providers.replay import ReplayIndex, ReplayProvider, load_replay_set

LONG_ANSWER = (
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make "
    "glucose and release oxygen. It happens mostly in the chloroplasts of leaf cells."
)

RECORDS: list[dict[str, Any]] = [
    {
        "id": "capital",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "outcomes": {
            "small": {
                "score": 1,
                "cost_usd": 0.00001,
                "response": "Paris.",
                "input_tokens": 14,
                "output_tokens": 2,
            },
            "large": {"score": 1, "cost_usd": 0.0003, "response": "The capital of France is Paris."},
        },
    },
    {
        "id": "photosynthesis",
        "messages": [
            {"role": "system", "content": "You are a biology tutor."},
            {
                "role": "user",
                "content": "Explain how photosynthesis works in green plants, in two sentences.",
            },
        ],
        "outcomes": {
            "small": {"score": 0.5, "cost_usd": 0.00004, "response": "Plants eat light."},
            "large": {
                "score": 1,
                "cost_usd": 0.002,
                "response": LONG_ANSWER,
                "input_tokens": 30,
                "output_tokens": 40,
            },
        },
    },
    {
        "id": "sorting",
        "messages": [{"role": "user", "content": "Write a Python function that sorts a list of numbers."}],
        "outcomes": {
            "small": {"score": 0.8, "cost_usd": 0.00005, "response": "def f(xs): return sorted(xs)"},
            "large": {
                "score": 1,
                "cost_usd": 0.001,
                "response": "def sort_numbers(xs):\n    return sorted(xs)",
            },
        },
    },
    {
        "id": "haiku",
        "messages": [{"role": "user", "content": "Write a haiku about the sea at night under a full moon."}],
        "outcomes": {
            "small": {"score": 0.7, "cost_usd": 0.00002, "response": "Moonlit waves whisper"},
            "large": {"score": 0.9, "cost_usd": 0.0005, "response": "Silver on black water"},
        },
    },
]


def user(text: str, **fields: Any) -> ChatRequest:
    return ChatRequest(messages=[Message(role="user", content=text)], **fields)


@pytest.fixture
def provider() -> ReplayProvider:
    index = ReplayIndex([parse_record(r) for r in RECORDS])
    return ReplayProvider("replay", ReplayProviderConfig(type="replay"), index=index)


async def test_exact_match_returns_the_recording(provider: ReplayProvider) -> None:
    result = await provider.complete(user("What is the capital of France?"), "small", timeout=5)
    assert result.response.content == "Paris."
    assert result.response.finish_reason == "stop"
    assert result.response.model == "small"
    assert (result.response.usage.input_tokens, result.response.usage.output_tokens) == (14, 2)
    assert result.cost_usd == pytest.approx(0.00001)
    assert result.meta == {"replay-match": "exact", "replay-id": "capital"}


async def test_exact_match_covers_the_whole_conversation(provider: ReplayProvider) -> None:
    req = ChatRequest(
        messages=[
            Message(role="system", content="You are a biology tutor."),
            Message(
                role="user", content="Explain how photosynthesis works in green plants,\n  in two sentences. "
            ),
        ]
    )
    result = await provider.complete(req, "large", timeout=5)
    # whitespace differences do not matter
    assert result.meta["replay-match"] == "exact"
    assert result.response.content == LONG_ANSWER
    assert (result.response.usage.input_tokens, result.response.usage.output_tokens) == (30, 40)
    assert result.cost_usd == pytest.approx(0.002)


async def test_same_prompt_without_its_system_message_is_not_exact(provider: ReplayProvider) -> None:
    req = user("Explain how photosynthesis works in green plants, in two sentences.")
    result = await provider.complete(req, "large", timeout=5)
    assert result.meta["replay-match"] == "nearest"
    assert result.meta["replay-id"] == "photosynthesis"


async def test_recorded_answer_without_token_counts_is_estimated(provider: ReplayProvider) -> None:
    req = user("What is the capital of France?")
    result = await provider.complete(req, "large", timeout=5)
    assert result.response.content == "The capital of France is Paris."
    assert result.response.usage.input_tokens == estimate_input_tokens(req)
    assert result.response.usage.output_tokens == 8  # 31 characters / 4, rounded up


async def test_unseen_prompt_gets_the_nearest_answer(provider: ReplayProvider) -> None:
    result = await provider.complete(
        user("Sort these numbers for me with a Python function: 5, 3, 9"), "large", timeout=5
    )
    assert result.meta["replay-match"] == "nearest"
    assert result.meta["replay-id"] == "sorting"
    similarity = float(result.meta["replay-similarity"])
    assert 0 < similarity < 1
    assert result.response.content == "def sort_numbers(xs):\n    return sorted(xs)"
    # a nearest answer's recorded cost belongs to another prompt: it is priced from usage instead
    assert result.cost_usd is None


@pytest.mark.parametrize(
    ("prompt", "record"),
    [
        ("What is the capital city of France?", "capital"),
        ("Tell me the capital of France", "capital"),
        ("Write a haiku about the ocean at night under a full moon.", "haiku"),
        ("Write a Python function that sorts a list of strings.", "sorting"),
        ("Explain how photosynthesis works in plants, in three sentences.", "photosynthesis"),
    ],
)
async def test_a_paraphrase_finds_its_record(provider: ReplayProvider, prompt: str, record: str) -> None:
    result = await provider.complete(user(prompt), "small", timeout=5)
    assert (result.meta["replay-match"], result.meta["replay-id"]) == ("nearest", record)
    assert float(result.meta["replay-similarity"]) > 0.5


async def test_a_prompt_sharing_no_word_still_gets_an_answer(provider: ReplayProvider) -> None:
    result = await provider.complete(user("zxqv plorp"), "small", timeout=5)
    assert result.meta["replay-match"] == "nearest"
    assert result.meta["replay-similarity"] == "0.000"
    assert result.response.content


async def test_max_tokens_truncates_with_finish_reason_length(provider: ReplayProvider) -> None:
    req = ChatRequest(
        messages=[
            Message(role="system", content="You are a biology tutor."),
            Message(
                role="user", content="Explain how photosynthesis works in green plants, in two sentences."
            ),
        ],
        max_tokens=5,
    )
    result = await provider.complete(req, "large", timeout=5)
    assert result.response.finish_reason == "length"
    assert result.response.usage.output_tokens == 5
    assert result.response.content == LONG_ANSWER[:20]
    # the recorded cost was for the whole answer
    assert result.cost_usd is None


async def test_max_tokens_above_the_answer_changes_nothing(provider: ReplayProvider) -> None:
    result = await provider.complete(
        user("What is the capital of France?", max_tokens=100), "small", timeout=5
    )
    assert (result.response.finish_reason, result.response.content) == ("stop", "Paris.")
    assert result.cost_usd == pytest.approx(0.00001)


async def test_unknown_model_is_an_upstream_error(provider: ReplayProvider) -> None:
    with pytest.raises(UpstreamError) as caught:
        await provider.complete(user("What is the capital of France?"), "gpt-9", timeout=5)
    assert caught.value.status == 404
    assert caught.value.retryable is False
    assert "'gpt-9'" in caught.value.message


async def test_streaming_unknown_model_is_an_upstream_error(provider: ReplayProvider) -> None:
    with pytest.raises(UpstreamError):
        await provider.stream(user("What is the capital of France?"), "gpt-9", timeout=5)


async def test_streaming_yields_the_same_text_in_pieces(provider: ReplayProvider) -> None:
    req = ChatRequest(
        messages=[
            Message(role="system", content="You are a biology tutor."),
            Message(
                role="user", content="Explain how photosynthesis works in green plants, in two sentences."
            ),
        ]
    )
    complete = await provider.complete(req, "large", timeout=5)
    stream = await provider.stream(req, "large", timeout=5)
    deltas: list[StreamDelta] = [d async for d in stream]
    await stream.aclose()
    pieces = [d.content for d in deltas[:-1]]
    assert len(pieces) > 1
    assert all(pieces)
    assert "".join(p or "" for p in pieces) == complete.response.content
    assert all(d.usage is None and d.finish_reason is None for d in deltas[:-1])
    final = deltas[-1]
    assert final.content is None
    assert final.finish_reason == "stop"
    assert final.usage == complete.response.usage
    assert stream.meta == {"replay-match": "exact", "replay-id": "photosynthesis"}
    assert stream.cost_usd == pytest.approx(0.002)


async def test_streaming_a_truncated_answer_ends_with_length(provider: ReplayProvider) -> None:
    stream = await provider.stream(
        user("Explain how photosynthesis works in plants, please.", max_tokens=3), "large", timeout=5
    )
    deltas = [d async for d in stream]
    assert "".join(d.content or "" for d in deltas) == LONG_ANSWER[:12]
    assert deltas[-1].finish_reason == "length"
    assert deltas[-1].usage is not None
    assert deltas[-1].usage.output_tokens == 3


async def test_builtin_set_replays_a_recorded_prompt() -> None:
    records = load_replay_set("builtin:arena-demo")
    replay = ReplayProvider("demo", ReplayProviderConfig(type="replay"))
    record = records[5]
    req = ChatRequest(messages=[Message(role=m["role"], content=m["content"]) for m in record.messages])
    result = await replay.complete(req, "gpt-4-1106-preview", timeout=5)
    outcome = record.outcomes["gpt-4-1106-preview"]
    assert result.meta == {"replay-match": "exact", "replay-id": record.id}
    assert result.response.content == outcome.response
    assert result.cost_usd == outcome.cost_usd


def test_an_empty_replay_set_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one record"):
        ReplayIndex([])
