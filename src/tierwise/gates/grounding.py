"""The retrieval-grounding gate: an answer to a request that carries retrieved documents must cite only those
documents and rest on them. Pure and fast: no model call, no cost.

    {type: grounding, threshold: 0.5}

Documents, in this order (positions count from 1):

1. ``request.documents``: the ``documents`` extension field, ``[{"id", "text", "title"?}]`` (OpenAI SDK
   users send it with ``extra_body``). It is for the gate only and is not sent upstream.
2. Tagged blocks in system and developer messages: ``<document id="X" title="T">...</document>`` or
   ``<doc id=X>...</doc>`` (quotes optional). A block without an id is known by its position only.

A request with no documents passes (the gate does not apply); so does an answer with no text.

Citations (code, fenced or inline, is skipped):

- ``[X]``, ``[doc:X]``, ``[source:X]`` (``doc:``, ``document:`` and ``source:`` prefixes are dropped);
- several in one bracket, ``[1, 3]``, ``[doc:a; doc:b]``, and numeric ranges, ``[1-3]``;
- ``(source: X)`` and ``(sources: X, Y)``.

A reference resolves to the document whose id or title it equals (ignoring case), or, when it is a number
and no document id is a number, to the document at that position. Any reference that resolves to no
document fails the answer (score 0, the reason names it). A bare ``[X]`` (no spaces) counts as a citation
only when X is a document id or title, contains a digit, or is written like a document id (the same
pattern of capitals, small letters, digits and punctuation: ``[doc7]`` when the ids are ``doc1``,
``doc2``; ``[c]`` when they are ``a`` and ``b``), so placeholders such as ``[Name]`` usually do not count.
Task-list boxes (``- [x]``) and Markdown links (``[text](url)``, ``[1]: url`` lines) are not citations.

Support: the answer is split into sentences (and lines); a sentence is substantive when it has at least
three content words (lowercased words and numbers; stopwords dropped; plural, -ed and -ing endings
stripped; citations and URLs removed). It is supported when at least half of its distinct content words
appear in one document (text and title). The score is the supported share of substantive sentences (1 when
there are none); the answer passes when the score reaches ``threshold``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tierwise.config import GateSpec
from tierwise.gates.base import GateVerdict
from tierwise.messages import ChatRequest, ChatResponse

MIN_CONTENT_WORDS = 3
SUPPORT = 0.5

_TAG = re.compile(r"<(/?)(document|doc)\b([^<>]{0,500})>", re.IGNORECASE)
_ATTR = r"\b{}\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'>]+))"
_ID, _TITLE = re.compile(_ATTR.format("id"), re.I), re.compile(_ATTR.format("title"), re.I)
# Code (fenced and inline), Markdown link definitions ("[1]: https://...") and task-list boxes are not prose.
_NOT_PROSE = re.compile(
    r"```.*?(?:```|\Z)|`[^`\n]*`|^[ \t]*\[[^\]\n]+\]:[ \t]*\S[^\n]*$|^[ \t]*(?:[-*+]|\d+[.)])[ \t]+\[[ xX]\]",
    re.DOTALL | re.MULTILINE,
)
_URL = re.compile(r"https?://\S+")
_BRACKET = re.compile(r"\[([^\[\]\n]{1,120})\](?!\()")
_SOURCE = re.compile(r"\(\s*sources?\s*:\s*([^()\n]{1,200})\)", re.IGNORECASE)
_PREFIX = re.compile(r"^(?:doc|document|source)\s*:\s*", re.IGNORECASE)
_RANGE = re.compile(r"^(\d+)\s*[-\u2013]\s*(\d+)$")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\w+")
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each either few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just let me
    more most my myself no nor not now of off on once only or other our ours ourselves out over own same
    she should so some such than that the their theirs them themselves then there these they this those
    through to too under until up upon us very was we were what when where which while who whom why will
    with would yes yet you your yours yourself yourselves one ones may might must shall s t d ll m re ve
    don doesn didn isn aren wasn weren won wouldn shouldn couldn hasn haven hadn""".split()
)


@dataclass(frozen=True, slots=True)
class Source:
    """One document the answer may rest on; ``position`` counts from 1."""

    position: int
    id: str | None
    title: str | None
    text: str


def _attr(pattern: re.Pattern[str], attrs: str) -> str | None:
    match = pattern.search(attrs)
    return next((g for g in match.groups() if g is not None), None) if match else None


def _blocks(text: str) -> list[tuple[str, str]]:
    """(attributes, body) of each tagged block, in one pass over the tags (no regex backtracking over long
    texts): a block runs from its opening tag to the next closing tag of the same name; one never closed is
    left out."""
    blocks: list[tuple[str, str]] = []
    opened: tuple[str, str, int] | None = None
    for tag in _TAG.finditer(text):
        closing, name = tag.group(1) == "/", tag.group(2).lower()
        if opened is None and not closing:
            opened = (name, tag.group(3), tag.end())
        elif opened is not None and closing and name == opened[0]:
            blocks.append((opened[1], text[opened[2] : tag.start()]))
            opened = None
    return blocks


def sources(request: ChatRequest) -> list[Source]:
    """The request's documents: the ``documents`` field first, then tagged blocks in system messages."""
    found: list[tuple[str | None, str | None, str]] = [(d.id, d.title, d.text) for d in request.documents]
    for attrs, body in _blocks(request.system_text()):
        found.append((_attr(_ID, attrs), _attr(_TITLE, attrs), body.strip()))
    return [Source(i, id_, title, text) for i, (id_, title, text) in enumerate(found, start=1)]


def _stem(word: str) -> str:
    """A light suffix strip, so that "increases", "increased" and "increase" meet."""
    if len(word) <= 3:
        return word
    if word.endswith("ies"):
        word = word[:-3] + "y"
    elif word.endswith(("sses", "ches", "shes", "xes", "zes")):
        word = word[:-2]
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    elif word.endswith("ing") and len(word) > 5:
        word = word[:-3]
    elif word.endswith("ed") and len(word) > 4:
        word = word[:-2]
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


def content_words(text: str) -> set[str]:
    """The distinct content words of ``text``: lowercased, stopwords dropped, light suffixes stripped."""
    return {_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS and w != "_"}


def _shape(token: str) -> str:
    """How a token is written: "doc12" -> "a9", "KB-7" -> "A-9", "a" -> "a"."""
    out = "".join("A" if c.isupper() else "a" if c.isalpha() else "9" if c.isdigit() else c for c in token)
    return re.sub(r"(.)\1+", r"\1", out)


def _references(text: str, known: set[str], shapes: set[str]) -> list[str]:
    """Every reference cited in ``text`` (code already removed), in order. A bare bracketed token counts when
    it is a known id or title, contains a digit, or is written like a known id (``shapes``)."""
    refs: list[str] = []
    for match in _BRACKET.finditer(text):
        for part in re.split(r"[,;]", match.group(1)):
            ref = part.strip()
            bare = not _PREFIX.match(ref)
            ref = _PREFIX.sub("", ref).strip()
            cited = ref.lower() in known or re.search(r"\d", ref) or _shape(ref) in shapes
            if not ref or (bare and (" " in ref or not cited)):
                continue
            span = _RANGE.match(ref)
            if span and int(span.group(1)) <= int(span.group(2)) <= int(span.group(1)) + 50:
                refs += [str(n) for n in range(int(span.group(1)), int(span.group(2)) + 1)]
            else:
                refs.append(ref)
    for match in _SOURCE.finditer(text):
        refs += [_PREFIX.sub("", p).strip() for p in re.split(r"[,;]", match.group(1)) if p.strip()]
    return refs


def _resolve(ref: str, docs: list[Source]) -> Source | None:
    key = ref.lower()
    for doc in docs:
        if key in ((doc.id or "").lower(), (doc.title or "").lower()):
            return doc
    numeric_ids = any((d.id or "").isdigit() for d in docs)
    if ref.isdigit() and not numeric_ids and 1 <= int(ref) <= len(docs):
        return docs[int(ref) - 1]
    return None


def _strip_citations(text: str) -> str:
    return _URL.sub(" ", _SOURCE.sub(" ", _BRACKET.sub(" ", text)))


def supported_share(text: str, docs: list[Source]) -> tuple[int, int]:
    """(supported, substantive) sentence counts of ``text`` (code already removed) against ``docs``."""
    vocabularies = [content_words(f"{d.title or ''}\n{d.text}") for d in docs]
    supported = substantive = 0
    for sentence in _SENTENCE.split(_strip_citations(text)):
        words = content_words(sentence)
        if len(words) < MIN_CONTENT_WORDS:
            continue
        substantive += 1
        if any(len(words & vocabulary) >= SUPPORT * len(words) for vocabulary in vocabularies):
            supported += 1
    return supported, substantive


class GroundingGate:
    """Checks citations and support against the request's documents; see the module docstring."""

    name = "grounding"

    def __init__(self, spec: GateSpec) -> None:
        self.threshold = spec.threshold

    async def check(self, request: ChatRequest, response: ChatResponse) -> GateVerdict:
        docs = sources(request)
        if not docs:
            return GateVerdict(self.name, True, 1.0, "no documents to ground on")
        text = _NOT_PROSE.sub(" ", response.content or "")
        if not text.strip():
            return GateVerdict(self.name, True, 1.0, "no text to check")
        known = {k.lower() for d in docs for k in (d.id, d.title) if k}
        shapes = {_shape(d.id) for d in docs if d.id}
        refs = _references(text, known, shapes)
        unknown = list(dict.fromkeys(r for r in refs if _resolve(r, docs) is None))
        if unknown:
            shown = ", ".join(repr(r) for r in unknown[:5])
            return GateVerdict(self.name, False, 0.0, f"cites {shown}, not among the {len(docs)} document(s)")
        supported, substantive = supported_share(text, docs)
        if substantive == 0:
            return GateVerdict(self.name, True, 1.0, "no substantive sentences to check")
        score = supported / substantive
        reason = f"{supported}/{substantive} sentences supported by the documents"
        if score < self.threshold:
            return GateVerdict(self.name, False, score, f"{reason}, below {self.threshold:g}")
        return GateVerdict(self.name, True, score, reason)
