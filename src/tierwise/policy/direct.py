"""The direct policy's plan: which models to try, in order, for a request routed to a tier.

The plan starts with the chosen tier's models in their configured order and, when ``fallback_up`` is on,
goes on through the tiers above it. Models that cannot take the request are left out, whatever the
classifier said: a model without tool support when tools are requested, a model whose context window is
smaller than the prompt plus the expected answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierwise.config import RouterConfig
from tierwise.errors import RequestError
from tierwise.features import Features


@dataclass(frozen=True, slots=True)
class PlannedModel:
    tier: str
    model: str


def fits(config: RouterConfig, model: str, features: Features) -> str | None:
    """Why ``model`` cannot take the request, or None when it can."""
    spec = config.models[model]
    if features.tools and not spec.supports_tools:
        return "tools"
    if features.input_tokens + features.expected_output_tokens > spec.context_window:
        return "context_window"
    return None


def plan_from_tier(
    config: RouterConfig, tier: str, features: Features, *, fallback_up: bool
) -> tuple[list[PlannedModel], str | None]:
    """The models to try from ``tier`` upward, and the hard limit that moved the start, if one did."""
    tiers = config.tier_names
    start = tiers.index(tier)
    plan: list[PlannedModel] = []
    moved_by: str | None = None
    for t in tiers[start : None if fallback_up else start + 1]:
        for model in config.tiers[t]:
            why = fits(config, model, features)
            if why is None:
                plan.append(PlannedModel(t, model))
            elif not plan and moved_by is None:
                moved_by = why
    if not plan and not fallback_up:
        # The chosen tier cannot take it at all: hard limits beat the classifier, so look upward anyway.
        return plan_from_tier(config, tier, features, fallback_up=True)
    if not plan:
        if moved_by == "tools":
            raise RequestError(
                "tools: no configured model at or above this tier supports tools", param="tools"
            )
        raise RequestError(
            f"messages: about {features.input_tokens} input tokens plus {features.expected_output_tokens} "
            "expected output tokens exceed the context window of every configured model",
            param="messages",
            code="context_length_exceeded",
        )
    if plan[0].tier == tier:
        moved_by = None
    return plan, moved_by
