"""The cascade policy: the cheapest tier tries first, the gates judge its answer, and a failing answer
escalates to the next tier with the junior answer (and why it failed) as a hint.

    cheap ──► gates ──pass──► answer
                 └─fail──► mid (+ hint: cheap's draft) ──► gates ──fail──► premium (+ both drafts)

Every tier tried leaves its attempts in the record, each answered attempt with its gates' verdicts; the path
(``cheap(fail:json)->mid(pass)``) goes into the record's decision and the ``x-tierwise-path`` header. The
last tier's answer stands whatever its gates say. A tier whose models all fail upstream escalates too.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tierwise.config import CascadeConfig
from tierwise.errors import AllAttemptsFailed
from tierwise.gates import Gate, GateVerdict
from tierwise.messages import ChatRequest
from tierwise.policy.direct import PlannedModel
from tierwise.providers.base import BufferedStream, Provider, ProviderResult
from tierwise.store.records import Attempt

if TYPE_CHECKING:
    from tierwise.policy.engine import Engine, Route


def with_hint(request: ChatRequest, drafts: list[tuple[str, str, list[str]]], template: str) -> ChatRequest:
    """``request`` carrying the juniors' drafts as its hint (each wire format puts it in the system prompt;
    it never reaches the client). ``drafts``: (tier, answer, reasons it failed), oldest first."""
    reasons = "; ".join(f"{tier}: {', '.join(why)}" for tier, _, why in drafts)
    blocks = "\n".join(f'<draft tier="{tier}">\n{answer}\n</draft>' for tier, answer, _ in drafts)
    return dataclasses.replace(request, hint=template.format(reasons=reasons, drafts=blocks))


def _tiers_of(plan: list[PlannedModel]) -> dict[str, list[PlannedModel]]:
    out: dict[str, list[PlannedModel]] = {}
    for planned in plan:
        out.setdefault(planned.tier, []).append(planned)
    return out


async def judge(
    gates: list[Gate],
    request: ChatRequest,
    result: ProviderResult,
    *,
    final: bool,
    tier: int | None = None,
    junior: str | None = None,
) -> list[GateVerdict]:
    """The gates' verdicts, in order. A paid gate (``costly``, e.g. critique) is skipped where its verdict
    could change nothing: on the last tier, whose answer stands anyway, and after another gate has failed.
    A gate that judges answers by tier (the learned gate's ``check_at``) is told the answering tier's
    position, ``tier`` (0: the cheapest), and ``junior``, the answer of the tier just below when the cascade
    has it (the learned gate reads their agreement)."""
    verdicts: list[GateVerdict] = []
    for gate in gates:
        if getattr(gate, "costly", False) and (final or any(not v.passed for v in verdicts)):
            continue
        check_at = getattr(gate, "check_at", None)
        if check_at is not None and tier is not None:
            verdicts.append(await check_at(request, result.response, tier, junior=junior))
        else:
            verdicts.append(await gate.check(request, result.response))
    return verdicts


async def run_cascade(
    engine: Engine,
    request: ChatRequest,
    route: Route,
    attempts: list[Attempt],
    gates: list[Gate],
    spec: CascadeConfig,
    *,
    open_last: Callable[[ChatRequest], Callable[[Provider, str, float], Awaitable[Any]]] | None = None,
) -> tuple[PlannedModel, Any]:
    """Run the cascade over ``route.plan``. Returns the answering model and its ProviderResult or, when
    ``open_last`` is given (streaming), what ``open_last(request)`` opens: the last tier is then streamed
    live, and a junior answer that passes is replayed as a stream."""
    by_tier = _tiers_of(route.plan)
    tiers = list(by_tier)
    drafts: list[tuple[str, str, list[str]]] = []
    current = request
    escalations = 0
    answered: tuple[PlannedModel, ProviderResult] | None = None
    for i, tier in enumerate(tiers):
        spent = route.routing_cost_usd + sum(a.cost_usd for a in attempts)
        final = (
            i == len(tiers) - 1
            or escalations >= spec.max_escalations
            or (spec.max_cost_usd is not None and spent >= spec.max_cost_usd)
        )
        sub = dataclasses.replace(route, plan=by_tier[tier])
        if final and open_last is not None:
            try:
                planned, opened = await engine._with_retries(sub, attempts, open_last(current))
            except AllAttemptsFailed:
                route.path.append(f"{tier}(error)")
                if answered is None:
                    raise
                route.path.append(f"{answered[0].tier}(kept)")
                return answered[0], BufferedStream(answered[1])
            route.path.append(f"{tier}(final)")
            return planned, opened

        async def call(
            provider: Provider, model: str, timeout: float, req: ChatRequest = current
        ) -> ProviderResult:
            return await provider.complete(req, model, timeout=timeout)

        try:
            planned, result = await engine._with_retries(sub, attempts, call)
        except AllAttemptsFailed:
            route.path.append(f"{tier}(error)")
            if final:
                if answered is None:
                    raise
                # The seniors could not answer: the last junior answer is better than no answer.
                route.path.append(f"{answered[0].tier}(kept)")
                return answered[0], BufferedStream(answered[1]) if open_last is not None else answered[1]
            escalations += 1
            continue
        answered = (planned, result)
        engine._settle(attempts[-1], planned, result)
        position = engine.config.tier_names.index(planned.tier)
        below = engine.config.tier_names[position - 1] if position else None
        junior = drafts[-1][1] if drafts and drafts[-1][0] == below else None
        verdicts = await judge(gates, request, result, final=final, tier=position, junior=junior)
        attempts[-1].gates = [v.to_dict() for v in verdicts]
        route.routing_cost_usd += sum(v.cost_usd for v in verdicts)
        failed = [v.gate for v in verdicts if not v.passed]
        if not failed or final:
            route.path.append(f"{tier}(pass)" if not failed else f"{tier}(fail:{','.join(failed)};final)")
            if open_last is not None:
                return planned, BufferedStream(result)
            return planned, result
        route.path.append(f"{tier}(fail:{','.join(failed)})")
        if route.hinted is None:
            route.hinted = spec.hints and random.random() >= spec.hint_holdout
        drafts.append(
            (tier, result.response.content or "", [f"{v.gate}: {v.reason}" for v in verdicts if not v.passed])
        )
        current = with_hint(request, drafts, spec.hint_template) if route.hinted else request
        escalations += 1
    raise AllAttemptsFailed(attempts)
