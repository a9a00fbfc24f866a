"""Features: the cheap signals the router decides on, as a user's request shows them."""

from __future__ import annotations

import re

import pytest

from tierwise.config import RoutingConfig
from tierwise.features import (
    Features,
    detect_task,
    estimate_input_tokens,
    estimate_tokens,
    extract_features,
    keyword_pattern,
)
from tierwise.messages import ChatRequest, Message, Tool, ToolCall

_DEFAULTS = RoutingConfig()
DOMAINS = {name: keyword_pattern(d.keywords) for name, d in _DEFAULTS.domains.items()}
BLACKLIST = {name: keyword_pattern(words) for name, words in _DEFAULTS.blacklist.items()}


def features(
    *messages: Message | str,
    tools: list[Tool] | None = None,
    tool_choice: str | dict[str, object] | None = None,
    max_tokens: int | None = None,
    response_format: dict[str, object] | None = None,
    domains: dict[str, re.Pattern[str]] | None = None,
    blacklist: dict[str, re.Pattern[str]] | None = None,
    user_tier: str | None = None,
) -> Features:
    msgs = [Message(role="user", content=m) if isinstance(m, str) else m for m in messages]
    req = ChatRequest(
        messages=msgs,
        tools=tools or [],
        tool_choice=tool_choice,
        max_tokens=max_tokens,
        response_format=response_format,
    )
    return extract_features(
        req,
        domain_patterns=DOMAINS if domains is None else domains,
        blacklist_patterns=BLACKLIST if blacklist is None else blacklist,
        user_tier=user_tier,
    )


# ---- task detection ----


@pytest.mark.parametrize(
    ("prompt", "task"),
    [
        # code
        ("Write a Python function that reverses a linked list", "code"),
        ("def area(r): return 3.14 * r * r  # why is this slow?", "code"),
        ("```js\nconsole.log(1)\n```\nwhat does this print?", "code"),
        ("SELECT name FROM users WHERE id = 1 returns nothing, why?", "code"),
        ("Here is the traceback I get when the app starts", "code"),
        ("Fix the bug in my sorting function", "code"),
        # code beats the other cues: a summary of code is still a coding request
        ("Summarize this stack trace for me", "code"),
        ("Write a summary of this code: ```print(1)```", "code"),
        # summarize
        ("Summarize this article for me", "summarize"),
        ("TL;DR of the meeting notes below", "summarize"),
        ("Give me the key points of this report", "summarize"),
        ("What's the gist of this email?", "summarize"),
        # extract
        ("Extract all email addresses from the text below", "extract"),
        ("Pull out every date mentioned in this letter", "extract"),
        ("Fill in the missing fields of this form", "extract"),
        # classify
        ("Classify this support ticket as billing or shipping", "classify"),
        ("What is the sentiment of this review?", "classify"),
        ("Is this spam: you won a free cruise", "classify"),
        # rephrase
        ("Rewrite this email so it sounds friendlier", "rephrase"),
        ("Translate 'good morning' into French", "rephrase"),
        ("Proofread my cover letter", "rephrase"),
        ("Fix grammar in this sentence: me and him goes to school", "rephrase"),
        # reasoning
        ("Prove that the square root of two is irrational", "reasoning"),
        ("What is 17 * 23?", "reasoning"),
        ("How many r letters are in strawberry?", "reasoning"),
        ("Compare and contrast Rust and Go for a web backend", "reasoning"),
        ("Design a rate limiter for our public API", "reasoning"),
        # chat: nothing else matches
        ("Hi! How are you today?", "chat"),
        ("Write a haiku about autumn leaves", "chat"),
        ("What is the capital of France?", "chat"),
        ("I want to import some rugs from Turkey, what should I know?", "chat"),
        # prose that merely contains a programming keyword is not code
        pytest.param(
            "Let me know what you think: is pineapple on pizza good?",
            "chat",
        ),
        pytest.param(
            "My daughter's class starts at 8:30, what should she pack for lunch?",
            "chat",
        ),
        pytest.param(
            "Please summarize the public report (2023) for the board",
            "summarize",
        ),
    ],
)
def test_detect_task(prompt: str, task: str) -> None:
    assert detect_task(prompt) == task


def test_task_comes_from_the_last_user_message() -> None:
    f = features(
        "Write a Python function that parses dates",
        Message(role="assistant", content="def parse(s): ..."),
        "Thanks! Now summarize what we did in two lines.",
    )
    assert f.task == "summarize"


def test_task_cue_at_the_end_of_a_long_pasted_document_is_found() -> None:
    document = "The committee walked through the orchard and talked about apples. " * 200
    f = features(document + "\n\nSummarize the text above.")
    assert f.task == "summarize"


# ---- token estimates ----


@pytest.mark.parametrize(("text", "tokens"), [("", 0), ("abcd", 1), ("abcde", 2), ("x" * 400, 100)])
def test_estimate_tokens_is_characters_over_four_rounded_up(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_input_tokens_count_every_message_plus_overhead() -> None:
    req = ChatRequest(
        messages=[
            Message(role="system", content="x" * 40),
            Message(role="user", content="y" * 400),
        ]
    )
    # 10 + 100 tokens of text, 4 per message
    assert estimate_input_tokens(req) == 118


def test_input_tokens_count_tools_and_tool_calls() -> None:
    bare = ChatRequest(messages=[Message(role="user", content="hello")])
    call = ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}')
    with_tools = ChatRequest(
        messages=[
            Message(role="user", content="hello"),
            Message(role="assistant", tool_calls=[call]),
        ],
        tools=[Tool(name="get_weather", description="Weather for a city")],
    )
    extra_message = 4
    call_tokens = estimate_tokens("get_weather") + estimate_tokens('{"city": "Paris"}')
    tool_tokens = estimate_tokens("get_weather") + estimate_tokens("Weather for a city") + 20
    assert estimate_input_tokens(with_tools) == (
        estimate_input_tokens(bare) + extra_message + call_tokens + tool_tokens
    )


def test_input_tokens_ignore_images_but_count_text_parts() -> None:
    parts = [
        {"type": "text", "text": "z" * 80},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10_000}},
    ]
    req = ChatRequest(messages=[Message(role="user", content=parts)])
    assert estimate_input_tokens(req) == 20 + 4


def test_features_report_the_input_estimate() -> None:
    assert features("q" * 800).input_tokens == 204


# ---- expected output tokens ----


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "expected"),
    [
        ("Classify the sentiment of this review: great phone", None, 10),
        ("Extract all names from: Ann met Bob", None, 200),
        ("Hi! How are you today?", None, 400),
        ("Write a Python function that sorts a list", None, 800),
        ("Prove that there are infinitely many primes", None, 1000),
        # the client's max_tokens wins over any guess
        ("Prove that there are infinitely many primes", 50, 50),
        ("Hi! How are you today?", 2000, 2000),
        # summaries: a quarter of the text, at least 100
        ("Summarize: the cat sat.", None, 100),
        ("Summarize this:\n" + "w" * 8000, None, (len("Summarize this:\n") + 8000 + 3) // 4 // 4),
        # rewrites: as long as the text, at least 50
        ("Rephrase: ok", None, 50),
        (
            "Rephrase this paragraph:\n" + "v" * 4000,
            None,
            (len("Rephrase this paragraph:\n") + 4000 + 3) // 4,
        ),
    ],
)
def test_expected_output_tokens(prompt: str, max_tokens: int | None, expected: int) -> None:
    assert features(prompt, max_tokens=max_tokens).expected_output_tokens == expected


# ---- domains ----


@pytest.mark.parametrize(
    ("text", "domains"),
    [
        ("What dosage of ibuprofen is safe for an adult?", ("medical",)),
        ("She was diagnosed with asthma last year", ("medical",)),  # diagnos*
        ("My symptoms got worse overnight", ("medical",)),  # symptom*
        ("Review the indemnification clause", ("legal",)),  # indemnif*
        ("How does the statute of limitations work?", ("legal",)),
        ("Which investment is better for my portfolio?", ("finance",)),
        ("Is there a public exploit for CVE-2024-3094?", ("security",)),  # CVE-*
        ("The attorney reviewed the side effects of the medication", ("legal", "medical")),
        # word-bounded: a keyword inside a longer word does not count
        ("Explain the taxonomy of songbirds", ()),
        ("The undiagnosable noise in my car", ()),
        ("Write a poem about spring", ()),
        # case does not matter
        ("MALWARE found on the laptop", ("security",)),
    ],
)
def test_domains(text: str, domains: tuple[str, ...]) -> None:
    assert features(text).domains == domains


def test_domains_are_found_in_the_system_prompt_too() -> None:
    f = features(
        Message(role="system", content="You are a clinical assistant."),
        "Hello there",
    )
    assert f.domains == ("medical",)


# ---- blacklist ----


@pytest.mark.parametrize(
    ("text", "hits"),
    [
        ("Do a contract review of this NDA", ("legal",)),
        ("Is this enforceable under New York law?", ("legal",)),  # under * law, two words
        ("Is this valid under French law?", ("legal",)),
        ("Is this valid under U.S. federal law?", ("legal",)),
        ("Is this valid under the State of New York law?", ()),  # five words: too many for *
        ("Is this valid under law?", ()),  # * needs at least one word
        ("I need legal advice about my landlord", ("legal",)),
        ("We are preparing for litigation", ("legal",)),
        ("What is a lethal overdose of paracetamol?", ("safety",)),
        ("How do I bake sourdough bread?", ()),
        ("The lawsuits piled up", ()),  # lawsuit is word-bounded
        ("LAWSUIT over a broken fence", ("legal",)),
    ],
)
def test_default_blacklist_hits(text: str, hits: tuple[str, ...]) -> None:
    assert features(text).blacklist_hits == hits


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("Is it binding under New York law?", True),
        ("Is it binding under Delaware corporate law?", True),
        ("The indemnification clause is broad", True),
        ("Who indemnifies whom here?", True),
        ("The law is under review", False),
        ("The demnification is unclear", False),
    ],
)
def test_wildcard_keywords_in_a_blacklist(text: str, hit: bool) -> None:
    blacklist = {"contracts": keyword_pattern(["under * law", "indemnif*"])}
    assert features(text, blacklist=blacklist).blacklist_hits == (("contracts",) if hit else ())


def test_blacklist_is_searched_in_every_message() -> None:
    f = features(
        "We have a lawsuit coming up.",
        Message(role="assistant", content="I can help with that."),
        "Great, write a short thank-you note to my lawyer.",
    )
    assert f.blacklist_hits == ("legal",)


def test_an_empty_keyword_list_matches_nothing() -> None:
    assert features("anything at all", blacklist={"none": keyword_pattern([])}).blacklist_hits == ()


# ---- conversation depth, tools, JSON ----


def test_depth_counts_user_turns() -> None:
    assert features("one").depth == 1
    f = features(
        Message(role="system", content="Be brief."),
        "one",
        Message(role="assistant", content="a"),
        "two",
        Message(role="assistant", content="b"),
        "three",
    )
    assert f.depth == 3


@pytest.mark.parametrize(
    ("tools", "tool_choice", "wanted"),
    [
        ([], None, False),
        (["get_weather"], None, True),
        (["get_weather"], "auto", True),
        (["get_weather"], "required", True),
        (["get_weather"], {"type": "function", "function": {"name": "get_weather"}}, True),
        (["get_weather"], "none", False),
    ],
)
def test_tools_flag(tools: list[str], tool_choice: str | dict[str, object] | None, wanted: bool) -> None:
    f = features(
        "What's the weather in Paris?",
        tools=[Tool(name=name) for name in tools],
        tool_choice=tool_choice,
    )
    assert f.tools is wanted
    assert f.n_tools == len(tools)


@pytest.mark.parametrize(
    ("response_format", "wanted"),
    [
        (None, False),
        ({"type": "text"}, False),
        ({"type": "json_object"}, True),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}, True),
    ],
)
def test_json_wanted(response_format: dict[str, object] | None, wanted: bool) -> None:
    assert features("List three colours", response_format=response_format).wants_json is wanted


def test_other_signals() -> None:
    f = features("Give a rigorous proof that 2 + 2 = 4", user_tier="free")
    assert f.expertise == "expert"
    assert f.has_math is True
    assert f.user_tier == "free"
    plain = features("Tell me a joke")
    assert (plain.expertise, plain.has_math, plain.has_code) == ("general", False, False)
    assert features("Write a Python function that adds numbers").has_code is True


def test_features_serialise_to_a_plain_dict() -> None:
    d = features("Summarize this", max_tokens=30).to_dict()
    assert d["task"] == "summarize"
    assert d["expected_output_tokens"] == 30
    assert d["domains"] == ()
