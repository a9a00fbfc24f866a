"""Config loading: strict keys, references, environment interpolation, YAML errors, secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tierwise.config import (
    OpenAIProviderConfig,
    ReplayProviderConfig,
    RouterConfig,
    load_config,
    parse_config,
)
from tierwise.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "openai-anthropic.yaml"


def minimal(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "providers": {"up": {"type": "openai", "base_url": "http://127.0.0.1:9", "api_key": "sk-test"}},
        "models": {"small": {"provider": "up"}, "medium": {"provider": "up"}, "large": {"provider": "up"}},
        "tiers": {"cheap": ["small"], "mid": ["medium"], "premium": ["large"]},
    }
    data.update(sections)
    return data


def config_error(data: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "test.yaml")
    return str(caught.value)


# ---- the embedded default ----


def test_embedded_default_loads() -> None:
    config = load_config()
    assert config.tier_names == ["cheap", "mid", "premium"]
    assert config.premium_tier == "premium"
    assert all(isinstance(p, ReplayProviderConfig) for p in config.providers.values())
    for models in config.tiers.values():
        assert all(name in config.models for name in models)
    assert config.routing.default_tier == "cheap"


def test_defaults_fill_what_a_minimal_config_leaves_out() -> None:
    config = parse_config(minimal())
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.retry.attempts == 3
    assert config.routing.task_tiers["code"] == "mid"
    assert set(config.routing.blacklist) == {"legal", "safety"}
    assert config.models["small"].context_window == 128_000


# ---- unknown keys and bad values name the key path ----


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (minimal(tierz={"cheap": ["small"]}), "tierz: unknown key"),
        (
            minimal(routing={"rules": [{"name": "r", "when": {"bogus": 1}, "tier": "cheap"}]}),
            "routing.rules.0.when.bogus: unknown key",
        ),
        (minimal(routing={"defualt_tier": "cheap"}), "routing.defualt_tier: unknown key"),
        (minimal(server={"prot": 9000}), "server.prot: unknown key"),
        (minimal(models={"small": {"provider": "up", "context": 4096}}), "models.small.context: unknown key"),
        (
            minimal(providers={"up": {"type": "openai", "base_ur": "http://x"}}),
            "providers.up.base_ur: unknown key",
        ),
        (minimal(auth={"keys": [{"id": "a", "key": "k", "tier": "free"}]}), "auth.keys.0.tier: unknown key"),
        pytest.param(
            minimal(
                providers={"openai": {"type": "openai", "api_kee": "x"}},
                models={
                    "small": {"provider": "openai"},
                    "medium": {"provider": "openai"},
                    "large": {"provider": "openai"},
                },
            ),
            "providers.openai.api_kee: unknown key",
        ),
    ],
)
def test_unknown_keys_name_the_key_path(data: dict[str, Any], path: str) -> None:
    assert f"test.yaml: {path}" in config_error(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (minimal(server={"port": 70000}), "server.port: Input should be less than or equal to 65535"),
        (minimal(providers={"up": {"type": "grpc"}}), "providers.up: Input tag 'grpc'"),
        (minimal(retry={"attempts": 0}), "retry.attempts: Input should be greater than or equal to 1"),
        (minimal(routing={"task_tiers": {"poetry": "cheap"}}), "routing.task_tiers.poetry"),
        (
            minimal(routing={"rules": [{"name": "r", "when": {}}]}),
            "routing.rules.0: a rule needs exactly one of tier, min_tier, max_tier",
        ),
        (
            minimal(routing={"rules": [{"name": "r", "when": {}, "tier": "mid", "max_tier": "mid"}]}),
            "routing.rules.0: a rule needs exactly one of tier, min_tier, max_tier",
        ),
    ],
)
def test_bad_values_name_the_key_path(data: dict[str, Any], message: str) -> None:
    assert message in config_error(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            minimal(tiers={"cheap": ["smal"], "mid": ["medium"], "premium": ["large"]}),
            "tiers.cheap.0: unknown model 'smal'",
        ),
        (
            minimal(tiers={"cheap": ["small", "gpt-9"], "mid": ["medium"], "premium": ["large"]}),
            "tiers.cheap.1: unknown model 'gpt-9'",
        ),
        (
            minimal(tiers={"cheap": [], "mid": ["medium"], "premium": ["large"]}),
            "tiers.cheap: list at least one model",
        ),
        (minimal(tiers={}), "tiers: at least one tier is needed"),
        (minimal(models={"small": {"provider": "nope"}}), "models.small.provider: unknown provider 'nope'"),
        (
            minimal(routing={"task_tiers": {"code": "ultra"}}),
            "routing.task_tiers.code: unknown tier 'ultra' (tiers are cheap, mid, premium)",
        ),
        (minimal(routing={"default_tier": "free"}), "routing.default_tier: unknown tier 'free'"),
        (
            minimal(routing={"user_tier_caps": {"free": "basic"}}),
            "routing.user_tier_caps.free: unknown tier 'basic'",
        ),
        (
            minimal(routing={"domains": {"law": {"keywords": ["court"], "min_tier": "top"}}}),
            "routing.domains.law.min_tier: unknown tier 'top'",
        ),
        (
            minimal(routing={"rules": [{"name": "r", "when": {}, "min_tier": "gold"}]}),
            "routing.rules.0.min_tier: unknown tier 'gold'",
        ),
    ],
)
def test_references_name_the_key_path(data: dict[str, Any], message: str) -> None:
    assert message in config_error(data)


def test_every_problem_is_reported_at_once() -> None:
    error = config_error(
        minimal(
            tiers={"cheap": ["nope"], "mid": ["medium"], "premium": ["large"]},
            routing={"task_tiers": {"code": "ultra"}},
        )
    )
    assert "tiers.cheap.0: unknown model 'nope'" in error
    assert "routing.task_tiers.code: unknown tier 'ultra'" in error


def test_top_level_must_be_a_mapping() -> None:
    assert config_error(["providers"]) == "test.yaml: the top level must be a mapping, got list"


# ---- environment interpolation ----


def test_env_variables_are_filled_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TW_TEST_KEY", "sk-from-env")
    monkeypatch.setenv("TW_TEST_HOST", "10.0.0.7")
    monkeypatch.delenv("TW_TEST_PORT", raising=False)
    data = minimal(
        providers={
            "up": {
                "type": "openai",
                "base_url": "http://${TW_TEST_HOST}:8000/v1",
                "api_key": "${TW_TEST_KEY}",
            }
        },
        server={"port": "${TW_TEST_PORT:-9123}"},
    )
    config = parse_config(data)
    provider = config.providers["up"]
    assert isinstance(provider, OpenAIProviderConfig)
    assert provider.base_url == "http://10.0.0.7:8000/v1"
    assert provider.api_key is not None
    assert provider.api_key.get_secret_value() == "sk-from-env"
    assert config.server.port == 9123


def test_a_set_variable_beats_its_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TW_TEST_PORT", "7001")
    assert parse_config(minimal(server={"port": "${TW_TEST_PORT:-9123}"})).server.port == 7001


def test_an_empty_default_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TW_TEST_HOST", raising=False)
    assert parse_config(minimal(server={"host": "${TW_TEST_HOST:-}"})).server.host == ""


@pytest.mark.parametrize(
    ("sections", "path"),
    [
        ({"providers": {"up": {"type": "openai", "api_key": "${TW_TEST_MISSING}"}}}, "providers.up.api_key"),
        ({"auth": {"keys": [{"id": "a", "key": "${TW_TEST_MISSING}"}]}}, "auth.keys.0.key"),
    ],
)
def test_a_missing_variable_names_the_key_path_and_the_variable(
    monkeypatch: pytest.MonkeyPatch, sections: dict[str, Any], path: str
) -> None:
    monkeypatch.delenv("TW_TEST_MISSING", raising=False)
    error = config_error(minimal(**sections))
    assert error.startswith(f"test.yaml: {path}: environment variable TW_TEST_MISSING is not set")


def test_a_missing_variable_in_a_file_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TW_TEST_MISSING", raising=False)
    path = tmp_path / "router.yaml"
    path.write_text(
        "providers:\n  up:\n    type: openai\n    api_key: ${TW_TEST_MISSING}\n"
        "models:\n  m: {provider: up}\ntiers:\n  cheap: [m]\n  mid: [m]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: providers.up.api_key: environment variable TW_TEST_MISSING")


# ---- YAML files ----


def test_a_valid_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(
        "providers:\n  up: {type: openai, base_url: 'http://127.0.0.1:9'}\n"
        "models:\n  a: {provider: up, context_window: 8192}\n  b: {provider: up}\n"
        "tiers:\n  cheap: [a]\n  mid: [b]\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.tier_names == ["cheap", "mid"]
    assert config.models["a"].context_window == 8192


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("providers:\n  up:\n    type: openai\n   base_url: x\n", 4),
        ("providers:\n  up: {type: openai\nmodels: {}\n", 3),
        ("# comment\nproviders:\n  up:\n    type: openai\n\ttiers: []\n", 5),
    ],
)
def test_invalid_yaml_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: not valid YAML at line {line},")


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: cannot read the config file")


def test_validation_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "router.yaml"
    path.write_text(
        "providers:\n  up: {type: openai}\nmodels:\n  a: {provider: up}\ntiers:\n  cheap: [a]\n  mid: [b]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"{path}: tiers.mid.0: unknown model 'b'" in str(caught.value)


# ---- secrets ----


def _with_secrets() -> RouterConfig:
    return parse_config(
        minimal(
            providers={
                "up": {"type": "openai", "api_key": "sk-provider-SECRET"},
                "claude": {"type": "anthropic", "api_key": "sk-ant-SECRET"},
            },
            auth={
                "required": True,
                "keys": [{"id": "team", "key": "client-key-SECRET", "user_tier": "free"}],
            },
        )
    )


@pytest.mark.parametrize(
    "render",
    [repr, str, lambda c: str(c.model_dump()), lambda c: c.model_dump_json()],
    ids=["repr", "str", "model_dump", "model_dump_json"],
)
def test_secrets_never_appear_when_the_config_is_printed(render: Any) -> None:
    config = _with_secrets()
    text = render(config)
    assert "SECRET" not in text
    assert "**********" in text


def test_secrets_stay_readable_on_purpose() -> None:
    config = _with_secrets()
    assert config.auth.keys[0].key.get_secret_value() == "client-key-SECRET"


# ---- the shipped example ----


def test_example_openai_anthropic_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    if not EXAMPLE.exists():
        pytest.skip(f"{EXAMPLE} does not exist yet")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    config = load_config(EXAMPLE)
    assert config.tier_names[-1] == config.premium_tier
    keys = {
        name: p.api_key.get_secret_value()
        for name, p in config.providers.items()
        if not isinstance(p, ReplayProviderConfig) and p.api_key is not None
    }
    assert "sk-openai-test" in keys.values()
    assert "sk-ant-test" in keys.values()
    assert "sk-openai-test" not in repr(config)


def test_example_without_its_keys_says_which_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    if not EXAMPLE.exists():
        pytest.skip(f"{EXAMPLE} does not exist yet")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLE)
    assert "api_key: environment variable OPENAI_API_KEY is not set" in str(caught.value)


def test_a_config_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    from tierwise.config import load_config

    path = tmp_path / "latin1.yaml"
    path.write_bytes("# caf\xe9\nserver:\n  port: 8080\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (f"{path}: not UTF-8 text (byte 0xe9 at offset 5): save the config as UTF-8")


def test_tier_names_is_computed_once_per_tiers() -> None:
    from tierwise.config import load_config

    cfg = load_config(None)
    names = cfg.tier_names
    assert names is cfg.tier_names and names == list(cfg.tiers)
    assert cfg == load_config(None)  # the cache is not a field: equality and dumps are unchanged
    other = cfg.model_copy(update={"tiers": {"solo": cfg.tiers[names[0]]}})
    assert other.tier_names == ["solo"] and cfg.tier_names == names


def test_two_entries_for_one_anthropic_model_must_agree_on_thinking() -> None:
    providers = {
        "up": {"type": "openai", "base_url": "http://127.0.0.1:9", "api_key": "sk-test"},
        "claude": {"type": "anthropic", "base_url": "http://127.0.0.1:9", "api_key": "sk-ant"},
        "claude-eu": {"type": "anthropic", "base_url": "http://127.0.0.1:8", "api_key": "sk-ant"},
    }
    models: dict[str, Any] = {
        "small": {"provider": "up"},
        "opus-plain": {"provider": "claude", "name": "claude-opus", "supports_thinking": False},
        "opus-deep": {"provider": "claude", "name": "claude-opus"},
    }
    tiers = {"cheap": ["small"], "mid": ["opus-plain"], "premium": ["opus-deep"]}
    message = config_error(minimal(providers=providers, models=models, tiers=tiers))
    assert (
        "models.opus-deep.supports_thinking: true disagrees with models.opus-plain.supports_thinking"
        in message
    )
    assert "(false); both are 'claude-opus' on provider 'claude'" in message
    # The same upstream name on two providers is two models; agreeing entries are fine.
    models["opus-deep"]["provider"] = "claude-eu"
    parse_config(minimal(providers=providers, models=models, tiers=tiers))
    models["opus-deep"] |= {"provider": "claude", "supports_thinking": False}
    parse_config(minimal(providers=providers, models=models, tiers=tiers))
    # An OpenAI-compatible provider never sends thinking: its entries may say anything.
    openai_models = {
        "small": {"provider": "up"},
        "a": {"provider": "up", "name": "m", "supports_thinking": False},
        "b": {"provider": "up", "name": "m"},
    }
    parse_config(minimal(models=openai_models, tiers={"cheap": ["small"], "mid": ["a"], "premium": ["b"]}))


def test_config_keys_need_ids_of_their_own() -> None:
    keys = [{"id": "team", "key": "k1"}, {"id": "other", "key": "k2"}, {"id": "team", "key": "k3"}]
    message = config_error(minimal(auth={"keys": keys}))
    assert "auth.keys.2.id: 'team' is also the id of auth.keys.0" in message
    # tierwise's own usage rows (the shadow comparisons' spend) go by ids starting with "~".
    message = config_error(minimal(auth={"keys": [{"id": "~shadow", "key": "k1"}]}))
    assert "auth.keys.0.id" in message and "must not start with '~'" in message
