"""`tierwise label`: logged requests -> a routing eval set (docs/evaluation.md) with every tier's answer.

Each distinct logged conversation (a record's ``prompt`` when the store kept it in full) is sent again to the
first model of every tier, and each tier's answer is judged against the premium tier's answer: by a
pairwise, position-swapped judge model (``tierwise.judge.PairwiseJudge``) or, without one, by the
programmatic comparison (the default gates). The judge's preference p for a tier's answer (1 better than
premium's, 0.5 as good, 0 worse) becomes its score::

    score = min(1, 2 * p)        premium's own score is 1

so an answer as good as premium's (or better) scores 1, one that always loses scores 0, and one that loses one
of the two swapped calls and ties the other (p = 0.25) scores 0.5. (Calls that disagree outright, a win and
a loss, average to p = 0.5, as a tie does.) ``ideal_tier`` is the cheapest tier scoring 1 (as good as
premium), as the eval set's definition of an ideal tier has it; ``ideal_output`` is that tier's answer.

Nothing is written to the proxy's store for these calls: the engine here has no record sink.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson

from tierwise.config import DEFAULT_GATES, GateSpec, RouterConfig
from tierwise.judge import PairVerdict, PairwiseJudge, programmatic_compare
from tierwise.messages import ChatRequest, ChatResponse, Message
from tierwise.store.records import RoutingRecord

CONCURRENCY = 8
T = TypeVar("T")


@dataclass(slots=True)
class Prompt:
    """One distinct logged conversation."""

    id: str
    request_class: str
    messages: list[dict[str, Any]]
    seen: int = 1


@dataclass(slots=True)
class Answer:
    response: ChatResponse | None
    cost_usd: float = 0.0
    error: str | None = None


@dataclass(slots=True)
class Labelled:
    rows: list[dict[str, Any]]
    skipped: Counter[str] = field(default_factory=Counter)
    answer_cost_usd: float = 0.0
    judge_cost_usd: float = 0.0
    judge: str = ""


def prompts_from_records(
    records: Sequence[RoutingRecord], limit: int | None = None
) -> tuple[list[Prompt], Counter[str]]:
    """The distinct replayable conversations, newest first (``limit`` keeps the newest), and how many records
    were skipped, by why."""
    skipped: Counter[str] = Counter()
    found: dict[str, Prompt] = {}
    for r in sorted(records, key=lambda r: r.ts, reverse=True):
        if r.status == "rejected":
            skipped["rejected before routing"] += 1
            continue
        if r.prompt is None:
            skipped["no conversation kept (store.prompts: none)"] += 1
            continue
        if r.prompt.startswith("sha256:"):
            skipped["conversation hashed (store.prompts: hash)"] += 1
            continue
        if r.prompt in found:
            found[r.prompt].seen += 1
            continue
        try:
            messages = orjson.loads(r.prompt)
        except orjson.JSONDecodeError:
            skipped["conversation unreadable"] += 1
            continue
        if not isinstance(messages, list) or not messages:
            skipped["conversation unreadable"] += 1
            continue
        if any(m.get("role") == "tool" or m.get("content") is None for m in messages):
            # The log keeps roles and text only: tool calls and their ids are gone, so it cannot be replayed.
            skipped["tool turns (their calls are not logged)"] += 1
            continue
        if limit is not None and len(found) >= limit:
            skipped["over --limit"] += 1
            continue
        found[r.prompt] = Prompt(r.request_id, r.request_class or "", messages)
    return list(found.values()), skipped


def _request(prompt: Prompt) -> ChatRequest:
    return ChatRequest(messages=[Message(role=m["role"], content=m["content"]) for m in prompt.messages])


def outcome_names(config: RouterConfig) -> dict[str, str]:
    """Tier -> the name its first model's outcomes go under: the upstream name (what ``tierwise eval
    --config`` matches), or the configured name where two tiers' upstream names collide."""
    firsts = {tier: models[0] for tier, models in config.tiers.items()}
    upstream = {tier: config.models[m].name or m for tier, m in firsts.items()}
    if len(set(upstream.values())) < len(upstream):
        return firsts
    return upstream


async def _bounded(
    jobs: Sequence[Callable[[], Awaitable[T]]], limit: int, tick: Callable[[], None]
) -> list[T]:
    """Run ``jobs`` with at most ``limit`` at once, started in order; results in the jobs' order."""
    results: list[Any] = [None] * len(jobs)
    queue = iter(range(len(jobs)))

    async def worker() -> None:
        for i in queue:
            results[i] = await jobs[i]()
            tick()

    await asyncio.gather(*(worker() for _ in range(max(1, min(limit, len(jobs))))))
    return results


async def label(
    config: RouterConfig,
    prompts: Sequence[Prompt],
    *,
    judge_model: str | None,
    concurrency: int = CONCURRENCY,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
) -> Labelled:
    """Replay ``prompts`` through every tier's first model, judge each against premium, build the rows.
    ``progress(description, total)`` returns the callback each finished call ticks."""
    from tierwise.gates import build_gates
    from tierwise.policy.engine import Engine
    from tierwise.providers import build_providers

    engine = Engine(config, build_providers(config))  # no sink: nothing reaches the store
    tiers = config.tier_names
    premium = config.premium_tier
    firsts = {t: config.tiers[t][0] for t in tiers}
    names = outcome_names(config)
    spec = config.shadow.judge
    judge = (
        PairwiseJudge(judge_model, engine.call_model, timeout_s=spec.timeout_s, swap=spec.swap)
        if judge_model
        else None
    )
    gates = build_gates([GateSpec(type=t) for t in DEFAULT_GATES])
    retry = config.retry

    def ticker(description: str, total: int) -> Callable[[], None]:
        return progress(description, total) if progress is not None else (lambda: None)

    async def answer(prompt: Prompt, tier: str) -> Answer:
        request = _request(prompt)
        problem = ""
        for n in range(retry.attempts):
            try:
                response, cost = await engine.call_model(firsts[tier], request, retry.timeout_s)
            except Exception as exc:  # an upstream failure: retried, then the prompt is left out
                problem = f"{exc.__class__.__name__}: {exc}"[:200]
                if n + 1 < retry.attempts:
                    await asyncio.sleep(min(retry.max_backoff_s, retry.backoff_s * 2**n))
                continue
            return Answer(response, cost)
        return Answer(None, error=problem)

    async def compare(prompt: Prompt, mine: ChatResponse, best: ChatResponse) -> PairVerdict:
        request = _request(prompt)
        if judge is not None:
            return await judge.compare(request, mine, best)
        return await programmatic_compare(gates, request, mine, best)

    try:
        calls = [(p, t) for p in prompts for t in tiers]

        def asked(p: Prompt, t: str) -> Callable[[], Awaitable[Answer]]:
            return lambda: answer(p, t)

        answers_list = await _bounded(
            [asked(p, t) for p, t in calls], concurrency, ticker("answering", len(calls))
        )
        answers = {(p.id, t): a for (p, t), a in zip(calls, answers_list, strict=True)}
        skipped: Counter[str] = Counter()
        ready = []
        for p in prompts:
            failed = [t for t in tiers if answers[(p.id, t)].response is None]
            if failed:
                skipped[f"a tier's model failed ({failed[0]}: {answers[(p.id, failed[0])].error})"] += 1
            else:
                ready.append(p)
        pairs = [(p, t) for p in ready for t in tiers if t != premium]

        def judged(p: Prompt, t: str) -> Callable[[], Awaitable[PairVerdict]]:
            mine, best = answers[(p.id, t)].response, answers[(p.id, premium)].response
            assert mine is not None and best is not None
            return lambda: compare(p, mine, best)

        verdicts_list = await _bounded(
            [judged(p, t) for p, t in pairs], concurrency, ticker("judging", len(pairs))
        )
    finally:
        await engine.aclose()
    verdicts = {(p.id, t): v for (p, t), v in zip(pairs, verdicts_list, strict=True)}
    result = Labelled([], skipped, judge=judge.name if judge is not None else "programmatic")
    result.answer_cost_usd = sum(a.cost_usd for a in answers.values())
    result.judge_cost_usd = sum(v.cost_usd for v in verdicts.values())
    for p in ready:
        problems = [v.error for t in tiers if t != premium and (v := verdicts[(p.id, t)]).score is None]
        if problems:
            result.skipped[f"the judge gave no verdict ({problems[0]})"] += 1
            continue
        preference = {t: float(verdicts[(p.id, t)].score or 0.0) for t in tiers if t != premium}
        scores = {t: min(1.0, 2 * v) for t, v in preference.items()} | {premium: 1.0}
        ideal = next(t for t in tiers if scores[t] >= scores[premium])
        outcomes = {}
        for t in tiers:
            got = answers[(p.id, t)]
            assert got.response is not None
            outcomes[names[t]] = {
                "score": scores[t],
                "cost_usd": got.cost_usd,
                "response": got.response.content,
                "input_tokens": got.response.usage.input_tokens,
                "output_tokens": got.response.usage.output_tokens,
            }
        ideal_answer = answers[(p.id, ideal)].response
        result.rows.append(
            {
                "id": p.id,
                "category": p.request_class,
                "messages": p.messages,
                "outcomes": outcomes,
                "ideal_tier": ideal,
                "ideal_output": ideal_answer.content if ideal_answer is not None else None,
                "label": {
                    "judge": result.judge,
                    "preference_vs_premium": preference,
                    "reasons": {t: verdicts[(p.id, t)].reason for t in preference},
                    "logged_requests": p.seen,
                    "labelled_at": time.time(),
                },
            }
        )
    return result


def write_rows(rows: Sequence[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for row in rows:
            handle.write(orjson.dumps(row) + b"\n")
