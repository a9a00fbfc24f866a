"""Request -> Features: cheap, pure signals the classifier and the rules route on.

Nothing here calls a model or does I/O; extracting features from a typical request takes tens of
microseconds. Token counts are estimates (characters / 4), which is what a router needs: no tokenizer has
to be downloaded, and the estimate is within a few percent of real tokenizers for English text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from tierwise.messages import ChatRequest

CHARS_PER_TOKEN = 4
# Tokens every message adds for its role and separators, as OpenAI's chat format does.
TOKENS_PER_MESSAGE = 4


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def estimate_input_tokens(request: ChatRequest) -> int:
    total = 0
    for message in request.messages:
        total += estimate_tokens(message.text()) + TOKENS_PER_MESSAGE
        for call in message.tool_calls:
            total += estimate_tokens(call.name) + estimate_tokens(call.arguments)
    for tool in request.tools:
        total += estimate_tokens(tool.name) + estimate_tokens(str(tool.description or "")) + 20
    return total


def keyword_pattern(keywords: Iterable[str]) -> re.Pattern[str]:
    """One case-insensitive, word-bounded pattern for a keyword list.

    ``*`` glued to a word matches the rest of the word (``diagnos*``); a ``*`` standing alone matches one to
    four words (``under * law`` matches "under New York law").
    """
    alternatives = []
    for keyword in keywords:
        parts = []
        for token in keyword.split():
            if token == "*":
                parts.append(r"(?:[\w.-]+\s+){0,3}[\w.-]+")
            else:
                parts.append(re.escape(token).replace(r"\*", r"[\w-]*"))
        alternatives.append(r"\s+".join(parts))
    if not alternatives:
        return re.compile(r"(?!x)x")
    return re.compile(r"(?<![\w-])(?:" + "|".join(alternatives) + r")(?![\w-])", re.IGNORECASE)


# Task type cues, checked against the last user message in this order; the first that matches wins.
_TASK_CUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "code",
        re.compile(
            # Code itself: a fence, or a line that starts with a keyword (case-sensitive, as code is) and
            # carries code punctuation. Everyday words ("Let me know: ...") must not count.
            r"```|(?m:^[ \t]*(?-i:def|class|function|return|const|let|var|public|private|void|fn|func|"
            r"SELECT|INSERT|UPDATE|#include)\b[^\n]*[({;:=])"
            r"|(?m:^[ \t]*(?-i:import [\w.]+$|from [\w.]+ import))"
            # Or a request for code.
            r"|\b(?:write|implement|debug|fix|refactor|optimi[sz]e)\b.{0,40}\b(?:code|function|script|"
            r"program|class|method|query|bug|regex|unit tests?)\b"
            r"|\b(?:python|javascript|typescript|java|rust|golang|c\+\+|sql|bash|html|css)\b.{0,30}"
            r"\b(?:code|function|script|program)\b|stack ?trace|traceback",
            re.IGNORECASE,
        ),
    ),
    (
        "summarize",
        re.compile(r"\b(?:summari[sz]e|summary|tl;?dr|key points|condense|recap|gist)\b", re.IGNORECASE),
    ),
    (
        "extract",
        re.compile(
            r"\b(?:extract|pull out|parse out|list (?:all|every)|find all|fill (?:in|out)|"
            r"named entit(?:y|ies))\b",
            re.IGNORECASE,
        ),
    ),
    (
        "classify",
        re.compile(
            r"\b(?:classify|categori[sz]e|label (?:this|the)|which category|sentiment|is this (?:spam|"
            r"positive|negative)|tag (?:this|the))\b",
            re.IGNORECASE,
        ),
    ),
    (
        "rephrase",
        re.compile(
            r"\b(?:rephrase|rewrite|paraphrase|reword|proofread|fix (?:the )?grammar|make (?:it|this) "
            r"(?:shorter|longer|formal|polite|friendlier)|translate)\b",
            re.IGNORECASE,
        ),
    ),
    (
        "reasoning",
        re.compile(
            r"\b(?:prove|proof|derive|step[- ]by[- ]step|calculate|solve|how many|what is the probability|"
            r"reason(?:ing)? about|analy[sz]e|compare and contrast|trade-?offs?|design (?:a|an|the)|"
            r"architecture|optimal|theorem|equation|integral)\b|\d+\s*[-+*/^×÷]\s*\d+",
            re.IGNORECASE,
        ),
    ),
)

# Output tokens expected when the client sets no max_tokens: by task, or by input size.
_EXPECTED_OUTPUT = {"classify": 10, "extract": 200, "chat": 400, "code": 800, "reasoning": 1000}

_MATH = re.compile(r"\$[^$]+\$|\\frac|\\sum|\\int|\b\d+\s*[-+*/^=]\s*\d+", re.IGNORECASE)
_EXPERT = re.compile(
    r"\b(?:rigorous|formal proof|peer[- ]review|graduate|phd|expert|in depth|in-depth|state of the art|"
    r"edge cases?|production[- ]grade|asymptotic|complexity)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Features:
    """What the router knows about a request before any model sees it."""

    task: str
    input_tokens: int
    expected_output_tokens: int
    tools: bool
    n_tools: int
    domains: tuple[str, ...]
    expertise: str
    user_tier: str | None
    blacklist_hits: tuple[str, ...]
    depth: int
    has_code: bool
    has_math: bool
    wants_json: bool
    last_user_chars: int

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every value, and this runs once per request.
        return {name: getattr(self, name) for name in _FEATURE_FIELDS}


_FEATURE_FIELDS = tuple(f.name for f in fields(Features))


def detect_task(text: str) -> str:
    for task, pattern in _TASK_CUES:
        if pattern.search(text):
            return task
    return "chat"


def extract_features(
    request: ChatRequest,
    *,
    domain_patterns: Mapping[str, re.Pattern[str]],
    blacklist_patterns: Mapping[str, re.Pattern[str]],
    user_tier: str | None = None,
) -> Features:
    """Features of ``request``; domain and blacklist keywords are searched in every message, system too."""
    last_user = request.last_user_text()
    # Cues from long pasted documents drown the instruction: the head and tail of the message carry it.
    cue_text = last_user if len(last_user) <= 4000 else last_user[:2000] + "\n" + last_user[-2000:]
    task = detect_task(cue_text)
    input_tokens = estimate_input_tokens(request)
    if request.max_tokens is not None:
        expected = request.max_tokens
    elif task in ("summarize",):
        expected = max(100, estimate_tokens(last_user) // 4)
    elif task in ("rephrase",):
        expected = max(50, estimate_tokens(last_user))
    else:
        expected = _EXPECTED_OUTPUT[task]
    everything = request.all_text()
    wants_json = bool(request.response_format and request.response_format.get("type") != "text")
    return Features(
        task=task,
        input_tokens=input_tokens,
        expected_output_tokens=expected,
        tools=bool(request.tools) and request.tool_choice != "none",
        n_tools=len(request.tools),
        domains=tuple(name for name, p in domain_patterns.items() if p.search(everything)),
        expertise="expert" if _EXPERT.search(cue_text) else "general",
        user_tier=user_tier,
        blacklist_hits=tuple(name for name, p in blacklist_patterns.items() if p.search(everything)),
        depth=sum(1 for m in request.messages if m.role == "user"),
        has_code=task == "code" or "```" in everything,
        has_math=bool(_MATH.search(cue_text)),
        wants_json=wants_json,
        last_user_chars=len(last_user),
    )
