"""Per-class cascade settings, stream-first classes, and the auto policy (direct where the learned classifier
is sure, a cascade where it is not)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.classify.test_learned import fit_synthetic
from tests.conftest import router_config
from tierwise.classify.artifact import save_router
from tierwise.errors import ConfigError
from tierwise.testing.upstreams import Behaviour, FakeUpstream

JSON_FORMAT = {"type": "json_object"}
REPHRASE = "Rephrase this as JSON please"
CODE = "Write a python function that returns the JSON of a user"


@pytest.fixture
def make(start_proxy: Any, openai_upstream: FakeUpstream) -> Iterator[Any]:
    clients: list[openai.OpenAI] = []

    def build(routing: dict[str, Any]) -> tuple[Any, openai.OpenAI]:
        proxy = start_proxy(router_config(openai_upstream.base_url, routing=routing))
        client = openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
        clients.append(client)
        return proxy, client

    yield build
    for client in clients:
        client.close()


def ask(client: openai.OpenAI, text: str, **kwargs: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="tierwise/auto", messages=[{"role": "user", "content": text}], **kwargs
    )


def test_a_class_can_opt_out_of_the_cascade(make: Any, openai_upstream: FakeUpstream) -> None:
    _, client = make({"policy": "cascade", "cascade": {"classes": {"code": {"policy": "direct"}}}})
    openai_upstream.set_default(Behaviour(content="not json"))
    code = ask(client, CODE, response_format=JSON_FORMAT)
    assert "x-tierwise-path" not in code.headers
    assert code.headers["x-tierwise-reason"] == "task=code" and code.headers["x-tierwise-tier"] == "mid"
    rephrase = ask(client, REPHRASE, response_format=JSON_FORMAT)
    assert rephrase.headers["x-tierwise-path"].startswith("cheap(fail:json)->mid(fail:json)")


def test_class_overrides_of_start_hints_and_gates(make: Any, openai_upstream: FakeUpstream) -> None:
    cascade = {"classes": {"code": {"start": "mid", "hints": False, "gates": ["not_empty"]}}}
    _, client = make({"policy": "cascade", "cascade": cascade})
    openai_upstream.script("mid-a", Behaviour(content=""))
    raw = ask(client, CODE, response_format=JSON_FORMAT)
    # Starts at mid; only not_empty judges (the non-JSON answer of premium passes); no hint reaches premium.
    assert raw.headers["x-tierwise-path"] == "mid(fail:not_empty)->premium(pass)"
    assert raw.headers["x-tierwise-reason"] == "cascade:mid"
    assert openai_upstream.requests_for("premium-a")[0].body["messages"] == [
        {"role": "user", "content": CODE}
    ]


def test_stream_first_classes_stream_live_without_gating(make: Any, openai_upstream: FakeUpstream) -> None:
    _, client = make({"policy": "cascade", "cascade": {"classes": {"rephrase": {"stream_first": True}}}})
    openai_upstream.script("cheap-a", Behaviour(content="no json, but streamed at once"))
    with client.chat.completions.with_streaming_response.create(
        model="tierwise/auto",
        messages=[{"role": "user", "content": REPHRASE}],
        response_format=JSON_FORMAT,
        stream=True,
    ) as response:
        path = response.headers["x-tierwise-path"]
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert path == "cheap(stream_first)"
    assert text == "no json, but streamed at once"
    assert openai_upstream.requests_for("cheap-a")[0].body["stream"] is True


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_router(fit_synthetic(), tmp_path_factory.mktemp("auto") / "router.tw")


def test_auto_goes_direct_when_sure_and_cascades_when_not(
    make: Any, openai_upstream: FakeUpstream, artifact: Path
) -> None:
    classifier = {"type": "learned", "artifact": str(artifact)}
    # Bands that every prompt clears: always the cheapest tier, directly.
    _, sure = make({"policy": "auto", "classifier": classifier, "auto": {"confident_cheap": 0.0}})
    raw = ask(sure, "Translate this sentence into French: the comet is next to the parrot.")
    assert raw.headers["x-tierwise-reason"].startswith("auto:direct(score(cheap:")
    assert raw.headers["x-tierwise-tier"] == "cheap" and "x-tierwise-path" not in raw.headers
    # Bands no prompt clears: always a cascade from the cheapest tier.
    _, unsure = make(
        {
            "policy": "auto",
            "classifier": classifier,
            "auto": {"confident_cheap": 1.0, "confident_premium": 0.0},
        }
    )
    openai_upstream.set_default(Behaviour(content='{"ok": 1}'))
    raw = ask(unsure, "Prove the theorem that every finite saddle graph contains a prairie cycle.")
    assert raw.headers["x-tierwise-reason"].startswith("auto:unsure(score(cheap:")
    assert raw.headers["x-tierwise-path"] == "cheap(pass)"


def test_auto_needs_the_learned_classifier(openai_upstream: FakeUpstream) -> None:
    with pytest.raises(ConfigError, match="auto needs the learned classifier"):
        router_config(openai_upstream.base_url, routing={"policy": "auto"})
