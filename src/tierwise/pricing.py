"""What a call costs: per-model rates from config overrides, else from the genai-prices table.

Rates are looked up once per model and cached, so pricing on the request path is two multiplications.
Tiered or cached-token discounts are not modelled; routing decisions compare list prices.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierwise.config import AnthropicProviderConfig, ModelConfig, OpenAIProviderConfig, RouterConfig
from tierwise.messages import Usage

_MTOK = 1_000_000


@dataclass(frozen=True, slots=True)
class Rates:
    """US dollars per million input and output tokens."""

    input_per_mtok: float
    output_per_mtok: float
    source: str

    def cost(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input_per_mtok + usage.output_tokens * self.output_per_mtok) / _MTOK


def lookup_rates(model: str, provider_id: str | None = None) -> Rates | None:
    """Rates from the genai-prices table, or None when it does not know the model."""
    from genai_prices import Usage as PriceUsage
    from genai_prices import calc_price

    try:
        inp = calc_price(
            PriceUsage(input_tokens=_MTOK, output_tokens=0), model_ref=model, provider_id=provider_id
        )
        out = calc_price(
            PriceUsage(input_tokens=0, output_tokens=_MTOK), model_ref=model, provider_id=provider_id
        )
    except LookupError:
        if provider_id is not None:
            return lookup_rates(model, None)
        return None
    return Rates(float(inp.total_price), float(out.total_price), f"genai-prices:{inp.model.id}")


class Pricing:
    """Rates for the models of one router config."""

    def __init__(self, config: RouterConfig) -> None:
        self._rates: dict[str, Rates | None] = {}
        for name, model in config.models.items():
            self._rates[name] = self._resolve(name, model, config)

    @staticmethod
    def _resolve(name: str, model: ModelConfig, config: RouterConfig) -> Rates | None:
        if model.price is not None:
            return Rates(model.price.input_per_mtok, model.price.output_per_mtok, "config")
        provider = config.providers[model.provider]
        provider_id = None
        if isinstance(provider, OpenAIProviderConfig) and "api.openai.com" in provider.base_url:
            provider_id = "openai"
        elif isinstance(provider, AnthropicProviderConfig):
            provider_id = "anthropic"
        return lookup_rates(model.name or name, provider_id)

    def rates(self, model: str) -> Rates | None:
        return self._rates.get(model)

    def cost(self, model: str, usage: Usage) -> float | None:
        rates = self._rates.get(model)
        return None if rates is None else rates.cost(usage)
