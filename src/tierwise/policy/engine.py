"""The one orchestrator: route a request, call the planned models with retries and fallbacks, record it.

The HTTP server, the library API and the offline evaluator all go through ``Engine``. It holds no HTTP
server state and no globals: everything it needs comes in through the constructor.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from tierwise.classify.llm import LLMClassifier, LLMClassifierError
from tierwise.classify.rules import RulesClassifier
from tierwise.config import CascadeConfig, RouterConfig
from tierwise.errors import (
    AllAttemptsFailed,
    BudgetExceeded,
    RequestError,
    UnknownModelError,
    UpstreamError,
    UpstreamTimeout,
)
from tierwise.features import Features
from tierwise.gates import Gate, build_gates
from tierwise.messages import ChatRequest, ChatResponse, Usage
from tierwise.policy.cascade import run_cascade
from tierwise.policy.circuit import CIRCUIT_OPEN, GO, SKIP, TRIAL, Circuits
from tierwise.policy.direct import PlannedModel, fits, plan_from_tier
from tierwise.policy.keeping import TextKeeper
from tierwise.policy.learned_start import LearnedStart, by_tier
from tierwise.policy.streaming import OpenedStream, StreamingCompletion, open_stream
from tierwise.pricing import Pricing
from tierwise.providers.base import Provider, ProviderResult
from tierwise.store import RecordSink
from tierwise.store.records import Attempt, RecordStatus, RoutingRecord

if TYPE_CHECKING:
    pass

AUTO_MODELS = ("tierwise/auto", "auto")
CANCELLED = "cancelled before the answer was complete (the client went away or the server shut down)"
T = TypeVar("T")


@dataclass(slots=True)
class RequestContext:
    """Who asked, through which door, and when."""

    request_id: str
    endpoint: str
    api_key_id: str | None = None
    user_tier: str | None = None
    class_override: str | None = None
    ts: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    # Set (to why, e.g. "over_budget"): the cheapest tier serves the request whatever it asked for, and the
    # reason ends with ";" and this.
    route_down: str | None = None


@dataclass(slots=True)
class Route:
    """The routing decision for one request and the models it will try, in order."""

    tier: str
    request_class: str
    reason: str
    features: Features
    plan: list[PlannedModel]
    # What deciding and judging cost (an LLM classifier's call, paid gates); it counts in the request's cost.
    routing_cost_usd: float = 0.0
    policy: str = "direct"
    # A cascade's steps, e.g. ["cheap(fail:json)", "mid(pass)"].
    path: list[str] = field(default_factory=list)
    # Whether a cascade's seniors got the juniors' drafts as a hint (None: no escalation happened).
    hinted: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tier": self.tier,
            "class": self.request_class,
            "reason": self.reason,
            "plan": [f"{p.tier}:{p.model}" for p in self.plan],
            "routing_cost_usd": self.routing_cost_usd,
        }
        if self.policy != "direct":
            out["policy"] = self.policy
            out["path"] = self.path
            out["hinted"] = self.hinted
        return out


@dataclass(slots=True)
class Completion:
    response: ChatResponse
    route: Route
    record: RoutingRecord
    meta: dict[str, str]


class Engine:
    def __init__(
        self,
        config: RouterConfig,
        providers: Mapping[str, Provider],
        *,
        sink: RecordSink | None = None,
        pricing: Pricing | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        circuits: Circuits | None = None,
    ) -> None:
        self.config = config
        # A breaker per model (retry.circuit); pass your own to share them or to control their clock.
        self.circuits = circuits if circuits is not None else Circuits.from_config(config)
        self.providers = providers
        self.sink = sink
        self.pricing = pricing or Pricing(config)
        self.classifier = RulesClassifier(config)
        self.learned = LearnedStart.from_config(config)
        self.llm = self._llm_classifier()
        self._cascades: dict[str, tuple[CascadeConfig, list[Gate]]] = {}
        self._sleep = sleep
        premium = config.tiers[config.premium_tier][0]
        self._baseline_model = premium
        # What records keep of the conversation and the answer (store.prompts, store.redact).
        self._keep = TextKeeper.from_config(config)

    def _llm_classifier(self) -> LLMClassifier | None:
        spec = self.config.routing.llm_classifier
        if spec is None:
            return None
        model = self.config.models[spec.model]
        provider = self.providers[model.provider]
        return LLMClassifier(
            spec, provider, model.name or spec.model, lambda u: self.pricing.cost(spec.model, u)
        )

    def cascade_for(self, request_class: str) -> tuple[CascadeConfig, list[Gate]]:
        """The cascade settings and gates of a request class (its overrides applied), built once per class."""
        found = self._cascades.get(request_class)
        if found is None:
            spec = self.config.routing.cascade.for_class(request_class)
            found = self._cascades[request_class] = (
                spec,
                build_gates(spec.gates, call_model=self.call_model),
            )
        return found

    async def call_model(
        self, model: str, request: ChatRequest, timeout: float
    ) -> tuple[ChatResponse, float]:
        """One call to a configured model, for the router's own needs (gates): the answer and its cost."""
        spec = self.config.models[model]
        async with asyncio.timeout(timeout):
            result = await self.providers[spec.provider].complete(
                request, spec.name or model, timeout=timeout
            )
        return result.response, self._attempt_cost(model, result.response.usage, result.cost_usd)

    @property
    def model_names(self) -> list[str]:
        """What clients may put in ``model``."""
        names = ["tierwise/auto"]
        if self.config.routing.allow_explicit_tier:
            names += [f"tierwise/{t}" for t in self.config.tier_names]
            names += list(self.config.models)
        return names

    # ---- routing ----

    def route(self, request: ChatRequest, ctx: RequestContext, start: tuple[str, str] | None = None) -> Route:
        """Decide the tier and the plan; raises RequestError for requests no model can take. ``start`` (tier,
        reason) is the LLM classifier's choice, when one was made."""
        if ctx.route_down is not None:
            return self._routed_down(request, ctx)
        features = self.classifier.features(request, ctx.user_tier)
        requested, ceiling, via = self.resolve_model(request.model)
        retry = self.config.retry
        explicit = self.config.routing.allow_explicit_tier or bool(via)
        # The learned router's scores, computed at most once a request (the start and auto both read them).
        scored: tuple[Any, Any] | None = None
        if requested in AUTO_MODELS:
            if start is None and self.learned is not None:
                scored = self.learned.scores(request, features)
                start = self.learned.start(request, features, scored)
            choice = self.classifier.classify(request, features, start)
            tier, reason, request_class = choice.tier, choice.reason, choice.request_class
        elif explicit and requested.startswith("tierwise/"):
            tier = requested.removeprefix("tierwise/")
            if tier not in self.config.tiers:
                raise UnknownModelError(requested, self.model_names)
            reason, request_class = "explicit:tier", features.task
        elif explicit and requested in self.config.models:
            tier = next((t for t, ms in self.config.tiers.items() if requested in ms), "")
            plan = [PlannedModel(tier, requested)]
            return Route(tier, ctx.class_override or features.task, "explicit:model" + via, features, plan)
        else:
            raise UnknownModelError(requested, self.model_names)
        policy: str = self.config.routing.policy
        if requested in AUTO_MODELS and policy != "direct":
            klass = ctx.class_override or request_class
            override = self.config.routing.cascade.classes.get(klass)
            if override is not None and override.policy == "direct":
                policy = "direct"
                if override.tier is not None:
                    # The class's own tier replaces the task type's; the rules after it apply the same.
                    choice = self.classifier.classify(request, features, (override.tier, f"class={klass}"))
                    tier, reason = choice.tier, choice.reason
            elif policy == "auto" and not choice.forced and self.learned is not None:
                if scored is None:
                    scored = self.learned.scores(request, features)
                tier, reason, policy = self._auto(tier, scored[0])
        forced = requested in AUTO_MODELS and choice.forced
        if requested in AUTO_MODELS and policy == "cascade":
            return self._cascade_route(
                tier, reason, request_class, features, ctx, forced=forced, ceiling=ceiling, via=via
            )
        tiers = self.config.tier_names
        # A route_down alias caps the tier, but not the keyword blacklist: what it forces goes to premium.
        if ceiling is not None and not forced and tiers.index(tier) > tiers.index(ceiling):
            tier, via = ceiling, f"{via};max:{ceiling}"
        plan, moved_by = plan_from_tier(self.config, tier, features, fallback_up=retry.fallback_up)
        if ceiling is not None and not forced:
            # Upstream fallbacks stay at or below the alias's tier too (a hard limit may still move it up).
            plan = [p for p in plan if tiers.index(p.tier) <= tiers.index(ceiling)] or plan[:1]
        if moved_by is not None:
            reason += f";hard:{moved_by}"
        return Route(plan[0].tier, ctx.class_override or request_class, reason + via, features, plan)

    def _routed_down(self, request: ChatRequest, ctx: RequestContext) -> Route:
        """The route of a request ``ctx.route_down`` sends to the cheapest tier (a key over its budget): that
        tier's models that can take it, whatever model, tier, rule or keyword would have picked otherwise."""
        features = self.classifier.features(request, ctx.user_tier)
        requested, _, via = self.resolve_model(request.model)
        explicit = self.config.routing.allow_explicit_tier or bool(via)
        config = self.config
        named = requested.startswith("tierwise/") and requested.removeprefix("tierwise/") in config.tiers
        if requested not in AUTO_MODELS and not (explicit and (named or requested in config.models)):
            raise UnknownModelError(requested, self.model_names)
        choice = self.classifier.classify(request, features)
        tier = config.tier_names[0]
        plan = [PlannedModel(tier, m) for m in config.tiers[tier] if fits(config, m, features) is None]
        if not plan:
            why = ", ".join(sorted({str(fits(config, m, features)) for m in config.tiers[tier]}))
            raise BudgetExceeded(
                f"only the {tier} tier may answer this API key's requests ({ctx.route_down}), and none of "
                f"its models can take this one ({why})"
            )
        reason = f"{choice.reason}{via};{ctx.route_down}"
        return Route(tier, ctx.class_override or choice.request_class, reason, features, plan)

    def resolve_model(self, model: str) -> tuple[str, str | None, str]:
        """What a requested model name stands for after ``routing.model_aliases``: the name to route it as,
        the highest tier the router may pick (a ``route_down`` alias), and what the reason says of it."""
        alias = self.config.routing.alias_for(model)
        if alias is None:
            return model, None, ""
        if alias.route_down:
            return AUTO_MODELS[0], alias.to.removeprefix("tierwise/"), f";alias:{alias.match}"
        return alias.to, None, f";alias:{alias.match}"

    def _auto(self, tier: str, p: Any) -> tuple[str, str, str]:
        """The auto policy: direct where the learned classifier is confident, a cascade where it is not.
        ``p`` is the learned router's routing scores for the request."""
        bands = self.config.routing.auto
        # The bands are on the routing scores (what the thresholds compare too), as `tierwise bench` and
        # `tierwise calibrate --policy auto` measure and calibrate them.
        shown = by_tier(self.config.tier_names, p)
        if p[0] >= bands.confident_cheap:
            return (
                self.config.tier_names[0],
                f"auto:direct(score({shown})>={bands.confident_cheap:g})",
                "direct",
            )
        if float(p.max()) < bands.confident_premium:
            premium = self.config.premium_tier
            return premium, f"auto:direct(score({shown})<{bands.confident_premium:g})", "direct"
        return tier, f"auto:unsure(score({shown}))", "cascade"

    def _cascade_route(
        self,
        tier: str,
        reason: str,
        request_class: str,
        features: Features,
        ctx: RequestContext,
        *,
        forced: bool,
        ceiling: str | None = None,
        via: str = "",
    ) -> Route:
        """The cascade's route: from its start tier (the classifier's, where the blacklist forced it) up to
        premium, or to the user tier's cap, or to the ``ceiling`` a route_down model alias sets (not where
        the blacklist forced premium). ``via`` (the alias) ends the reason, then ``;max:<tier>`` when the
        ceiling lowered the start tier, as on the direct path."""
        spec, _ = self.cascade_for(ctx.class_override or request_class)
        tiers = self.config.tier_names
        if reason.startswith("auto:"):
            tier, reason = tiers[0], reason
        elif not forced and spec.start == "cheapest":
            tier, reason = tiers[0], "cascade:cheapest"
        elif not forced and spec.start != "classifier":
            tier, reason = spec.start, f"cascade:{spec.start}"
        else:
            reason = f"cascade:{reason}"
        if forced:
            ceiling = None
        if ceiling is not None and tiers.index(tier) > tiers.index(ceiling):
            tier, via = ceiling, f"{via};max:{ceiling}"
        plan, moved_by = plan_from_tier(self.config, tier, features, fallback_up=True)
        cap = self.config.routing.user_tier_caps.get(ctx.user_tier or "")
        if cap is not None and not forced:
            allowed = tiers[: tiers.index(cap) + 1]
            plan = [p for p in plan if p.tier in allowed] or plan[:1]
        if ceiling is not None:
            plan = [p for p in plan if tiers.index(p.tier) <= tiers.index(ceiling)] or plan[:1]
        if moved_by is not None:
            reason += f";hard:{moved_by}"
        return Route(
            plan[0].tier, ctx.class_override or request_class, reason + via, features, plan, policy="cascade"
        )

    async def decide(self, request: ChatRequest, ctx: RequestContext) -> Route:
        """``route``, after asking the LLM classifier when one is configured and the request is routed. A
        failed classifier call falls back to the other classifiers; what it cost is routing tax either way."""
        if self.llm is None or ctx.route_down or self.resolve_model(request.model)[0] not in AUTO_MODELS:
            return self.route(request, ctx)
        try:
            verdict = await self.llm.classify(request)
        except asyncio.CancelledError:
            # The client went away (or shutdown's grace ran out) while the classifier was deciding.
            self._record_cancelled_decision(request, ctx)
            raise
        except LLMClassifierError as exc:
            route = self.route(request, ctx)
            route.reason = f"llm:fallback({exc.reason});{route.reason}"
            route.routing_cost_usd = exc.cost_usd
            return route
        route = self.route(request, ctx, self.llm.start_tier(verdict, self.config.tier_names))
        route.routing_cost_usd = verdict.cost_usd
        return route

    def _record_cancelled_decision(self, request: ChatRequest, ctx: RequestContext) -> None:
        """Leave the record of a request cancelled while the LLM classifier was deciding: the route the
        other classifiers would have picked (reason ``llm:cancelled;...``), with no attempts."""
        try:
            route = self.route(request, ctx)
        except Exception:
            features = self.classifier.features(request, ctx.user_tier)
            route = Route("", ctx.class_override or features.task, "", features, [])
        route.reason = f"llm:cancelled;{route.reason}" if route.reason else "llm:cancelled"
        self._submit(self._record(request, ctx, route, [], "error", 499, error=CANCELLED))

    # ---- calling ----

    def _settle(self, attempt: Attempt, planned: PlannedModel, result: ProviderResult) -> None:
        """Put an answered attempt's tokens and cost on its record."""
        usage = result.response.usage
        attempt.input_tokens, attempt.output_tokens = usage.input_tokens, usage.output_tokens
        attempt.cost_usd = self._attempt_cost(planned.model, usage, result.cost_usd)

    def _attempt_cost(self, model: str, usage: Usage, known: float | None) -> float:
        if known is not None:
            return known
        cost = self.pricing.cost(model, usage)
        return 0.0 if cost is None else cost

    async def _with_retries(
        self,
        route: Route,
        attempts: list[Attempt],
        call: Callable[[Provider, str, float], Awaitable[T]],
    ) -> tuple[PlannedModel, T]:
        """Try each planned model, retrying retryable failures with backoff, until one call succeeds."""
        retry = self.config.retry
        for planned in route.plan:
            spec = self.config.models[planned.model]
            provider = self.providers[spec.provider]
            upstream = spec.name or planned.model
            breaker = self.circuits.get(planned.model)
            for n in range(retry.attempts):
                allowed = GO if breaker is None else breaker.allow()
                if allowed == SKIP:
                    # The model's circuit is open: no call; the next model takes over at once.
                    attempts.append(
                        Attempt(
                            tier=planned.tier,
                            model=planned.model,
                            provider=provider.name,
                            status="error",
                            latency_ms=0.0,
                            error=CIRCUIT_OPEN,
                            retry=n,
                        )
                    )
                    break
                trial = allowed == TRIAL
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(retry.timeout_s):
                        result = await call(provider, upstream, retry.timeout_s)
                except (TimeoutError, UpstreamError, RequestError) as exc:
                    err = _as_upstream_error(exc, retry.timeout_s)
                    if breaker is not None:
                        if err.retryable:
                            breaker.failure(trial)
                        else:
                            breaker.release(trial)
                    attempts.append(
                        Attempt(
                            tier=planned.tier,
                            model=planned.model,
                            provider=provider.name,
                            status="timeout" if isinstance(err, UpstreamTimeout) else "error",
                            latency_ms=(time.perf_counter() - started) * 1000,
                            http_status=err.status,
                            error=err.message,
                            retry=n,
                        )
                    )
                    if not err.retryable or n + 1 >= retry.attempts:
                        break
                    if breaker is not None and breaker.state == "open":
                        # This failure (or another request's) opened the model's circuit: no backoff
                        # and no retry, the next model takes over at once.
                        break
                    if err.retry_after is not None:
                        if err.retry_after > retry.max_retry_after_s:
                            break
                        delay = err.retry_after
                    else:
                        delay = min(retry.max_backoff_s, retry.backoff_s * 2**n) * random.uniform(0.5, 1.0)
                    await self._sleep(delay)
                    continue
                except BaseException:
                    if breaker is not None:
                        breaker.release(trial)
                    raise
                if breaker is not None:
                    breaker.success(trial)
                attempts.append(
                    Attempt(
                        tier=planned.tier,
                        model=planned.model,
                        provider=provider.name,
                        status="ok",
                        latency_ms=(time.perf_counter() - started) * 1000,
                        retry=n,
                    )
                )
                return planned, result
        raise AllAttemptsFailed(attempts)

    async def complete(
        self, request: ChatRequest, ctx: RequestContext, route: Route | None = None
    ) -> Completion:
        """Route and answer ``request``. Always leaves a record, whether it succeeds or raises."""
        route = route or await self.decide(request, ctx)
        attempts: list[Attempt] = []

        async def call(provider: Provider, model: str, timeout: float) -> ProviderResult:
            return await provider.complete(request, model, timeout=timeout)

        try:
            if route.policy == "cascade":
                spec, gates = self.cascade_for(route.request_class)
                planned, result = await run_cascade(self, request, route, attempts, gates, spec)
            else:
                planned, result = await self._with_retries(route, attempts, call)
                self._settle(attempts[-1], planned, result)
        except AllAttemptsFailed as exc:
            self._submit(self._record(request, ctx, route, attempts, "error", 502, error=str(exc)))
            raise
        except Exception as exc:
            self._submit(
                self._record(request, ctx, route, attempts, "error", 500, error=f"internal error: {exc!r}")
            )
            raise
        except asyncio.CancelledError:
            # The client went away, or shutdown's grace period ran out: the request still leaves a record.
            self._submit(self._record(request, ctx, route, attempts, "error", 499, error=CANCELLED))
            raise
        response = result.response
        record = self._record(request, ctx, route, attempts, "ok", 200, response=response, planned=planned)
        self._submit(record)
        return Completion(response, route, record, result.meta)

    async def stream(
        self, request: ChatRequest, ctx: RequestContext, route: Route | None = None
    ) -> StreamingCompletion:
        """Route and open a streamed answer. Retries and fallbacks happen before the first event reaches the
        client; a failure after that ends the stream with an error (and is recorded)."""
        route = route or await self.decide(request, ctx)
        attempts: list[Attempt] = []

        async def call(provider: Provider, model: str, timeout: float) -> OpenedStream:
            return await open_stream(provider.stream(request, model, timeout=timeout))

        try:
            spec, gates = self.cascade_for(route.request_class)
            if route.policy == "cascade" and spec.stream_first:
                # Streamed live from the start tier, ungated: this class rarely escalates.
                route.path.append(f"{route.tier}(stream_first)")
                planned, opened = await self._with_retries(route, attempts, call)
            elif route.policy == "cascade":

                def open_last(req: ChatRequest) -> Callable[[Provider, str, float], Awaitable[OpenedStream]]:
                    async def opener(provider: Provider, model: str, timeout: float) -> OpenedStream:
                        return await open_stream(provider.stream(req, model, timeout=timeout))

                    return opener

                planned, got = await run_cascade(
                    self, request, route, attempts, gates, spec, open_last=open_last
                )
                opened = got if isinstance(got, OpenedStream) else await open_stream(got)
            else:
                planned, opened = await self._with_retries(route, attempts, call)
        except AllAttemptsFailed as exc:
            self._submit(self._record(request, ctx, route, attempts, "error", 502, error=str(exc)))
            raise
        except Exception as exc:
            self._submit(
                self._record(request, ctx, route, attempts, "error", 500, error=f"internal error: {exc!r}")
            )
            raise
        except asyncio.CancelledError:
            # The client went away, or shutdown's grace period ran out: the request still leaves a record.
            self._submit(self._record(request, ctx, route, attempts, "error", 499, error=CANCELLED))
            raise
        return StreamingCompletion(self, request, ctx, route, attempts, planned, opened)

    # ---- records ----

    def baseline_cost(self, usage: Usage) -> float | None:
        """What the premium tier's first model would have charged for the same tokens."""
        return self.pricing.cost(self._baseline_model, usage)

    def _record(
        self,
        request: ChatRequest,
        ctx: RequestContext,
        route: Route,
        attempts: list[Attempt],
        status: RecordStatus,
        http_status: int,
        *,
        response: ChatResponse | None = None,
        planned: PlannedModel | None = None,
        error: str | None = None,
    ) -> RoutingRecord:
        usage = response.usage if response is not None else Usage(route.features.input_tokens, 0)
        return RoutingRecord(
            request_id=ctx.request_id,
            ts=ctx.ts,
            endpoint=ctx.endpoint,
            status=status,
            http_status=http_status,
            requested_model=request.model,
            api_key_id=ctx.api_key_id,
            user_tier=ctx.user_tier,
            request_class=route.request_class,
            tier=planned.tier if planned else route.tier,
            model=planned.model if planned else None,
            reason=route.reason,
            features=route.features.to_dict(),
            decision=route.to_dict(),
            attempts=attempts,
            error=error,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=route.routing_cost_usd + sum(a.cost_usd for a in attempts),
            routing_cost_usd=route.routing_cost_usd,
            baseline_cost_usd=self.baseline_cost(usage),
            latency_ms=(time.perf_counter() - ctx.started) * 1000,
            stream=request.stream,
            prompt=self._keep.prompt(request),
            response_id=ctx.request_id if response is not None else None,
            response_text=self._keep.response_text(response),
        )

    def _submit(self, record: RoutingRecord) -> None:
        if self.sink is not None:
            self.sink.submit(record)

    def record_rejected(
        self, ctx: RequestContext, error: RequestError, *, requested_model: str | None = None
    ) -> RoutingRecord:
        """Record a request refused before routing (bad input, unknown model, auth)."""
        record = RoutingRecord(
            request_id=ctx.request_id,
            ts=ctx.ts,
            endpoint=ctx.endpoint,
            status="rejected",
            http_status=error.status,
            requested_model=requested_model,
            api_key_id=ctx.api_key_id,
            user_tier=ctx.user_tier,
            error=error.message,
            latency_ms=(time.perf_counter() - ctx.started) * 1000,
        )
        self._submit(record)
        return record

    async def aclose(self) -> None:
        for provider in self.providers.values():
            await provider.aclose()


def _as_upstream_error(exc: Exception, timeout: float) -> UpstreamError:
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, RequestError):
        # This upstream's format cannot carry the request (say, tool arguments that are not JSON, for
        # Anthropic); another model may take it, so move on without retrying.
        return UpstreamError(f"cannot send to this upstream: {exc.message}", status=400)
    return UpstreamTimeout(f"no answer in {timeout:g}s")
