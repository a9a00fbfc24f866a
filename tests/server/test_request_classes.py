"""Request classes: the task type by default, a config rule's class, the API key's team, the header."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import router_config
from tierwise.config import parse_config
from tierwise.errors import ConfigError
from tierwise.testing.upstreams import FakeUpstream

RULES = [
    {"name": "billing", "when": {"keywords": ["invoice", "refund"]}, "class": "billing"},
    {"name": "legal-up", "when": {"keywords": ["contract"]}, "min_tier": "premium", "class": "legal"},
]
KEYS = [
    {"id": "k-support", "key": "sk-support", "team": "support"},
    {"id": "k-plain", "key": "sk-plain"},
]


def ask(proxy: Any, text: str, **headers: str) -> tuple[str, str]:
    reply = httpx.post(
        proxy.base_url + "/chat/completions",
        json={"model": "tierwise/auto", "messages": [{"role": "user", "content": text}]},
        headers=headers,
    )
    assert reply.status_code == 200, reply.text
    return reply.headers["x-tierwise-class"], reply.headers["x-tierwise-tier"]


def test_where_a_class_comes_from(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    config = router_config(openai_upstream.base_url, routing={"rules": RULES}, auth={"keys": KEYS})
    proxy = start_proxy(config)
    plain = {"authorization": "Bearer sk-plain"}
    # The classifier's task type by default.
    klass, tier = ask(proxy, "Rephrase: the cat sat on the mat.", **plain)
    assert klass == "rephrase"
    # A rule that only names the class leaves the tier as the task put it.
    assert ask(proxy, "Rephrase: the refund sat on the mat.", **plain) == ("billing", tier)
    # A rule may set the class and move the tier.
    assert ask(proxy, "Summarise this contract clause", **plain) == ("legal", "premium")
    # The key's team names the class of everything it sends; the header wins over both.
    assert ask(proxy, "Summarise this contract clause", authorization="Bearer sk-support")[0] == "support"
    assert ask(proxy, "Hello", authorization="Bearer sk-support", **{"x-tierwise-class": "vip"})[0] == "vip"
    by_id = {r.api_key_id: r.request_class for r in proxy.records()}
    assert by_id["k-support"] == "vip"  # the last one of that key


def test_a_rule_needs_an_action() -> None:
    base = router_config("http://127.0.0.1:9").model_dump(mode="json", by_alias=True)
    base["providers"]["up"]["api_key"] = "sk"
    base["routing"] = {"rules": [{"name": "nothing", "when": {"task": ["chat"]}}]}
    with pytest.raises(ConfigError, match=r"routing\.rules\.0.*exactly one of tier, min_tier, max_tier"):
        parse_config(base, "test config")
    base["routing"] = {"rules": [{"name": "empty-class", "when": {"task": ["chat"]}, "class": ""}]}
    with pytest.raises(ConfigError, match=r"routing\.rules\.0\.class"):
        parse_config(base, "test config")
