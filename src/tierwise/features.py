"""Request -> Features: cheap, pure signals the classifier and the rules route on.

Nothing here calls a model or does I/O; extracting features from a typical request takes tens of
microseconds. Token counts are estimates (characters / 4), which is what a router needs: no tokenizer has
to be downloaded, and the estimate is within a few percent of real tokenizers for English text.
"""

from __future__ import annotations

import bisect
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


_WORDS = re.compile(r"[\w-]+")


class KeywordSet:
    """A keyword list, matched case-insensitively on whole words.

    ``*`` glued to a word matches the rest of the word (``diagnos*``); a ``*`` standing alone matches one to
    four words (``under * law`` matches "under New York law"). Single words are looked up in the set of the
    text's words, which stays fast on long prompts; only phrases need a regular expression, and only when
    their first word occurs in the text.
    """

    def __init__(self, keywords: Iterable[str]) -> None:
        self.exact: set[str] = set()
        prefixes: list[str] = []
        self.phrases: list[tuple[str | None, re.Pattern[str]]] = []
        for keyword in keywords:
            tokens = keyword.lower().split()
            if len(tokens) == 1 and _WORDS.fullmatch(tokens[0].rstrip("*")) and "*" not in tokens[0][:-1]:
                if tokens[0].endswith("*"):
                    prefixes.append(tokens[0][:-1])
                else:
                    self.exact.add(tokens[0])
                continue
            parts = []
            for token in tokens:
                if token == "*":
                    parts.append(r"(?:[\w.-]+\s+){0,3}[\w.-]+")
                else:
                    parts.append(re.escape(token).replace(r"\*", r"[\w-]*"))
            first = tokens[0] if "*" not in tokens[0] and _WORDS.fullmatch(tokens[0]) else None
            pattern = re.compile(r"(?<![\w-])" + r"\s+".join(parts) + r"(?![\w-])")
            self.phrases.append((first, pattern))
        self.prefixes = tuple(prefixes)

    def matches(self, text: TextWords) -> bool:
        """Whether any keyword occurs in ``text``."""
        if not self.exact.isdisjoint(text.words):
            return True
        if any(text.has_prefix(p) for p in self.prefixes):
            return True
        return any(
            (first is None or first in text.words) and p.search(text.lowered) for first, p in self.phrases
        )

    def search(self, text: str) -> bool:
        return self.matches(TextWords.of(text))


@dataclass(frozen=True, slots=True)
class TextWords:
    """A text in lower case, its set of words, and the same words sorted (for prefix look-ups)."""

    lowered: str
    words: set[str]
    ordered: list[str]

    @classmethod
    def of(cls, text: str) -> TextWords:
        lowered = text.lower()
        words = set(_WORDS.findall(lowered))
        return cls(lowered, words, sorted(words))

    def has_prefix(self, prefix: str) -> bool:
        i = bisect.bisect_left(self.ordered, prefix)
        return i < len(self.ordered) and self.ordered[i].startswith(prefix)


def keyword_pattern(keywords: Iterable[str]) -> KeywordSet:
    return KeywordSet(keywords)


# Task type cues, checked against the last user message in this order; the first that matches wins.
# Each pattern runs only when one of its trigger words (or, for code, a fence) is in the text: regular
# expressions with many alternatives cost ~50 µs per kilobyte, a set look-up almost nothing.
_TASK_CUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "code",
        # A request for code (the syntax of code itself is checked line by line in _has_code_lines).
        re.compile(
            r"\b(?:write|implement|debug|fix|refactor|optimi[sz]e)\b.{0,40}\b(?:code|function|script|"
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
_EXPERT_WORDS = frozenset(
    [
        "rigorous",
        "formal",
        "peer",
        "peer-review",
        "graduate",
        "phd",
        "expert",
        "depth",
        "in-depth",
        "state",
        "edge",
        "production",
        "production-grade",
        "asymptotic",
        "complexity",
    ]
)
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


# Distinctive words of each task's cues (for phrases, their rarest word): a cue cannot match without one.
_TRIGGERS: dict[str, frozenset[str]] = {
    "code": frozenset(
        "code script program method query bug regex stack stacktrace traceback unit function class".split()
    ),
    "summarize": frozenset("summarize summarise summary tl tldr points condense recap gist".split()),
    "extract": frozenset("extract pull parse list find fill named".split()),
    "classify": frozenset(
        "classify categorize categorise label category sentiment spam positive negative tag".split()
    ),
    "rephrase": frozenset(
        "rephrase rewrite paraphrase reword proofread grammar shorter longer formal polite friendlier "
        "translate".split()
    ),
    "reasoning": frozenset(
        "prove proof derive step calculate solve many probability reason reasoning analyze analyse contrast "
        "trade tradeoff tradeoffs trade-off trade-offs design architecture optimal theorem equation "
        "integral".split()
    ),
}
# Lines of code start with a keyword (case-sensitive, as code is) and carry code punctuation; everyday
# prose ("Let me know: ...", "class starts at 8:30") does not start a line with a lowercase keyword.
_CODE_KEYWORDS = "def class function return const let var public private void fn func SELECT INSERT UPDATE"
_CODE_STARTS = (*(f"{k} " for k in _CODE_KEYWORDS.split()), "#include")
_CODE_PUNCTUATION = frozenset("({;:=")


def _has_code_lines(text: str) -> bool:
    if "```" in text:
        return True
    for line in text.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(_CODE_STARTS) and not _CODE_PUNCTUATION.isdisjoint(stripped):
            return True
        if stripped.startswith(("import ", "from ")) and (
            " import " in stripped or (stripped.startswith("import ") and len(stripped.split()) == 2)
        ):
            return True
    return False


_DIGIT = re.compile(r"\d")


def detect_task(text: str, words: set[str] | None = None) -> str:
    """The task type of an instruction; ``words`` is its set of lower-case words, if already at hand."""
    if words is None:
        words = set(_WORDS.findall(text.lower()))
    if _has_code_lines(text):
        return "code"
    digits = _DIGIT.search(text) is not None
    for task, pattern in _TASK_CUES:
        triggered = not _TRIGGERS[task].isdisjoint(words) or (task == "reasoning" and digits)
        if triggered and pattern.search(text):
            return task
    return "chat"


def extract_features(
    request: ChatRequest,
    *,
    domain_patterns: Mapping[str, KeywordSet],
    blacklist_patterns: Mapping[str, KeywordSet],
    user_tier: str | None = None,
) -> Features:
    """Features of ``request``; domain and blacklist keywords are searched in every message, system too."""
    last_user = request.last_user_text()
    # Cues from long pasted documents drown the instruction: the head and tail of the message carry it.
    cue_text = last_user if len(last_user) <= 4000 else last_user[:2000] + "\n" + last_user[-2000:]
    text = TextWords.of(request.all_text())
    # Most requests are one message: then the cue text's words are the whole text's.
    if len(request.messages) == 1 and cue_text is last_user:
        cue_words = text.words
    else:
        cue_words = set(_WORDS.findall(cue_text.lower()))
    task = detect_task(cue_text, cue_words)
    input_tokens = estimate_input_tokens(request)
    if request.max_tokens is not None:
        expected = request.max_tokens
    elif task in ("summarize",):
        expected = max(100, estimate_tokens(last_user) // 4)
    elif task in ("rephrase",):
        expected = max(50, estimate_tokens(last_user))
    else:
        expected = _EXPECTED_OUTPUT[task]
    wants_json = bool(request.response_format and request.response_format.get("type") != "text")
    return Features(
        task=task,
        input_tokens=input_tokens,
        expected_output_tokens=expected,
        tools=bool(request.tools) and request.tool_choice != "none",
        n_tools=len(request.tools),
        domains=tuple(name for name, p in domain_patterns.items() if p.matches(text)),
        expertise="expert"
        if not _EXPERT_WORDS.isdisjoint(cue_words) and _EXPERT.search(cue_text)
        else "general",
        user_tier=user_tier,
        blacklist_hits=tuple(name for name, p in blacklist_patterns.items() if p.matches(text)),
        depth=sum(1 for m in request.messages if m.role == "user"),
        has_code=task == "code" or "```" in text.lowered,
        has_math=(_DIGIT.search(cue_text) is not None or "$" in cue_text or "\\" in cue_text)
        and _MATH.search(cue_text) is not None,
        wants_json=wants_json,
        last_user_chars=len(last_user),
    )
