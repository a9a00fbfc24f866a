"""routing.model_aliases: the model names Claude (and other) clients send, mapped to tierwise's routing, on the
Messages API and the Chat Completions API alike."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import router_config
from tierwise.errors import ConfigError
from tierwise.testing.upstreams import Behaviour, FakeUpstream

ALIASES: list[dict[str, Any]] = [
    {"match": "claude-opus-*", "to": "tierwise/premium", "route_down": True},
    {"match": "claude-haiku-down-*", "to": "tierwise/cheap", "route_down": True},
    {"match": "claude-sonnet-*", "to": "tierwise/mid", "route_down": True},
    {"match": "claude-haiku-*", "to": "tierwise/cheap"},
    {"match": "claude-pinned", "to": "mid-a"},
    {"match": "gpt-*", "to": "tierwise/auto"},
    {"match": "claude-*", "to": "tierwise/premium"},
]
LEGAL = "Please do a contract review of this NDA for me."

_clients: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


@pytest.fixture
def start(start_proxy: Any, openai_upstream: FakeUpstream, anthropic_upstream: FakeUpstream) -> Any:
    def make(**routing: Any) -> tuple[Any, anthropic.Anthropic]:
        config = router_config(
            openai_upstream.base_url,
            anthropic_upstream.base_url,
            routing={"model_aliases": ALIASES, **routing},
        )
        proxy = start_proxy(config)
        client = anthropic.Anthropic(base_url=proxy.url, api_key="k", max_retries=0)
        _clients.append(client)
        return proxy, client

    return make


def ask(client: anthropic.Anthropic, model: str, text: str) -> tuple[anthropic.types.Message, Any]:
    raw = client.messages.with_raw_response.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": text}]
    )
    return raw.parse(), raw.headers


@pytest.mark.parametrize(
    ("model", "text", "tier", "reason"),
    [
        # route_down: the router picks, never above the named tier.
        (
            "claude-opus-4-1",
            "Rephrase: the cat sat on the mat.",
            "cheap",
            "task=rephrase;alias:claude-opus-*",
        ),
        (
            "Claude-Opus-4-1-20250805",
            "Write a python function that sorts a list",
            "mid",
            "task=code;alias:claude-opus-*",
        ),
        ("claude-opus-4-1", LEGAL, "premium", "rule:keyword=legal;alias:claude-opus-*"),
        # The keyword blacklist forces premium, whatever the alias's tier.
        ("claude-sonnet-4-6", LEGAL, "premium", "rule:keyword=legal;alias:claude-sonnet-*"),
        (
            "claude-haiku-down-1",
            "Write a python function that sorts a list",
            "cheap",
            "task=code;alias:claude-haiku-down-*;max:cheap",
        ),
        (
            "claude-sonnet-4-6",
            "Summarize: it rained all day.",
            "cheap",
            "task=summarize;alias:claude-sonnet-*",
        ),
        # A pinned tier or model is served as named.
        ("claude-haiku-4-5", LEGAL, "cheap", "explicit:tier;alias:claude-haiku-*"),
        ("claude-pinned", "hi", "mid", "explicit:model;alias:claude-pinned"),
        ("claude-3-7-something", "Rephrase: x", "premium", "explicit:tier;alias:claude-*"),
        # tierwise/auto: the router decides, up or down.
        ("gpt-4o", LEGAL, "premium", "rule:keyword=legal;alias:gpt-*"),
    ],
)
def test_aliases_route_claude_names(start: Any, model: str, text: str, tier: str, reason: str) -> None:
    proxy, client = start()
    message, headers = ask(client, model, text)
    assert (headers["x-tierwise-tier"], headers["x-tierwise-reason"]) == (tier, reason)
    record = proxy.record(message.id)
    assert record.requested_model == model and record.tier == tier and record.reason == reason


def test_aliases_apply_to_chat_completions_too(start: Any, openai_upstream: FakeUpstream) -> None:
    proxy, _ = start()
    client = openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
    _clients.append(client)
    raw = client.chat.completions.with_raw_response.create(
        model="claude-opus-4-1", messages=[{"role": "user", "content": "Rephrase: hello there"}]
    )
    assert raw.headers["x-tierwise-tier"] == "cheap"
    assert raw.headers["x-tierwise-reason"] == "task=rephrase;alias:claude-opus-*"
    assert openai_upstream.requests[-1].body["model"] == "cheap-a"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="mistral-large", messages=[{"role": "user", "content": "x"}])


def test_aliases_work_when_clients_may_not_name_tiers(start: Any) -> None:
    _, client = start(allow_explicit_tier=False)
    _, headers = ask(client, "claude-haiku-4-5", "hi")
    assert headers["x-tierwise-tier"] == "cheap"
    with pytest.raises(anthropic.NotFoundError):
        ask(client, "tierwise/cheap", "hi")


def test_unmatched_names_are_not_found(start: Any) -> None:
    proxy, client = start()
    with pytest.raises(anthropic.NotFoundError) as caught:
        ask(client, "mistral-large", "hi")
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert "mistral-large" in caught.value.body["error"]["message"]
    assert proxy.records()[-1].status == "rejected"
    # count_tokens takes the same names.
    assert client.messages.count_tokens(model="claude-opus-4-1", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="mistral-large", messages=[{"role": "user", "content": "hi"}])


def test_a_cascade_never_escalates_past_the_aliased_tier(
    start: Any, openai_upstream: FakeUpstream, anthropic_upstream: FakeUpstream
) -> None:
    proxy, client = start(policy="cascade")
    openai_upstream.set_default(Behaviour(content=""))  # every cheap and mid answer fails not_empty
    _, headers = ask(client, "claude-sonnet-4-6", "Rephrase: hello")
    assert headers["x-tierwise-path"] == "cheap(fail:not_empty)->mid(fail:not_empty;final)"
    assert headers["x-tierwise-reason"] == "cascade:cheapest;alias:claude-sonnet-*"
    assert anthropic_upstream.requests == []
    # The blacklist's premium start is not capped: it forces premium.
    _, headers = ask(client, "claude-sonnet-4-6", LEGAL)
    assert headers["x-tierwise-tier"] == "premium" and headers["x-tierwise-path"].startswith("premium(")
    assert headers["x-tierwise-reason"] == "cascade:rule:keyword=legal;alias:claude-sonnet-*"
    assert len(anthropic_upstream.requests) == 1
    # Opus may escalate all the way.
    message, headers = ask(client, "claude-opus-4-1", "Rephrase: hello")
    assert headers["x-tierwise-path"] == "cheap(fail:not_empty)->mid(fail:not_empty)->premium(pass)"
    assert message.model == "premium-a" and len(anthropic_upstream.requests) == 2
    assert proxy.record(message.id).requested_model == "claude-opus-4-1"


@pytest.mark.parametrize(
    ("alias", "problem"),
    [
        ({"match": "x", "to": "tierwise/gold"}, "routing.model_aliases.0.to: unknown tier 'gold'"),
        ({"match": "x", "to": "gpt-nope"}, "routing.model_aliases.0.to: unknown model 'gpt-nope'"),
        (
            {"match": "x", "to": "tierwise/auto", "route_down": True},
            "routing.model_aliases.0.route_down: needs a tier",
        ),
        (
            {"match": "x", "to": "mid-a", "route_down": True},
            "routing.model_aliases.0.route_down: needs a tier",
        ),
        ({"match": "x", "to": "tierwise/mid", "down": True}, "routing.model_aliases.0.down: unknown key"),
        ({"to": "tierwise/mid"}, "routing.model_aliases.0.match: Field required"),
    ],
)
def test_bad_aliases_are_config_errors_naming_the_key(alias: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        router_config("http://127.0.0.1:9/v1", routing={"model_aliases": [alias]})
    assert problem in str(caught.value)
