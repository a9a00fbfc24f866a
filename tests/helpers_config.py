"""Helpers for routing tests: a three-tier config whose providers are never called, and requests."""

from __future__ import annotations

from typing import Any

from tierwise.config import RouterConfig, parse_config
from tierwise.messages import ChatRequest, Message, Tool
from tierwise.policy.engine import Engine, RequestContext, Route

# Nothing listens here: routing never calls a provider, and a test that did would fail loudly.
UNUSED_URL = "http://127.0.0.1:9"


def routing_config(
    *,
    models: dict[str, dict[str, Any]] | None = None,
    tiers: dict[str, list[str]] | None = None,
    **sections: Any,
) -> RouterConfig:
    """Tiers cheap, mid, premium with one model each; the cheap model has a 4k context and no tools.

    ``models`` entries are merged into the defaults; other keyword arguments (``routing``, ``retry``...)
    become top-level sections as given.
    """
    all_models: dict[str, dict[str, Any]] = {
        "cheap-small": {
            "provider": "up",
            "context_window": 4096,
            "supports_tools": False,
            "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.4},
        },
        "mid-a": {
            "provider": "up",
            "context_window": 32_768,
            "price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
        },
        "premium-a": {
            "provider": "up",
            "context_window": 128_000,
            "price": {"input_per_mtok": 10.0, "output_per_mtok": 40.0},
        },
    }
    all_models.update(models or {})
    data: dict[str, Any] = {
        "providers": {"up": {"type": "openai", "base_url": UNUSED_URL, "api_key": "sk-test"}},
        "models": all_models,
        "tiers": tiers or {"cheap": ["cheap-small"], "mid": ["mid-a"], "premium": ["premium-a"]},
        **sections,
    }
    return parse_config(data, "test config")


def request(
    *texts: str,
    model: str = "tierwise/auto",
    system: str | None = None,
    tools: list[Tool] | None = None,
    **fields: Any,
) -> ChatRequest:
    """A chat request whose user turns are ``texts`` (with assistant turns in between)."""
    messages: list[Message] = []
    if system is not None:
        messages.append(Message(role="system", content=system))
    for i, text in enumerate(texts):
        if i:
            messages.append(Message(role="assistant", content="Sure."))
        messages.append(Message(role="user", content=text))
    return ChatRequest(messages=messages, model=model, tools=tools or [], **fields)


def weather_tool() -> Tool:
    return Tool(
        name="get_weather",
        description="Current weather for a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )


def route(
    config: RouterConfig,
    req: ChatRequest,
    *,
    user_tier: str | None = None,
    class_override: str | None = None,
) -> Route:
    engine = Engine(config, providers={})
    ctx = RequestContext(
        request_id="req-test", endpoint="chat.completions", user_tier=user_tier, class_override=class_override
    )
    return engine.route(req, ctx)


def long_document(tokens: int) -> str:
    """Plain prose of about ``tokens`` estimated tokens, free of task cues and domain keywords."""
    sentence = "The garden club met on a sunny morning and admired the tulips along the old stone wall. "
    return sentence * (tokens * 4 // len(sentence) + 1)
