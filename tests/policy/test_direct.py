"""Hard limits of the models (context window, tool support) and the fallback plan, through ``Engine.route``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.helpers_config import long_document, request, route, routing_config, weather_tool
from tierwise.errors import RequestError
from tierwise.messages import ChatRequest

TWELVE_K_SUMMARY = request("Summarize this document:\n\n" + long_document(12_000))
FORTY_K_SUMMARY = request("Summarize this document:\n\n" + long_document(40_000))


@dataclass(frozen=True)
class Row:
    request: ChatRequest
    tier: str
    reason: str
    plan: list[str]
    config: dict[str, Any] = field(default_factory=dict)
    user_tier: str | None = None


TOOLS_IN_CHEAP = {
    "models": {"cheap-tools": {"provider": "up", "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.8}}},
    "tiers": {"cheap": ["cheap-small", "cheap-tools"], "mid": ["mid-a"], "premium": ["premium-a"]},
}

HARD_LIMIT_ROWS = {
    "12k-token summary skips the 4k cheap model": Row(
        TWELVE_K_SUMMARY,
        "mid",
        "task=summarize;hard:context_window",
        ["mid:mid-a", "premium:premium-a"],
    ),
    "40k-token summary only fits premium": Row(
        FORTY_K_SUMMARY, "premium", "task=summarize;hard:context_window", ["premium:premium-a"]
    ),
    "expected output counts against the window": Row(
        request("Hi! Tell me a long story.", max_tokens=4090),
        "mid",
        "task=chat;hard:context_window",
        ["mid:mid-a", "premium:premium-a"],
    ),
    "a short request fits the cheap model": Row(
        request("Hi! Tell me a short story.", max_tokens=200),
        "cheap",
        "task=chat",
        ["cheap:cheap-small", "mid:mid-a", "premium:premium-a"],
    ),
    "tools skip a cheap model without tool support": Row(
        request("What's the weather in Paris?", tools=[weather_tool()]),
        "mid",
        "task=chat;hard:tools",
        ["mid:mid-a", "premium:premium-a"],
    ),
    "tool_choice none needs no tool support": Row(
        request("What's the weather in Paris?", tools=[weather_tool()], tool_choice="none"),
        "cheap",
        "task=chat",
        ["cheap:cheap-small", "mid:mid-a", "premium:premium-a"],
    ),
    "a tool-capable model in the same tier keeps the tier": Row(
        request("What's the weather in Paris?", tools=[weather_tool()]),
        "cheap",
        "task=chat",
        ["cheap:cheap-tools", "mid:mid-a", "premium:premium-a"],
        config=TOOLS_IN_CHEAP,
    ),
    "hard limits beat the user tier cap": Row(
        request("Analyze the tone of this report:\n\n" + long_document(4_000)),
        "mid",
        "rule:user_tier=free;hard:context_window",
        ["mid:mid-a", "premium:premium-a"],
        config={"routing": {"user_tier_caps": {"free": "cheap"}}},
        user_tier="free",
    ),
    "hard limits beat a max_tier rule": Row(
        request("Write a Python function that calls the weather API", tools=[weather_tool()]),
        "mid",
        "rule:all-cheap;hard:tools",
        ["mid:mid-a", "premium:premium-a"],
        config={"routing": {"rules": [{"name": "all-cheap", "when": {}, "max_tier": "cheap"}]}},
    ),
    "hard limits beat an explicit tier": Row(
        request("What's the weather in Paris?", tools=[weather_tool()], model="tierwise/cheap"),
        "mid",
        "explicit:tier;hard:tools",
        ["mid:mid-a", "premium:premium-a"],
    ),
    "no hard limit in the chosen tier adds no reason": Row(
        request("Write a Python function that reverses a list", tools=[weather_tool()]),
        "mid",
        "task=code",
        ["mid:mid-a", "premium:premium-a"],
    ),
}


@pytest.mark.parametrize("row", HARD_LIMIT_ROWS.values(), ids=HARD_LIMIT_ROWS.keys())
def test_hard_limits_move_the_request_up(row: Row) -> None:
    got = route(routing_config(**row.config), row.request, user_tier=row.user_tier)
    assert (got.tier, got.reason) == (row.tier, row.reason)
    assert got.to_dict()["plan"] == row.plan


def test_plan_lists_tier_models_in_order_then_the_tiers_above() -> None:
    config = routing_config(
        models={
            "cheap-b": {"provider": "up", "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.8}},
            "mid-b": {"provider": "up", "price": {"input_per_mtok": 2.0, "output_per_mtok": 8.0}},
        },
        tiers={"cheap": ["cheap-small", "cheap-b"], "mid": ["mid-b", "mid-a"], "premium": ["premium-a"]},
    )
    got = route(config, request("Hi!"))
    assert got.to_dict()["plan"] == [
        "cheap:cheap-small",
        "cheap:cheap-b",
        "mid:mid-b",
        "mid:mid-a",
        "premium:premium-a",
    ]


def test_without_fallback_up_the_plan_stays_in_the_tier() -> None:
    config = routing_config(retry={"fallback_up": False})
    got = route(config, request("Write a Python function that reverses a list"))
    assert got.to_dict()["plan"] == ["mid:mid-a"]


def test_without_fallback_up_hard_limits_still_move_the_request_up() -> None:
    config = routing_config(retry={"fallback_up": False})
    got = route(config, TWELVE_K_SUMMARY)
    assert (got.tier, got.reason) == ("mid", "task=summarize;hard:context_window")
    assert got.plan[0].model == "mid-a"


@pytest.mark.parametrize("model", ["tierwise/auto", "tierwise/cheap", "tierwise/premium"])
def test_no_model_fits_the_context(model: str) -> None:
    huge = request("Summarize this document:\n\n" + long_document(150_000), model=model)
    with pytest.raises(RequestError) as caught:
        route(routing_config(), huge)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages"
    assert caught.value.status == 400
    assert "context window" in caught.value.message


def test_no_model_supports_tools() -> None:
    config = routing_config(
        models={
            "mid-a": {"provider": "up", "supports_tools": False},
            "premium-a": {"provider": "up", "supports_tools": False},
        }
    )
    with pytest.raises(RequestError) as caught:
        route(config, request("What's the weather?", tools=[weather_tool()]))
    assert caught.value.param == "tools"
    assert "supports tools" in caught.value.message
