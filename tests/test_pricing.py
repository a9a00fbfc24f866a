"""Pricing: config overrides, the genai-prices table, and the cost arithmetic."""

from __future__ import annotations

from typing import Any

import pytest

from tierwise.config import RouterConfig, parse_config
from tierwise.messages import Usage
from tierwise.pricing import Pricing, Rates, lookup_rates

OPENAI = {"type": "openai", "base_url": "https://api.openai.com/v1", "api_key": "sk-test"}
ANTHROPIC = {"type": "anthropic", "api_key": "sk-ant-test"}
LOCAL = {"type": "openai", "base_url": "http://127.0.0.1:9/v1"}


def config(models: dict[str, dict[str, Any]]) -> RouterConfig:
    return parse_config(
        {
            "providers": {"openai": OPENAI, "anthropic": ANTHROPIC, "local": LOCAL},
            "models": models,
            "tiers": {"cheap": list(models), "mid": list(models)},
        }
    )


def test_config_price_overrides_the_table() -> None:
    pricing = Pricing(
        config(
            {"gpt-4o-mini": {"provider": "openai", "price": {"input_per_mtok": 1.5, "output_per_mtok": 7}}}
        )
    )
    assert pricing.rates("gpt-4o-mini") == Rates(1.5, 7.0, "config")
    assert pricing.cost("gpt-4o-mini", Usage(1_000_000, 1_000_000)) == pytest.approx(8.5)


def test_a_zero_price_override_is_free_not_unknown() -> None:
    pricing = Pricing(
        config({"local-llama": {"provider": "local", "price": {"input_per_mtok": 0, "output_per_mtok": 0}}})
    )
    assert pricing.cost("local-llama", Usage(5000, 5000)) == 0.0


@pytest.mark.parametrize(
    ("key", "spec"),
    [
        ("gpt-4o-mini", {"provider": "openai"}),
        ("cheap-openai", {"provider": "openai", "name": "gpt-4o-mini"}),
        ("claude-haiku", {"provider": "anthropic", "name": "claude-3-5-haiku-latest"}),
        ("claude-sonnet", {"provider": "anthropic", "name": "claude-sonnet-4-0"}),
    ],
)
def test_table_lookup_gives_nonzero_rates(key: str, spec: dict[str, Any]) -> None:
    rates = Pricing(config({key: spec})).rates(key)
    assert rates is not None
    assert rates.input_per_mtok > 0
    assert rates.output_per_mtok > rates.input_per_mtok
    assert rates.source.startswith("genai-prices:")


def test_gpt_4o_mini_list_price() -> None:
    rates = Pricing(config({"gpt-4o-mini": {"provider": "openai"}})).rates("gpt-4o-mini")
    assert rates is not None
    assert (rates.input_per_mtok, rates.output_per_mtok) == (pytest.approx(0.15), pytest.approx(0.6))


def test_cheaper_models_cost_less_by_the_table() -> None:
    pricing = Pricing(
        config(
            {
                "haiku": {"provider": "anthropic", "name": "claude-3-5-haiku-latest"},
                "sonnet": {"provider": "anthropic", "name": "claude-sonnet-4-0"},
            }
        )
    )
    usage = Usage(10_000, 2_000)
    haiku, sonnet = pricing.cost("haiku", usage), pricing.cost("sonnet", usage)
    assert haiku is not None and sonnet is not None
    assert 0 < haiku < sonnet


def test_a_known_model_behind_another_endpoint_is_still_priced() -> None:
    rates = Pricing(config({"gpt-4o-mini": {"provider": "local"}})).rates("gpt-4o-mini")
    assert rates is not None
    assert rates.input_per_mtok > 0


@pytest.mark.parametrize("provider", ["openai", "anthropic", "local"])
def test_unknown_model_has_no_price(provider: str) -> None:
    pricing = Pricing(config({"my-finetune-xyz-9000": {"provider": provider}}))
    assert pricing.rates("my-finetune-xyz-9000") is None
    assert pricing.cost("my-finetune-xyz-9000", Usage(100, 100)) is None


def test_lookup_of_an_unknown_model() -> None:
    assert lookup_rates("my-finetune-xyz-9000", "openai") is None
    assert lookup_rates("my-finetune-xyz-9000") is None


def test_a_model_not_in_the_config_has_no_price() -> None:
    pricing = Pricing(config({"gpt-4o-mini": {"provider": "openai"}}))
    assert pricing.rates("gpt-4o") is None
    assert pricing.cost("gpt-4o", Usage(1, 1)) is None


@pytest.mark.parametrize(
    ("rates", "usage", "cost"),
    [
        (Rates(2.0, 8.0, "x"), Usage(1000, 500), 0.006),
        (Rates(2.0, 8.0, "x"), Usage(0, 0), 0.0),
        (Rates(0.15, 0.6, "x"), Usage(1_000_000, 0), 0.15),
        (Rates(0.15, 0.6, "x"), Usage(0, 1_000_000), 0.6),
        (Rates(10.0, 30.0, "x"), Usage(123, 456), (123 * 10.0 + 456 * 30.0) / 1_000_000),
    ],
)
def test_rates_cost_arithmetic(rates: Rates, usage: Usage, cost: float) -> None:
    assert rates.cost(usage) == pytest.approx(cost)
