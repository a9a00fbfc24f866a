"""Offline evaluation through the real engine: every prompt of a routing eval set goes through the same
routing, planning, retry and recording code as a live request, with a replay provider answering from the
set's recorded outcomes instead of an HTTP upstream. What is measured here is what runs live."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tierwise.config import ReplayProviderConfig, RouterConfig, parse_config
from tierwise.errors import AllAttemptsFailed, ConfigError, RequestError
from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import OutcomeTable, default_tier_names, ideal_tiers
from tierwise.evals.sweep import to_request
from tierwise.policy.engine import Engine, RequestContext
from tierwise.providers.base import Provider
from tierwise.providers.replay import ReplayIndex, ReplayProvider
from tierwise.store.records import Comparison, Feedback, RoutingRecord


def config_for_tiers(models: Sequence[str]) -> RouterConfig:
    """A router config whose tiers are dataset models, cheapest first, served by replay."""
    if len(models) < 2:
        raise ConfigError("--tiers: name at least two models, cheapest first (CHEAP,[MID,]PREMIUM)")
    names = default_tier_names(len(models))
    data: dict[str, Any] = {
        "providers": {"replay": {"type": "replay"}},
        "models": {m: {"provider": "replay"} for m in models},
        "tiers": {t: [m] for t, m in zip(names, models, strict=True)},
    }
    if len(models) != 3:
        # The default task and domain tiers name cheap/mid/premium; spread them over these tiers instead.
        data["routing"] = {
            "default_tier": names[0],
            "task_tiers": {t: names[0] for t in ("classify", "extract", "rephrase", "summarize", "chat")}
            | {"code": names[len(names) // 2], "reasoning": names[len(names) // 2]},
            "domains": {},
        }
    return parse_config(data, "--tiers")


def tier_models(config: RouterConfig) -> list[str]:
    """Per tier, the dataset model its first configured model replays."""
    return [config.models[ms[0]].name or ms[0] for ms in config.tiers.values()]


class _Collector:
    def __init__(self) -> None:
        self.records: list[RoutingRecord] = []

    def submit(self, record: RoutingRecord | Feedback | Comparison) -> None:
        if isinstance(record, RoutingRecord):
            self.records.append(record)


def replay_engine(config: RouterConfig, records: Sequence[EvalRecord]) -> tuple[Engine, _Collector]:
    """An engine over ``config`` whose every provider replays ``records``."""
    index = ReplayIndex(list(records), nearest=False)
    missing = [
        f"{name} (upstream name {spec.name or name!r})"
        for name, spec in config.models.items()
        if (spec.name or name) not in index.models and any(name in ms for ms in config.tiers.values())
    ]
    if missing:
        raise ConfigError(
            f"models with no recorded outcomes in the data: {', '.join(missing)}; "
            f"the data has: {', '.join(index.models)}"
        )
    provider = ReplayProvider("replay", ReplayProviderConfig(type="replay"), index=index)
    # Keep no prompt or answer text in the records: the data set has them, and 100k copies cost memory.
    config = config.model_copy(update={"store": config.store.model_copy(update={"prompts": "none"})})
    providers: dict[str, Provider] = dict.fromkeys(config.providers, provider)
    sink = _Collector()
    return Engine(config, providers, sink=sink, pricing=None), sink


@dataclass
class Replayed:
    """Per prompt: where routing started, which tier answered, what it cost, and its class."""

    config: RouterConfig
    table: OutcomeTable
    records: list[RoutingRecord]
    start: np.ndarray[Any, np.dtype[np.int64]]
    final: np.ndarray[Any, np.dtype[np.int64]]
    cost: np.ndarray[Any, np.dtype[np.float64]]
    classes: list[str]
    ideal: np.ndarray[Any, np.dtype[np.int64]]

    @property
    def models_called(self) -> list[list[str]]:
        return [[a.model for a in r.attempts if a.status == "ok"] for r in self.records]


async def _replay(engine: Engine, records: Sequence[EvalRecord], on_step: Callable[[], None] | None) -> None:
    for record in records:
        ctx = RequestContext(request_id=record.id, endpoint="eval")
        request = to_request(record)
        try:
            await engine.complete(request, ctx)
        except (AllAttemptsFailed, RequestError) as exc:
            if isinstance(exc, RequestError):
                engine.record_rejected(ctx, exc, requested_model=request.model)
        if on_step is not None:
            on_step()


def replay(
    config: RouterConfig, records: Sequence[EvalRecord], on_step: Callable[[], None] | None = None
) -> Replayed:
    """Send every record through the engine; raises ConfigError when the data cannot serve the config."""
    engine, sink = replay_engine(config, records)
    models = tier_models(config)
    table = OutcomeTable.from_records(records, models, config.tier_names)
    asyncio.run(_replay(engine, records, on_step))
    tier_of = {m: i for i, ms in enumerate(config.tiers.values()) for m in ms}
    premium = len(config.tiers) - 1
    n = len(records)
    start = np.full(n, premium, dtype=np.int64)
    final = np.full(n, premium, dtype=np.int64)
    cost = np.zeros(n)
    classes = []
    for i, rec in enumerate(sink.records):
        if rec.decision is not None:
            start[i] = config.tier_names.index(rec.decision["tier"])
        if rec.status == "ok" and rec.model is not None:
            final[i] = tier_of[rec.model]
            # Each answered attempt at this prompt's own recorded cost (identical prompts in a set share one
            # replayed answer, but not one cost).
            cost[i] = sum(table.costs[i, tier_of[a.model]] for a in rec.attempts if a.status == "ok")
        else:
            # A prompt the router could not serve is charged the premium answer, as a user would fall back.
            cost[i] = table.costs[i, premium]
        classes.append(rec.request_class or "unclassified")
    ideal = ideal_tiers(table)
    for i, record in enumerate(records):
        if record.ideal_tier is not None:
            if record.ideal_tier not in config.tiers:
                raise ConfigError(
                    f"record {record.id!r}: ideal_tier {record.ideal_tier!r} names no tier "
                    f"(tiers are {', '.join(config.tier_names)})"
                )
            ideal[i] = config.tier_names.index(record.ideal_tier)
    return Replayed(config, table, sink.records, start, final, cost, classes, ideal)


def summarize(result: Replayed, by: str = "class") -> dict[str, dict[str, Any]]:
    """Per class (or per dataset category), then overall: the figures `tierwise eval` prints."""
    table = result.table
    keys = result.classes if by == "class" else list(table.categories)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    out = {key: _figures(result, np.asarray(rows)) for key, rows in sorted(groups.items())}
    out["overall"] = _figures(result, np.arange(table.n))
    return out


def _figures(result: Replayed, rows: np.ndarray[Any, np.dtype[np.int64]]) -> dict[str, Any]:
    table = result.table
    premium = len(table.tiers) - 1
    final = result.final[rows]
    quality = float(table.scores[rows, final].mean())
    premium_quality = float(table.scores[rows, premium].mean())
    cost = float(result.cost[rows].sum())
    premium_cost = float(table.costs[rows, premium].sum())
    counts = np.bincount(final, minlength=len(table.tiers))
    return {
        "requests": len(rows),
        "tier_mix": {t: float(c) / len(rows) for t, c in zip(table.tiers, counts, strict=True)},
        "cost_usd": cost,
        "premium_cost_usd": premium_cost,
        "saving": 1 - cost / premium_cost if premium_cost > 0 else 0.0,
        "quality": quality,
        "premium_quality": premium_quality,
        "quality_vs_premium": quality / premium_quality if premium_quality > 0 else 1.0,
        "escalation_rate": float((final > result.start[rows]).mean()),
        "routing_accuracy": float((final == result.ideal[rows]).mean()),
    }


def label_summary(
    config: RouterConfig, records: Sequence[EvalRecord], by: str = "class"
) -> dict[str, dict[str, Any]]:
    """For hand-labelled records (``ideal_tier``, no outcomes): the tier the engine routes each prompt to,
    against its label. Per class (or category), then overall: requests, tier mix, routing accuracy."""
    unknown = sorted({r.ideal_tier for r in records if r.ideal_tier not in config.tiers}, key=str)
    if unknown:
        raise ConfigError(
            f"ideal_tier values that name no tier of the config: {', '.join(map(str, unknown))} "
            f"(tiers are {', '.join(config.tier_names)})"
        )
    engine = Engine(config, {}, sink=None)
    rows: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for record in records:
        ctx = RequestContext(request_id=record.id, endpoint="eval")
        try:
            route = engine.route(to_request(record), ctx)
            chosen, cls = route.tier, route.request_class
        except RequestError:
            chosen, cls = config.premium_tier, "unroutable"
        key = cls if by == "class" else record.category
        rows[key].append((chosen, str(record.ideal_tier)))
    everything = [pair for pairs in rows.values() for pair in pairs]
    out = {key: _label_figures(config, pairs) for key, pairs in sorted(rows.items())}
    out["overall"] = _label_figures(config, everything)
    return out


def _label_figures(config: RouterConfig, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    n = len(pairs)
    return {
        "requests": n,
        "tier_mix": {t: sum(1 for c, _ in pairs if c == t) / n for t in config.tier_names},
        "routing_accuracy": sum(1 for c, ideal in pairs if c == ideal) / n,
        "routed_below_ideal": sum(
            1 for c, ideal in pairs if config.tier_names.index(c) < config.tier_names.index(ideal)
        )
        / n,
    }
