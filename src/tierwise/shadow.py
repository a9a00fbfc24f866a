"""Shadow mode and live baseline sampling: the router measured against the model a team uses today.

``mode: shadow`` serves every routed request (``tierwise/auto``) from the baseline model, exactly as the team
does now, and for a sampled share (``shadow.sample``) runs the router's own route in the background. ``mode:
live`` serves the router's route and, for ``shadow.baseline_sample`` of requests, asks the baseline model in
the background. Either way the two answers are compared (``tierwise.judge``: a pairwise, position-swapped
judge, or the programmatic comparison) and one ``Comparison`` row is written per sampled request.

Background work never reaches the client and never delays it: it starts after the client's answer is
complete, as a task of its own; at most ``max_concurrent`` run at once (a sampled request that finds them
busy is skipped, never queued), and past ``max_spend_usd_per_day`` (background answers plus judging, per UTC
day) no new comparison starts. The spend is counted through the proxy's KeyRing, in the store's usage rows:
every replica and worker sharing the store holds the one cap, and a restart keeps the day's spend. A
background answer that fails still counts what its attempts cost. Background answers leave no request record
of their own: their cost is in the comparison row, so the request counts stay the client's.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import random
import time
from collections import Counter
from typing import TYPE_CHECKING

from tierwise.config import DEFAULT_GATES, GateSpec, RouterConfig
from tierwise.errors import AllAttemptsFailed
from tierwise.gates import build_gates
from tierwise.judge import PairVerdict, PairwiseJudge, programmatic_compare
from tierwise.messages import ChatRequest, ChatResponse
from tierwise.policy.direct import PlannedModel
from tierwise.policy.engine import AUTO_MODELS
from tierwise.store.records import Comparison, RoutingRecord

if TYPE_CHECKING:
    from tierwise.keys import KeyRing
    from tierwise.policy.engine import Engine, RequestContext, Route
    from tierwise.store import RecordSink

_DAY = 86400


class ShadowState:
    """What outlives a reload: the running comparisons, the per-day spend and the skip counts. The proxy
    owns one and hands it to every ``Shadow`` it builds, so a reload resets neither the cap nor the count.
    With ``ring`` (the proxy's KeyRing) the spend is the store's, shared by every process that uses it;
    without, this process's own."""

    def __init__(self, ring: KeyRing | None = None) -> None:
        self.tasks: set[asyncio.Task[None]] = set()
        self.skipped: Counter[str] = Counter()
        self.ring = ring
        self._day = -1
        self._spent = 0.0

    @property
    def spent_today(self) -> float:
        if self.ring is not None:
            return self.ring.shadow_spent_today()
        return self._spent if self._day == int(time.time() // _DAY) else 0.0

    def spend(self, usd: float) -> None:
        if self.ring is not None:
            self.ring.count_shadow_spend(usd)
            return
        day = int(time.time() // _DAY)
        if day != self._day:
            self._day, self._spent = day, 0.0
        self._spent += usd

    async def drain(self, timeout: float) -> None:
        """Let running comparisons finish for up to ``timeout`` seconds, then cancel what is left."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(list(self.tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


class Shadow:
    """The background comparisons of one engine (rebuilt with it on reload; ``state`` carries over)."""

    def __init__(
        self,
        config: RouterConfig,
        engine: Engine,
        sink: RecordSink | None,
        state: ShadowState | None = None,
    ) -> None:
        self.config = config
        self.spec = config.shadow
        self.mode = config.mode
        # The same providers, classifiers and gates, but no request records for background answers.
        self.engine = copy.copy(engine)
        self.engine.sink = None
        self.sink = sink
        self.baseline_model = self.spec.baseline_model or config.tiers[config.premium_tier][0]
        self.baseline_tier = next(
            (t for t, models in config.tiers.items() if self.baseline_model in models), config.premium_tier
        )
        judge = self.spec.judge
        self.judge = (
            PairwiseJudge(judge.model, engine.call_model, timeout_s=judge.timeout_s, swap=judge.swap)
            if judge.model
            else None
        )
        self.gates = build_gates([GateSpec(type=t) for t in DEFAULT_GATES])
        self.state = state if state is not None else ShadowState()
        self.tasks = self.state.tasks
        self.skipped = self.state.skipped

    @property
    def rate(self) -> float:
        return self.spec.sample if self.mode == "shadow" else self.spec.baseline_sample

    @property
    def spent_today(self) -> float:
        return self.state.spent_today

    def _spend(self, usd: float) -> None:
        self.state.spend(usd)

    def routed(self, request: ChatRequest) -> bool:
        """Whether the router chooses the model: ``tierwise/auto``, or a model alias that stands for it."""
        return self.engine.resolve_model(request.model)[0] in AUTO_MODELS

    def serve_route(self, request: ChatRequest, ctx: RequestContext) -> Route | None:
        """In shadow mode, the route that serves a routed request: the baseline model. The router's own
        decision (without an LLM classifier's call) names the request's class and is kept in the reason."""
        if self.mode != "shadow" or not self.routed(request):
            return None
        from tierwise.policy.engine import Route

        router = self.engine.route(request, ctx)
        return Route(
            self.baseline_tier,
            router.request_class,
            f"shadow:baseline;router:{router.tier}({router.reason})",
            router.features,
            [PlannedModel(self.baseline_tier, self.baseline_model)],
        )

    def after(
        self,
        request: ChatRequest,
        ctx: RequestContext,
        record: RoutingRecord | None,
        response: ChatResponse | None,
    ) -> None:
        """The client's answer is complete: maybe start a background comparison with it."""
        if record is None or response is None or record.status != "ok" or not self.routed(request):
            return
        rate = self.rate
        if rate <= 0 or random.random() >= rate:
            return
        if self.spent_today >= self.spec.max_spend_usd_per_day:
            self.skipped["budget"] += 1
            return
        if len(self.tasks) >= self.spec.max_concurrent:
            self.skipped["busy"] += 1
            return
        task = asyncio.create_task(self._compare(request, ctx, record, response))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(
        self, request: ChatRequest, ctx: RequestContext, route: Route | None
    ) -> tuple[ChatResponse, RoutingRecord]:
        from tierwise.policy.engine import RequestContext

        inner = RequestContext(
            request_id=ctx.request_id + ":shadow", endpoint="shadow", api_key_id=ctx.api_key_id,
            user_tier=ctx.user_tier, class_override=ctx.class_override,
        )  # fmt: skip
        if route is None:
            route = await self.engine.decide(request, inner)
        done = await self.engine.complete(request, inner, route)
        return done.response, done.record

    async def _compare(
        self, request: ChatRequest, ctx: RequestContext, served: RoutingRecord, response: ChatResponse
    ) -> None:
        from tierwise.policy.engine import Route

        request = dataclasses.replace(request, stream=False)
        pair = Comparison(
            request_id=ctx.request_id, ts=time.time(),
            mode="shadow" if self.mode == "shadow" else "baseline_sample",
            request_class=served.request_class, router_tier=None, router_model=None,
            baseline_model=self.baseline_model,
        )  # fmt: skip
        background = False  # while the background answer is being asked for
        try:
            if self.mode == "shadow":
                # The client got the baseline's answer; the router answers now.
                pair.baseline_cost_usd, pair.baseline_latency_ms = served.cost_usd, served.latency_ms
                baseline_answer = response
                background = True
                router_answer, got = await self._answer(request, ctx, None)
                background = False
                pair.router_tier, pair.router_model = got.tier, got.model
                pair.router_cost_usd, pair.router_latency_ms = got.cost_usd, got.latency_ms
                self._spend(got.cost_usd)
            else:
                # The client got the router's answer; the baseline answers now, unless it was the baseline.
                pair.router_tier, pair.router_model = served.tier, served.model
                pair.router_cost_usd, pair.router_latency_ms = served.cost_usd, served.latency_ms
                router_answer = response
                if served.model == self.baseline_model:
                    pair.baseline_cost_usd, pair.baseline_latency_ms = served.cost_usd, served.latency_ms
                    baseline_answer = response
                else:
                    features = self.engine.classifier.features(request, ctx.user_tier)
                    route = Route(
                        self.baseline_tier, served.request_class or features.task, "shadow:baseline",
                        features, [PlannedModel(self.baseline_tier, self.baseline_model)],
                    )  # fmt: skip
                    background = True
                    baseline_answer, got = await self._answer(request, ctx, route)
                    background = False
                    pair.baseline_cost_usd, pair.baseline_latency_ms = got.cost_usd, got.latency_ms
                    self._spend(got.cost_usd)
            if pair.router_model == self.baseline_model:
                verdict = PairVerdict(0.5, "the router chose the baseline model")
                pair.judge = "same_model"
            elif self.judge is not None:
                verdict = await self.judge.compare(request, router_answer, baseline_answer)
                pair.judge = self.judge.name
            else:
                verdict = await programmatic_compare(self.gates, request, router_answer, baseline_answer)
                pair.judge = "programmatic"
            self._spend(verdict.cost_usd)
            pair.score, pair.reason, pair.judge_cost_usd, pair.error = (
                verdict.score, verdict.reason, verdict.cost_usd, verdict.error,
            )  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an upstream failure of the background side: recorded, never raised
            if isinstance(exc, AllAttemptsFailed) and background:
                # Paid attempts (a rejected cascade step, an answer cut short) still count.
                cost = sum(a.cost_usd for a in exc.attempts)
                self._spend(cost)
                if self.mode == "shadow":
                    pair.router_cost_usd = cost
                else:
                    pair.baseline_cost_usd = cost
            pair.error = f"{exc.__class__.__name__}: {exc}"[:300]
        if self.sink is not None:
            self.sink.submit(pair)

    async def drain(self, timeout: float) -> None:
        """Let running comparisons (this engine's and earlier ones') finish for up to ``timeout`` seconds."""
        await self.state.drain(timeout)
