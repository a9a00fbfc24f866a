"""The grounding gate against crafted requests and answers: which documents it finds, which citations it
accepts, and how much of an answer the documents support."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tierwise.config import GateSpec
from tierwise.gates import GateVerdict, build_gates
from tierwise.gates.grounding import content_words, sources
from tierwise.messages import ChatRequest, ChatResponse, Document, Message, ToolCall

DOCS = [
    Document("doc1", "Paris is the capital of France. It has about 2.1 million inhabitants.", "Paris facts"),
    Document("doc2", "The Eiffel Tower was completed in 1889 for the World's Fair held in Paris."),
]
GROUNDED = "Paris is the capital of France [doc1]. The Eiffel Tower was completed in 1889 [doc2]."


def request(documents: list[Document] | None = None, system: str | None = None) -> ChatRequest:
    messages = [Message("system", system)] if system is not None else []
    return ChatRequest(
        messages=[*messages, Message("user", "Tell me about Paris.")], documents=documents or []
    )


async def judge(
    answer: str | None,
    req: ChatRequest | None = None,
    threshold: float = 0.5,
    tool_calls: list[ToolCall] | None = None,
) -> GateVerdict:
    [gate] = build_gates([GateSpec.model_validate({"type": "grounding", "threshold": threshold})])
    assert gate.name == "grounding"
    response = ChatResponse(id="r", model="m", content=answer, tool_calls=tool_calls or [])
    verdict = await gate.check(req if req is not None else request(DOCS), response)
    assert verdict.gate == "grounding" and verdict.cost_usd == 0.0
    return verdict


def assert_verdict(verdict: GateVerdict, passed: bool, score: float, reason: str) -> None:
    assert verdict.passed is passed, verdict.reason
    assert verdict.score == pytest.approx(score)
    assert re.search(reason, verdict.reason), f"{reason!r} not in {verdict.reason!r}"


# --- when it does not apply ------------------------------------------------------------------------------


async def test_no_documents_passes_as_not_applicable() -> None:
    verdict = await judge("Anything at all [doc9], unsupported by anything.", request())
    assert_verdict(verdict, True, 1.0, r"no documents to ground on")


async def test_tagged_blocks_in_user_messages_are_not_documents() -> None:
    req = ChatRequest(messages=[Message("user", '<document id="u1">Paris is big.</document> Tell me.')])
    assert sources(req) == []
    assert_verdict(await judge("Bananas are yellow fruit [u1].", req), True, 1.0, r"no documents")


async def test_an_answer_without_text_passes() -> None:
    call = ToolCall("c1", "search", '{"q": "Paris"}')
    assert_verdict(await judge(None, tool_calls=[call]), True, 1.0, r"no text to check")


async def test_no_substantive_sentences() -> None:
    assert_verdict(await judge("Sure! Here it is:"), True, 1.0, r"no substantive sentences")


# --- citations -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        GROUNDED,
        "Paris is the capital of France [doc:doc1]. The Eiffel Tower was completed in 1889 [source: doc2].",
        "Paris is the capital of France (source: doc1). The Eiffel Tower was completed in 1889 (Source: DOC2).",
        "Paris is the capital of France and the Eiffel Tower was completed in 1889 (sources: doc1, doc2).",
        "Paris is the capital of France [1]. The Eiffel Tower was completed in 1889 [2].",
        "Paris is the capital of France, and the Eiffel Tower was completed in 1889 [1, 2].",
        "Paris is the capital of France, and the Eiffel Tower was completed in 1889 [1][2].",
        "Paris is the capital of France, and the Eiffel Tower was completed in 1889 [1-2].",
        "Paris is the capital of France, and the Eiffel Tower was completed in 1889 [doc:doc1; doc:doc2].",
        "Paris is the capital of France (source: Paris facts).",
        "Paris is the capital of France[1].",
    ],
    ids=[
        "brackets",
        "prefixed",
        "source-parens-any-case",
        "sources-list",
        "numeric-positions",
        "bracket-list",
        "adjacent",
        "range",
        "prefixed-list",
        "by-title",
        "glued-to-word",
    ],
)
async def test_valid_citations_pass(answer: str) -> None:
    assert_verdict(await judge(answer), True, 1.0, r"sentences supported")


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        ("Paris is the capital of France [doc3].", "'doc3'"),
        ("Paris is the capital of France [doc:wikipedia].", "'wikipedia'"),
        ("Paris is the capital of France (source: Britannica).", "'Britannica'"),
        ("Paris is the capital of France [3].", "'3'"),
        ("Paris is the capital of France [1, 4].", "'4'"),
        ("Paris is the capital of France [1-5].", "'3', '4', '5'"),
        ("Paris is the capital of France [0].", "'0'"),
        ("Paris is the capital of France [DOC7].", "'DOC7'"),
    ],
    ids=["unknown-id", "prefixed", "source-parens", "past-the-end", "in-a-list", "range", "zero", "shape"],
)
async def test_an_unknown_citation_fails(answer: str, named: str) -> None:
    verdict = await judge(answer)
    assert_verdict(verdict, False, 0.0, rf"cites {named}, not among the 2 document\(s\)")


async def test_numbers_are_ids_when_ids_are_numbers() -> None:
    docs = [
        Document("10", "Paris is the capital of France."),
        Document("20", "Rome is the capital of Italy."),
    ]
    req = request(docs)
    assert_verdict(await judge("Paris is the capital of France [10].", req), True, 1.0, r"1/1")
    assert_verdict(await judge("Paris is the capital of France [1].", req), False, 0.0, r"cites '1'")


@pytest.mark.parametrize(
    "answer",
    [
        "- [x] Paris is the capital of France.\n- [ ] Check the population.",
        "Paris is the capital of France, see [the guide](https://example.com/doc9).",
        "Paris is the capital of France [see below].\n\n[9]: https://example.com",
        "Paris is the capital of France; in code `cities[7]` holds it.",
        "Paris is the capital of France.\n```python\nprint(cities[42])\n```",
        "Dear [Name], Paris is the capital of France.",
    ],
    ids=["task-list", "markdown-link", "link-definition", "inline-code", "code-block", "placeholder"],
)
async def test_brackets_that_are_not_citations(answer: str) -> None:
    assert (await judge(answer)).passed


# --- support ---------------------------------------------------------------------------------------------


async def test_unsupported_claims_fail_with_their_share() -> None:
    answer = (
        "Paris is the capital of France [doc1]. Bananas grow on tall herbaceous plants in tropical regions. "
        "Quantum computers factor large integers with Shor's algorithm."
    )
    verdict = await judge(answer)
    assert_verdict(verdict, False, 1 / 3, r"^1/3 sentences supported by the documents, below 0.5$")


async def test_the_threshold_decides() -> None:
    answer = "Paris is the capital of France. Bananas grow on tall herbaceous plants in tropical regions."
    assert_verdict(await judge(answer, threshold=0.5), True, 0.5, r"^1/2 sentences supported")
    assert_verdict(await judge(answer, threshold=0.8), False, 0.5, r"1/2 .*below 0.8")


async def test_paraphrase_with_other_word_forms_is_supported() -> None:
    docs = [Document("r", "Quarterly revenue increased 12% as subscriptions grew in Europe.")]
    answer = "Revenues increase by 12 percent, with subscription growth in Europe."
    assert_verdict(await judge(answer, request(docs)), True, 1.0, r"1/1")


async def test_lines_and_bullets_are_sentences() -> None:
    answer = (
        "Key facts:\n- Paris has about 2.1 million inhabitants\n- Penguins live mostly in Antarctica waters"
    )
    assert_verdict(await judge(answer, threshold=0.6), False, 0.5, r"1/2")


def test_content_words() -> None:
    assert content_words("The revenues INCREASED; it increases, and it's increasing!") == {
        "revenu",
        "increas",
    }
    assert content_words("boxes box matches match studies study") == {"box", "match", "study"}


# --- tagged system blocks --------------------------------------------------------------------------------

SYSTEM = (
    "Answer from these documents only.\n"
    '<document id="policy" title="Refund policy">Refunds are issued within 30 days of purchase.</document>\n'
    "<doc id=faq>Shipping takes five business days within the country.</doc>\n"
    "<DOC title='Returns'>Returned items must be unused and in their original packaging.</DOC>"
)


def test_sources_from_the_field_then_tagged_blocks() -> None:
    req = request([Document("k1", "Field document.", "Field")], SYSTEM)
    found = [(s.position, s.id, s.title, s.text) for s in sources(req)]
    assert found == [
        (1, "k1", "Field", "Field document."),
        (2, "policy", "Refund policy", "Refunds are issued within 30 days of purchase."),
        (3, "faq", None, "Shipping takes five business days within the country."),
        (4, None, "Returns", "Returned items must be unused and in their original packaging."),
    ]


@pytest.mark.parametrize("role", ["system", "developer"])
async def test_tagged_blocks_are_documents(role: Any) -> None:
    req = ChatRequest(messages=[Message(role, SYSTEM), Message("user", "Can I return my shoes?")])
    answer = (
        "Refunds are issued within 30 days of purchase [policy]. Shipping takes five business days [faq]. "
        "Items must be unused and in their original packaging [3]."
    )
    assert_verdict(await judge(answer, req), True, 1.0, r"3/3")
    assert_verdict(await judge("Refunds take 30 days [refunds].", req), False, 0.0, r"cites 'refunds'")
    assert_verdict(await judge("Refunds take 30 days [4].", req), False, 0.0, r"cites '4'")


async def test_tagged_blocks_in_content_parts() -> None:
    parts = [{"type": "text", "text": SYSTEM}]
    req = ChatRequest(messages=[Message("system", parts), Message("user", "Shipping time?")])
    assert_verdict(await judge("Shipping takes five business days [faq].", req), True, 1.0, r"1/1")


def test_blocks_run_to_the_next_closing_tag_and_unclosed_ones_are_left_out() -> None:
    system = "<doc id=a>one <doc id=b> two</doc> <document id=c>three</document> <doc id=d>never closed"
    assert [(s.id, s.text) for s in sources(request(system=system))] == [
        ("a", "one <doc id=b> two"),
        ("c", "three"),
    ]


async def test_many_unclosed_tags_are_read_in_linear_time() -> None:
    req = request(system='<document id="1">' * 50_000 + "<doc " * 50_000)
    started = time.perf_counter()
    assert_verdict(await judge("Paris is the capital of France [1].", req), True, 1.0, r"no documents")
    assert time.perf_counter() - started < 2
