"""A provider that answers from a routing eval set: real recorded answers, no network, no key.

A request whose conversation matches a recorded prompt exactly gets that prompt's recorded answer for the
asked model, with the recorded tokens and cost. Any other request gets the answer recorded for the most
similar prompt (TF-IDF cosine over words and word pairs), and says so: the ``replay-match`` meta becomes the
``x-tierwise-replay-match: nearest`` response header, beside the matched id and the similarity.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tierwise.config import ReplayProviderConfig
from tierwise.errors import ConfigError, UpstreamError
from tierwise.evals.dataset import DatasetError, EvalRecord, load_records
from tierwise.features import estimate_input_tokens, estimate_tokens
from tierwise.messages import ChatRequest, ChatResponse, Message, Usage
from tierwise.providers.base import BufferedStream, Provider, ProviderResult, ProviderStream

_WORD = re.compile(r"\w+")


def conversation_key(messages: Iterable[tuple[str, str]]) -> str:
    """A stable key for a conversation: roles and whitespace-normalised texts."""
    h = hashlib.sha256()
    for role, text in messages:
        h.update(role.encode())
        h.update(b"\x1f")
        h.update(" ".join(text.split()).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def _terms(text: str) -> list[str]:
    words = _WORD.findall(text.lower())
    return words + [a + " " + b for a, b in itertools.pairwise(words)]


def _record_text(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], Message(role=m["role"], content=m["content"]).text()) for m in messages]


@dataclass(slots=True, frozen=True)
class Match:
    record: EvalRecord
    kind: str  # "exact" or "nearest"
    similarity: float


class ReplayIndex:
    """Exact and nearest-prompt look-up over a routing eval set."""

    def __init__(self, records: list[EvalRecord], *, nearest: bool = True) -> None:
        """``nearest=False`` skips the similarity index: exact matches only (offline evaluation)."""
        if not records:
            raise ValueError("a replay set needs at least one record")
        self.records = records
        self.models = sorted({m for r in records for m in r.outcomes})
        self._exact = {conversation_key(_record_text(r.messages)): r for r in records}
        self._nearest = nearest
        self._idf: dict[str, float] = {}
        self._postings: dict[str, list[tuple[int, float]]] = {}
        if nearest:
            self._build_similarity_index()

    def _build_similarity_index(self) -> None:
        records = self.records
        postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
        counts = [self._counts(" ".join(t for _, t in _record_text(r.messages))) for r in records]
        df: dict[str, int] = defaultdict(int)
        for c in counts:
            for term in c:
                df[term] += 1
        n = len(records)
        self._idf = {t: math.log((1 + n) / (1 + d)) + 1 for t, d in df.items()}
        for i, c in enumerate(counts):
            weights = {t: (1 + math.log(k)) * self._idf[t] for t, k in c.items()}
            norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
            for t, w in weights.items():
                postings[t].append((i, w / norm))
        self._postings = dict(postings)

    @staticmethod
    def _counts(text: str) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for term in _terms(text):
            counts[term] += 1
        return counts

    def find(self, request: ChatRequest) -> Match:
        key = conversation_key((m.role, m.text()) for m in request.messages)
        exact = self._exact.get(key)
        if exact is not None:
            return Match(exact, "exact", 1.0)
        if not self._nearest:
            raise UpstreamError("no recorded prompt matches this conversation exactly", status=404)
        counts = self._counts(request.all_text())
        weights = {t: (1 + math.log(k)) * self._idf[t] for t, k in counts.items() if t in self._idf}
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        scores: dict[int, float] = defaultdict(float)
        for t, w in weights.items():
            for i, dw in self._postings[t]:
                scores[i] += w * dw
        if not scores:
            return Match(self.records[0], "nearest", 0.0)
        best = max(scores, key=lambda i: (scores[i], -i))
        return Match(self.records[best], "nearest", scores[best] / norm)


def load_replay_set(spec: str) -> list[EvalRecord]:
    """Records from ``builtin:NAME`` (shipped with tierwise) or a file path."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        ref = resources.files("tierwise.data").joinpath(f"{name}.jsonl")
        if not ref.is_file():
            raise ConfigError(f"replay data {spec!r}: no built-in set of that name (try builtin:arena-demo)")
        with resources.as_file(ref) as path:
            return load_records(path)
    try:
        return load_records(Path(spec).expanduser())
    except DatasetError as exc:
        raise ConfigError(f"replay data: {exc}") from None


class ReplayProvider(Provider):
    def __init__(self, name: str, config: ReplayProviderConfig, index: ReplayIndex | None = None) -> None:
        super().__init__(name)
        self.index = index or ReplayIndex(load_replay_set(config.data))
        self._latency = config.latency_ms / 1000

    def _answer(self, request: ChatRequest, model: str) -> ProviderResult:
        match = self.index.find(request)
        outcome = match.record.outcomes.get(model)
        if outcome is None:
            raise UpstreamError(f"model {model!r} has no recorded answers in this replay set", status=404)
        text = outcome.response or ""
        exact = match.kind == "exact"
        if exact and outcome.input_tokens is not None:
            input_tokens = outcome.input_tokens
        else:
            input_tokens = estimate_input_tokens(request)
        output_tokens = outcome.output_tokens if outcome.output_tokens is not None else estimate_tokens(text)
        if request.max_tokens is not None and output_tokens > request.max_tokens:
            # Honour max_tokens as a real model would: cut the answer and say it was cut.
            text = text[: request.max_tokens * 4]
            output_tokens, finish = request.max_tokens, "length"
        else:
            finish = "stop"
        response = ChatResponse(
            id=f"replay-{match.record.id}",
            model=model,
            content=text,
            finish_reason=finish,  # type: ignore[arg-type]
            usage=Usage(input_tokens, output_tokens),
            created=int(time.time()),
        )
        meta = {"replay-match": match.kind, "replay-id": match.record.id}
        if not exact:
            meta["replay-similarity"] = f"{match.similarity:.3f}"
        cost = outcome.cost_usd if exact and finish == "stop" else None
        return ProviderResult(response, cost_usd=cost, meta=meta)

    async def complete(self, request: ChatRequest, model: str, *, timeout: float) -> ProviderResult:
        if self._latency:
            await asyncio.sleep(self._latency)
        return self._answer(request, model)

    async def stream(self, request: ChatRequest, model: str, *, timeout: float) -> ProviderStream:
        if self._latency:
            await asyncio.sleep(self._latency)
        return BufferedStream(self._answer(request, model))
