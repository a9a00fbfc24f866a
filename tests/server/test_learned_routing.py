"""The proxy with routing.classifier: learned, driven by the openai SDK over loopback.

The router (the default one: knn, cost-aware) is trained here on the synthetic set of
tests/classify/test_learned.py (translate/rephrase prompts: every tier will do; python functions: mid and
premium; proofs: premium only) and saved with save_router. The thresholds compare with its routing scores; the
reason shows the scores, then its probabilities. The learned start replaces the task type's tier; domains,
rules, user caps and the blacklist still apply after it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.classify.test_learned import fit_synthetic
from tests.conftest import router_config
from tests.helpers_config import request
from tierwise.classify.artifact import load_router, save_router
from tierwise.classify.learned import LearnedRouter
from tierwise.errors import ConfigError
from tierwise.policy.engine import Engine
from tierwise.testing.upstreams import FakeUpstream

EASY = "Translate this sentence into French: the comet is next to the parrot."
CODE = "Write a python function that sorts a list of glacier objects by their anchor field."
PROOF = "Prove the theorem that every finite saddle graph contains a prairie cycle."
CHAT = "Hi there, how are you today?"
LEGAL = "Please do a contract review under New York law for the comet lease."
SCORES = r"learned:score\(cheap:(\d\.\d\d),mid:(\d\.\d\d)\)"
PROBS = r";p\(cheap:(\d\.\d\d),mid:(\d\.\d\d)\)"


def reason_pattern(verdict: str) -> str:
    """The learned reason: the scores, how they compare with the thresholds, then the probabilities."""
    return SCORES + re.escape(verdict) + PROBS


_clients: list[openai.OpenAI] = []


def client(proxy: Any, **kwargs: Any) -> openai.OpenAI:
    made = openai.OpenAI(base_url=proxy.base_url, api_key="sk-client", max_retries=0, **kwargs)
    _clients.append(made)
    return made


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_router(fit_synthetic(), tmp_path_factory.mktemp("learned") / "router.tw")


@pytest.fixture(scope="module")
def loaded(artifact: Path) -> LearnedRouter:
    return load_router(artifact)[0]


def learned_proxy(start_proxy: Any, upstream: FakeUpstream, artifact: Path, **classifier: Any) -> Any:
    routing: dict[str, Any] = {"classifier": {"type": "learned", "artifact": str(artifact), **classifier}}
    config = router_config(upstream.base_url, routing=routing)
    assert config.routing.classifier.type == "learned"
    return start_proxy(config)


def ask(proxy: Any, text: str, model: str = "tierwise/auto", **kwargs: Any) -> tuple[str, str, str]:
    """(tier, model, reason) the proxy answered ``text`` with; checks the record agrees."""
    raw = client(proxy).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kwargs
    )
    completion = raw.parse()
    h = raw.headers
    assert completion.model == h["x-tierwise-model"]
    record = proxy.record(h["x-tierwise-request-id"])
    assert (record.tier, record.model, record.reason) == (
        h["x-tierwise-tier"],
        h["x-tierwise-model"],
        h["x-tierwise-reason"],
    )
    return h["x-tierwise-tier"], h["x-tierwise-model"], h["x-tierwise-reason"]


def test_threshold_zero_starts_every_auto_request_at_cheap(
    start_proxy: Any, openai_upstream: FakeUpstream, artifact: Path
) -> None:
    proxy = learned_proxy(start_proxy, openai_upstream, artifact, threshold=0.0)
    for text in (EASY, CODE, PROOF, CHAT):
        tier, model, reason = ask(proxy, text)
        assert (tier, model) == ("cheap", "cheap-a"), (text, reason)
        assert reason.startswith("learned:score(")
        assert re.fullmatch(reason_pattern(">=0"), reason), reason
        assert openai_upstream.requests[-1].body["model"] == "cheap-a"


def test_unreachable_threshold_sends_every_auto_request_to_premium(
    start_proxy: Any, openai_upstream: FakeUpstream, artifact: Path, loaded: LearnedRouter
) -> None:
    # A routing score is below 1 by construction: no threshold of 1 can be reached.
    for text in (EASY, CODE, PROOF, CHAT):
        assert loaded.predict_request(request(text)).max() < 1.0
    proxy = learned_proxy(start_proxy, openai_upstream, artifact, threshold=1.0)
    for text in (EASY, CODE, PROOF, CHAT):
        tier, model, reason = ask(proxy, text)
        assert (tier, model) == ("premium", "premium-a")
        assert reason.startswith("learned:score(") and "<thresholds;p(" in reason
        assert re.fullmatch(reason_pattern("<thresholds"), reason), reason


def test_a_middle_threshold_routes_by_what_the_router_learned(
    start_proxy: Any, openai_upstream: FakeUpstream, artifact: Path, loaded: LearnedRouter
) -> None:
    proxy = learned_proxy(start_proxy, openai_upstream, artifact, threshold=0.5)
    expected = {EASY: "cheap", CODE: "mid", PROOF: "premium"}
    for text, want in expected.items():
        tier, _, reason = ask(proxy, text)
        assert tier == want, (text, reason)
        match = re.fullmatch(reason_pattern("<thresholds" if want == "premium" else ">=0.5"), reason)
        assert match is not None, reason
        # The scores and the probabilities shown are the router's, to two decimals.
        scores, p = loaded.predict_request(request(text)), loaded.proba_request(request(text))
        assert match.groups() == (f"{scores[0]:.2f}", f"{scores[1]:.2f}", f"{p[0]:.2f}", f"{p[1]:.2f}")
        # The tier is the cheapest whose score reaches the threshold.
        assert tier == next((t for t, v in zip(("cheap", "mid"), scores, strict=True) if v >= 0.5), "premium")


def test_per_tier_thresholds_override_the_default(
    start_proxy: Any, openai_upstream: FakeUpstream, artifact: Path
) -> None:
    # Cheap cannot be reached, mid always is.
    proxy = learned_proxy(start_proxy, openai_upstream, artifact, threshold=0.0, thresholds={"cheap": 1.0})
    for text in (EASY, PROOF):
        tier, model, reason = ask(proxy, text)
        assert (tier, model) == ("mid", "mid-a")
        assert re.fullmatch(reason_pattern(">=0"), reason), reason


def test_per_tier_threshold_for_mid_only(
    start_proxy: Any, openai_upstream: FakeUpstream, artifact: Path
) -> None:
    # Cheap at the learned 0.5, mid unreachable: easy prompts stay cheap, code goes premium.
    proxy = learned_proxy(start_proxy, openai_upstream, artifact, threshold=0.5, thresholds={"mid": 1.0})
    tier, _, reason = ask(proxy, EASY)
    assert tier == "cheap" and re.fullmatch(reason_pattern(">=0.5"), reason), reason
    tier, _, reason = ask(proxy, CODE)
    assert tier == "premium" and re.fullmatch(reason_pattern("<thresholds"), reason), reason


def test_blacklist_still_forces_premium_after_a_cheap_learned_start(
    start_proxy: Any, openai_upstream: FakeUpstream, artifact: Path
) -> None:
    proxy = learned_proxy(start_proxy, openai_upstream, artifact, threshold=0.0)
    tier, model, reason = ask(proxy, LEGAL)
    assert (tier, model, reason) == ("premium", "premium-a", "rule:keyword=legal")
    # Nothing the client sends lowers it.
    tier, _, reason = ask(proxy, LEGAL, extra_headers={"x-tierwise-user-tier": "free"})
    assert (tier, reason) == ("premium", "rule:keyword=legal")


def test_domains_raise_a_cheap_learned_start(
    start_proxy: Any, openai_upstream: FakeUpstream, artifact: Path
) -> None:
    proxy = learned_proxy(start_proxy, openai_upstream, artifact, threshold=0.0)
    tier, _, reason = ask(proxy, "Translate to German: check the medication dosage on the comet label.")
    assert (tier, reason) == ("mid", "rule:domain=medical")


def test_user_tier_cap_lowers_a_premium_learned_start(
    start_proxy: Any, openai_upstream: FakeUpstream, artifact: Path
) -> None:
    config = router_config(
        openai_upstream.base_url,
        routing={
            "classifier": {"type": "learned", "artifact": str(artifact), "threshold": 1.0},
            "user_tier_caps": {"free": "cheap"},
        },
    )
    proxy = start_proxy(config)
    tier, _, reason = ask(proxy, PROOF, extra_headers={"x-tierwise-user-tier": "free"})
    assert (tier, reason) == ("cheap", "rule:user_tier=free")
    tier, _, reason = ask(proxy, PROOF)
    assert tier == "premium" and re.fullmatch(reason_pattern("<thresholds"), reason), reason


def test_explicit_tier_and_model_are_unaffected(
    start_proxy: Any, openai_upstream: FakeUpstream, artifact: Path
) -> None:
    proxy = learned_proxy(start_proxy, openai_upstream, artifact, threshold=1.0)
    assert ask(proxy, PROOF, model="tierwise/cheap") == ("cheap", "cheap-a", "explicit:tier")
    assert ask(proxy, EASY, model="tierwise/mid") == ("mid", "mid-a", "explicit:tier")
    assert ask(proxy, EASY, model="cheap-b") == ("cheap", "cheap-b", "explicit:model")
    # And auto still goes the learned way on the same proxy.
    assert ask(proxy, EASY)[0] == "premium"


def test_streaming_carries_the_learned_reason(
    start_proxy: Any, openai_upstream: FakeUpstream, artifact: Path
) -> None:
    proxy = learned_proxy(start_proxy, openai_upstream, artifact, threshold=0.5)
    with client(proxy).chat.completions.with_streaming_response.create(
        model="tierwise/auto", messages=[{"role": "user", "content": EASY}], stream=True
    ) as response:
        assert response.headers["x-tierwise-tier"] == "cheap"
        reason = response.headers["x-tierwise-reason"]
        request_id = response.headers["x-tierwise-request-id"]
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert re.fullmatch(reason_pattern(">=0.5"), reason), reason
    assert text == f"cheap-a says: {EASY[:60]}"
    record = proxy.record(request_id)
    assert record.reason == reason and record.stream


def test_the_auto_policy_compares_the_routing_scores_with_its_bands(
    start_proxy: Any, openai_upstream: FakeUpstream, artifact: Path, loaded: LearnedRouter
) -> None:
    """The auto policy's bands read the routing scores, as `tierwise bench` measures and calibrates them."""
    scores, p = loaded.score_and_proba_request(request(EASY))
    assert p[0] > scores[0] + 0.02  # a band between the two tells which one is compared
    band = round(float(p[0] + scores[0]) / 2, 3)
    classifier = {"type": "learned", "artifact": str(artifact)}
    routing = {"policy": "auto", "classifier": classifier, "auto": {"confident_cheap": band}}
    proxy = start_proxy(router_config(openai_upstream.base_url, routing=routing))
    _, _, reason = ask(proxy, EASY)
    assert reason == f"auto:unsure(score(cheap:{scores[0]:.2f},mid:{scores[1]:.2f}))"
    low = start_proxy(router_config(openai_upstream.base_url, routing={
        **routing, "auto": {"confident_cheap": round(float(scores[0]) - 0.01, 3)}
    }))  # fmt: skip
    tier, model, reason = ask(low, EASY)
    assert (tier, model) == ("cheap", "cheap-a") and reason.startswith("auto:direct(score(cheap:")


def test_rules_classifier_is_the_default(start_proxy: Any, openai_upstream: FakeUpstream) -> None:
    proxy = start_proxy(router_config(openai_upstream.base_url))
    assert ask(proxy, "Rephrase: the cat sat on the mat.")[2] == "task=rephrase"


def test_an_artifact_for_other_tiers_stops_the_engine(tmp_path: Path, openai_upstream: FakeUpstream) -> None:
    two = save_router(fit_synthetic(n=90, models=("m-cheap", "m-premium")), tmp_path / "two.tw")
    config = router_config(
        openai_upstream.base_url, routing={"classifier": {"type": "learned", "artifact": str(two)}}
    )
    with pytest.raises(ConfigError, match=r"trained for 2 tiers .*the config has 3"):
        Engine(config, providers={})


def test_a_missing_artifact_stops_the_engine(tmp_path: Path, openai_upstream: FakeUpstream) -> None:
    config = router_config(
        openai_upstream.base_url,
        routing={"classifier": {"type": "learned", "artifact": str(tmp_path / "gone.tw")}},
    )
    with pytest.raises(ConfigError, match="cannot read the router artifact"):
        Engine(config, providers={})
