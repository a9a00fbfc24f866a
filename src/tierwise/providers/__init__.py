"""Providers: the classes that call upstream models. ``build_providers`` makes one per configured provider."""

from __future__ import annotations

from tierwise.config import AnthropicProviderConfig, OpenAIProviderConfig, RouterConfig
from tierwise.providers.base import Provider, ProviderResult, ProviderStream

__all__ = ["Provider", "ProviderResult", "ProviderStream", "build_providers"]


def build_providers(config: RouterConfig) -> dict[str, Provider]:
    # Imported here so that a config without, say, a replay set loads none of its machinery.
    providers: dict[str, Provider] = {}
    for name, spec in config.providers.items():
        if isinstance(spec, OpenAIProviderConfig):
            from tierwise.providers.openai import OpenAIProvider

            providers[name] = OpenAIProvider(name, spec)
        elif isinstance(spec, AnthropicProviderConfig):
            from tierwise.providers.anthropic import AnthropicProvider

            no_thinking = {
                m.name or key
                for key, m in config.models.items()
                if m.provider == name and not m.supports_thinking
            }
            providers[name] = AnthropicProvider(name, spec, no_thinking=no_thinking)
        else:
            from tierwise.providers.replay import ReplayProvider

            providers[name] = ReplayProvider(name, spec)
    return providers
