"""The router's configuration: typed, strict (unknown keys are errors), loaded from YAML.

Strings may hold ``${VAR}`` or ``${VAR:-default}``; they are filled from the environment when the file is
loaded, so secrets stay out of the file. Every error names the key path (``tiers.cheap.0``) and what was
expected there.
"""

from __future__ import annotations

import fnmatch
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from tierwise.errors import ConfigError

TASK_TYPES = ("summarize", "extract", "classify", "rephrase", "code", "reasoning", "chat")
TaskType = Literal["summarize", "extract", "classify", "rephrase", "code", "reasoning", "chat"]
PromptStorage = Literal["full", "hash", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    # On SIGTERM/SIGINT: how long (whole seconds) requests in flight, streams included, may take to finish
    # before they are cancelled; the store then writes every record it holds.
    shutdown_grace_s: int = Field(30, ge=0)
    # Worker processes sharing the port (uvicorn's supervisor; docs/deployment.md): each is a replica of its
    # own, with its own event loop, store writer and breakers; metrics are summed over them.
    workers: int = Field(1, ge=1, le=64)


class ApiKey(_Strict):
    id: str = Field(min_length=1)
    key: SecretStr
    user_tier: str | None = None
    # The key's team: when set, the request class of its requests (an x-tierwise-class header still wins).
    team: str | None = Field(None, min_length=1)
    # Limits, as store keys have them (tierwise.keys): "100/month" or "5/day" (US dollars, UTC periods),
    # requests per sliding minute, and what happens past the budget (None: auth.over_budget).
    budget: str | None = None
    rpm: int | None = Field(None, ge=1)
    over_budget: Literal["refuse", "route_down"] | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if value.startswith("~"):
            # tierwise's own usage rows (the shadow comparisons' spend, tierwise.keys) go by such ids.
            raise ValueError("must not start with '~' (tierwise keeps its own usage under such ids)")
        return value

    @field_validator("budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        if value is not None:
            from tierwise.keys import parse_budget

            parse_budget(value)  # raises ValueError saying what is wrong
        return value


class AuthConfig(_Strict):
    # When true, every request needs one of ``keys`` as its bearer token (or ``x-api-key``).
    required: bool = False
    keys: list[ApiKey] = Field(default_factory=list)
    # A header clients may set to say which user tier they are; null turns it off.
    user_tier_header: str | None = "x-tierwise-user-tier"
    default_user_tier: str | None = None
    # The key admin endpoints (reload) require; without one they are off.
    admin_key: SecretStr | None = None
    # What a key with a budget (a store key, or one of ``keys``) past it gets when it says nothing itself:
    # refuse (HTTP 429) or route_down (served at the cheapest tier). docs/keys.md
    over_budget: Literal["refuse", "route_down"] = "refuse"

    @model_validator(mode="after")
    def _unique_ids(self) -> AuthConfig:
        # Records, usage rows and limits go by a key's id: two keys under one id would share them.
        seen: dict[str, int] = {}
        problems = []
        for i, key in enumerate(self.keys):
            if key.id in seen:
                problems.append(f"auth.keys.{i}.id: {key.id!r} is also the id of auth.keys.{seen[key.id]}")
            seen.setdefault(key.id, i)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class OpenAIProviderConfig(_Strict):
    type: Literal["openai"]
    base_url: str = "https://api.openai.com/v1"
    api_key: SecretStr | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)


class AnthropicProviderConfig(_Strict):
    type: Literal["anthropic"]
    base_url: str = "https://api.anthropic.com"
    api_key: SecretStr | None = None
    version: str = "2023-06-01"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    default_max_tokens: int = Field(4096, gt=0)


class ReplayProviderConfig(_Strict):
    type: Literal["replay"]
    # A routing eval set (JSONL, see docs/datasets.md) or ``builtin:arena-demo``.
    data: str = "builtin:arena-demo"
    # Simulated upstream latency, for demos and benchmarks.
    latency_ms: float = Field(0.0, ge=0)


ProviderConfig = Annotated[
    OpenAIProviderConfig | AnthropicProviderConfig | ReplayProviderConfig, Field(discriminator="type")
]


class Price(_Strict):
    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class ModelConfig(_Strict):
    provider: str
    # The model's name upstream; defaults to the key it is configured under.
    name: str | None = None
    context_window: int = Field(128_000, gt=0)
    supports_tools: bool = True
    # Whether an Anthropic model takes extended thinking: when false, a client's thinking setting and the
    # thinking blocks of its assistant turns are left out of what the model is sent.
    supports_thinking: bool = True
    price: Price | None = None


class DomainRule(_Strict):
    keywords: list[str]
    min_tier: str


class RuleCondition(_Strict):
    task: list[TaskType] | None = None
    domain: list[str] | None = None
    keywords: list[str] | None = None
    user_tier: list[str] | None = None
    tools: bool | None = None
    input_tokens_gt: int | None = None
    input_tokens_lt: int | None = None
    output_tokens_gt: int | None = None
    depth_gt: int | None = None


class Rule(_Strict):
    name: str
    when: RuleCondition
    tier: str | None = None
    min_tier: str | None = None
    max_tier: str | None = None
    # The request class of matching requests (for metrics, per-class cascades), instead of the task type.
    request_class: str | None = Field(None, alias="class", min_length=1)

    @model_validator(mode="after")
    def _one_action(self) -> Rule:
        actions = sum(x is not None for x in (self.tier, self.min_tier, self.max_tier))
        if actions > 1 or (actions == 0 and self.request_class is None):
            raise ValueError("a rule needs exactly one of tier, min_tier, max_tier (or only a class)")
        return self


def _default_domains() -> dict[str, DomainRule]:
    return {
        "legal": DomainRule(
            keywords=[
                "contract",
                "lawsuit",
                "litigation",
                "statute",
                "liability",
                "indemnif*",
                "attorney",
                "court ruling",
                "legal advice",
                "plaintiff",
                "defendant",
                "jurisdiction",
            ],
            min_tier="mid",
        ),
        "medical": DomainRule(
            keywords=[
                "diagnos*",
                "symptom*",
                "dosage",
                "prescription",
                "medication",
                "clinical",
                "treatment plan",
                "side effects",
            ],
            min_tier="mid",
        ),
        "finance": DomainRule(
            keywords=[
                "tax",
                "portfolio",
                "investment",
                "securities",
                "audit",
                "balance sheet",
                "cash flow",
                "valuation",
            ],
            min_tier="mid",
        ),
        "security": DomainRule(
            keywords=[
                "vulnerability",
                "exploit",
                "CVE-*",
                "penetration test",
                "threat model",
                "authentication bypass",
                "malware",
            ],
            min_tier="mid",
        ),
    }


def _default_blacklist() -> dict[str, list[str]]:
    return {
        "legal": ["contract review", "legal advice", "under * law", "lawsuit", "litigation"],
        "safety": ["suicide", "self-harm", "overdose", "weapon", "explosive"],
    }


def _default_task_tiers() -> dict[TaskType, str]:
    return {
        "classify": "cheap", "extract": "cheap", "rephrase": "cheap", "summarize": "cheap",
        "chat": "cheap", "code": "mid", "reasoning": "mid",
    }  # fmt: skip


class ClassifierConfig(_Strict):
    """Which classifier picks the starting tier for ``tierwise/auto``."""

    type: Literal["rules", "learned"] = "rules"
    # learned: a router artifact from `tierwise train`, and the probability a tier needs to serve a request.
    artifact: str | None = None
    threshold: float = Field(0.5, ge=0, le=1)
    # Per-tier thresholds, overriding ``threshold`` for the tiers they name.
    thresholds: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _needs_artifact(self) -> ClassifierConfig:
        if self.type == "learned" and not self.artifact:
            raise ValueError("a learned classifier needs artifact: the file `tierwise train` wrote")
        return self


class LLMClassifierConfig(_Strict):
    """A cheap model that classifies each ``tierwise/auto`` request (JSON answer) before routing."""

    model: str  # a configured model, usually the cheap tier's
    timeout_s: float = Field(2.0, gt=0)
    # Below this confidence the request starts one tier higher.
    confidence_threshold: float = Field(0.6, ge=0, le=1)
    max_tokens: int = Field(120, gt=0)
    max_input_chars: int = Field(4000, gt=100)
    # Ask for JSON mode (response_format json_object); turn off for upstreams that reject it.
    json_mode: bool = True


GateType = Literal[
    "not_empty", "not_truncated", "no_refusal", "json", "json_schema", "tool_arguments", "code_parses",
    "regex", "length", "critique", "grounding", "learned",
]  # fmt: skip
DEFAULT_GATES = (
    "not_empty",
    "not_truncated",
    "no_refusal",
    "json",
    "json_schema",
    "tool_arguments",
    "code_parses",
)
DEFAULT_HINT = (
    "An earlier draft answer to this conversation did not pass review ({reasons}). Use it as context: keep "
    "what is right, fix what is wrong, and answer the user's request in full yourself. Do not mention the "
    "draft or the review.\n{drafts}"
)


class GateSpec(_Strict):
    """One gate of a cascade; a bare name stands for ``{type: name}``."""

    type: GateType
    must_match: str | None = None
    must_not_match: str | None = None
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=0)
    # critique: the (cheap) model that judges the answer, and its time limit.
    model: str | None = None
    timeout_s: float = Field(10.0, gt=0)
    # critique, grounding, learned: the score an answer needs to pass.
    threshold: float = Field(0.5, ge=0, le=1)
    # learned: the gate artifact `tierwise train-gate` wrote.
    artifact: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _patterns(self) -> GateSpec:
        if self.type == "critique" and not self.model:
            raise ValueError("a critique gate needs model: the configured model that judges answers")
        if self.type == "learned" and not self.artifact:
            raise ValueError("a learned gate needs artifact: the file `tierwise train-gate` wrote")
        for attr in ("must_match", "must_not_match"):
            pattern = getattr(self, attr)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"{attr}: not a valid regular expression ({exc})") from None
        return self


class CascadeClassConfig(_Strict):
    """One request class's departures from the cascade; keys left out keep the cascade's."""

    policy: Literal["direct", "cascade"] | None = None
    # With policy direct: the tier the class is routed to, in place of its task type's tier (domain floors,
    # rules, user tier caps and the blacklist still apply). `tierwise learn` sets it for classes whose
    # cascades never escalate.
    tier: str | None = None
    start: str | None = None
    gates: list[GateSpec] | None = None
    max_escalations: int | None = Field(None, ge=0)
    hints: bool | None = None
    stream_first: bool | None = None

    @model_validator(mode="after")
    def _tier_needs_direct(self) -> CascadeClassConfig:
        if self.tier is not None and self.policy != "direct":
            raise ValueError("tier: needs policy: direct (a cascaded class starts at start:)")
        return self


class CascadeConfig(_Strict):
    """Try a tier, let the gates judge its answer, escalate with a hint when they fail."""

    # Where to start: "cheapest", "classifier" (the tier the classifier picks), or a tier name.
    start: str = "cheapest"
    gates: list[GateSpec] = Field(default_factory=lambda: [GateSpec(type=t) for t in DEFAULT_GATES])
    max_escalations: int = Field(2, ge=0)
    # No escalation once a request has spent this much (US dollars).
    max_cost_usd: float | None = Field(None, gt=0)
    hints: bool = True
    hint_template: str = DEFAULT_HINT
    # The share of escalating requests sent on without a hint, to measure what hints are worth: each cascade
    # record says whether its seniors got one (decision.hinted).
    hint_holdout: float = Field(0.0, ge=0, le=1)
    # Streams go out live from the start tier, ungated: for classes that rarely escalate, the fastest first
    # token. Their gates still judge the answer for the records once it is complete.
    stream_first: bool = False
    # Per request class (task type, or the x-tierwise-class header): overrides of the keys above.
    classes: dict[str, CascadeClassConfig] = Field(default_factory=dict)

    def for_class(self, name: str | None) -> CascadeConfig:
        """The cascade as ``name``'s overrides leave it."""
        override = self.classes.get(name or "")
        if override is None:
            return self
        # The override's own values (GateSpec objects stay objects), only the keys it sets.
        update = {k: getattr(override, k) for k in override.model_fields_set if k not in ("policy", "tier")}
        return self.model_copy(update={**update, "classes": {}})


class AutoConfig(_Strict):
    """The auto policy's bands on the learned classifier's routing scores (what its thresholds compare)."""

    # At or above: the cheapest tier answers alone.
    confident_cheap: float = Field(0.9, ge=0, le=1)
    # Below (for every tier below premium): premium answers alone. In between: a cascade.
    confident_premium: float = Field(0.2, ge=0, le=1)


class ModelAlias(_Strict):
    """A model name clients send (a glob, e.g. ``claude-opus-*``) and what it stands for."""

    # Matched against the requested model ignoring case, with * ? [...] as in shell globs.
    match: str = Field(min_length=1)
    # tierwise/auto, tierwise/<tier>, or a configured model.
    to: str = Field(min_length=1)
    # With a tier: the router picks as for tierwise/auto, but never above that tier (it may go below it).
    route_down: bool = False


class RoutingConfig(_Strict):
    policy: Literal["direct", "cascade", "auto"] = "direct"
    cascade: CascadeConfig = Field(default_factory=CascadeConfig)
    auto: AutoConfig = Field(default_factory=AutoConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    llm_classifier: LLMClassifierConfig | None = None
    default_tier: str = "cheap"
    # Starting tier for each task type the features detect.
    task_tiers: dict[TaskType, str] = Field(default_factory=_default_task_tiers)
    # Expertise domains: a keyword hit raises the tier to at least ``min_tier``.
    domains: dict[str, DomainRule] = Field(default_factory=_default_domains)
    # Keyword groups that force the premium tier; nothing (user tier, rules, the prompt) can lower it.
    blacklist: dict[str, list[str]] = Field(default_factory=_default_blacklist)
    # Free-form rules, applied in order after the task and domain tiers.
    rules: list[Rule] = Field(default_factory=list)
    # Per user tier, the highest tier its requests may reach (blacklist and hard limits excepted).
    user_tier_caps: dict[str, str] = Field(default_factory=dict)
    # Whether clients may pick a tier (``tierwise/<tier>``) or a concrete model.
    allow_explicit_tier: bool = True
    # Client model names (globs, first match wins) mapped to tierwise/auto, a tier or a configured model.
    model_aliases: list[ModelAlias] = Field(default_factory=list)

    def alias_for(self, model: str) -> ModelAlias | None:
        """The first alias whose pattern matches ``model``; names under ``tierwise/`` are never aliased."""
        if not self.model_aliases or model.startswith("tierwise/"):
            return None
        lowered = model.lower()
        return next((a for a in self.model_aliases if fnmatch.fnmatchcase(lowered, a.match.lower())), None)


class CircuitConfig(_Strict):
    """A circuit breaker per configured model: after ``failures`` retryable failures within ``window_s`` the
    model is skipped for ``open_s``, then one trial request decides whether it closes or opens again."""

    failures: int = Field(5, ge=1, le=1000)
    window_s: float = Field(30.0, gt=0)
    open_s: float = Field(15.0, gt=0)


class RetryConfig(_Strict):
    # Tries per model, first one included.
    attempts: int = Field(3, ge=1, le=10)
    backoff_s: float = Field(0.25, ge=0)
    max_backoff_s: float = Field(8.0, ge=0)
    # Longest ``retry-after`` honoured; a longer one moves on to the next model instead.
    max_retry_after_s: float = Field(10.0, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    # After a tier's models all fail, try the tiers above it.
    fallback_up: bool = True
    # Per model: skip one that keeps failing; null turns the breakers off.
    circuit: CircuitConfig | None = Field(default_factory=CircuitConfig)


def default_store_path() -> Path:
    base = os.environ.get("TIERWISE_HOME")
    if base:
        return Path(base) / "records.db"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "tierwise" / "records.db"


class StoreConfig(_Strict):
    # sqlite: one file, one process; postgres: a database several replicas share (docs/deployment.md).
    type: Literal["sqlite", "postgres"] = "sqlite"
    path: str | None = None  # sqlite; None: default_store_path()
    dsn: SecretStr | None = None  # postgres: a postgresql:// URL, e.g. "${DATABASE_URL}"
    prompts: PromptStorage = "full"
    batch_size: int = Field(256, gt=0)
    flush_interval_s: float = Field(0.2, gt=0)
    # postgres: how often each replica checks for a config version another one published; both types: how
    # often the store's API keys and their usage are read again (docs/keys.md).
    sync_interval_s: float = Field(2.0, gt=0)
    # module:function, a callable str -> str applied to prompts and answers before they are stored (with
    # prompts: full), e.g. tierwise.redact:emails_and_numbers.
    redact: str | None = None

    @field_validator("redact")
    @classmethod
    def _redactor(cls, value: str | None) -> str | None:
        if value is not None:
            from tierwise.redact import load_redactor

            load_redactor(value)  # a ValueError saying what is wrong with it
        return value

    def resolved_path(self) -> Path:
        return Path(self.path).expanduser() if self.path else default_store_path()

    def describe(self) -> str:
        """Where the records go, for messages (a database URL without its credentials)."""
        if self.type == "postgres" and self.dsn is not None:
            from tierwise.store.postgres import describe_dsn

            return describe_dsn(self.dsn.get_secret_value())
        return str(self.resolved_path())

    @model_validator(mode="after")
    def _backend(self) -> StoreConfig:
        if self.type == "postgres":
            if self.dsn is None:
                raise ValueError('dsn: type postgres needs a connection string, e.g. dsn: "${DATABASE_URL}"')
            if self.path is not None:
                raise ValueError("path: only for type sqlite; a postgres store is named by dsn")
            from tierwise.store.postgres import check_dsn

            problem = check_dsn(self.dsn.get_secret_value())
            if problem is not None:
                raise ValueError(f"dsn: {problem}")
        elif self.dsn is not None:
            raise ValueError("dsn: only for type postgres (set type: postgres, or leave dsn out)")
        return self


class JudgeConfig(_Strict):
    # The configured model that compares answers pairwise; null: a programmatic comparison (the gates).
    model: str | None = None
    # Ask twice with the answers' positions swapped, to cancel the judge's order bias.
    swap: bool = True
    timeout_s: float = Field(60.0, gt=0)


class ShadowConfig(_Strict):
    """Shadow mode and live baseline sampling (see docs/shadow.md)."""

    # The model the team uses today: what ``mode: shadow`` serves, and what comparisons measure against.
    # Null: the premium tier's first model.
    baseline_model: str | None = None
    # mode shadow: the share of requests the router also answers, in the background.
    sample: float = Field(0.05, ge=0, le=1)
    # mode live: the share of routed requests the baseline model also answers, in the background.
    baseline_sample: float = Field(0.0, ge=0, le=1)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    # What background answers and judging may spend per UTC day, all processes on the store together (counted
    # with the API keys' usage, under ~shadow); past it shadow work stops.
    max_spend_usd_per_day: float = Field(5.0, ge=0)
    # Background comparisons running at once; a sampled request finding them all busy is skipped.
    max_concurrent: int = Field(8, gt=0)


class RouterConfig(_Strict):
    # live: the router serves; shadow: the baseline model serves and the router runs beside it for a sample.
    mode: Literal["live", "shadow"] = "live"
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    # Ordered cheapest first; the last tier is premium, the baseline every saving is measured against.
    tiers: dict[str, list[str]]
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)

    @property
    def tier_names(self) -> list[str]:
        """The tiers, cheapest first; the same list every time (do not change it). Computed once per tiers
        mapping, since it is read several times a request: kept in the instance's ``__dict__`` as
        ``cached_property`` does (pydantic compares and dumps only the fields), with the mapping it was
        made from, so a ``model_copy`` with other tiers does not see a stale list."""
        cached = self.__dict__.get("_tier_names_cache")
        if cached is None or cached[0] is not self.tiers:
            cached = (self.tiers, list(self.tiers))
            self.__dict__["_tier_names_cache"] = cached
        return cached[1]

    @property
    def premium_tier(self) -> str:
        return self.tier_names[-1]

    @model_validator(mode="after")
    def _references(self) -> RouterConfig:
        problems: list[str] = []
        thinking: dict[tuple[str, str], tuple[str, bool]] = {}
        for name, model in self.models.items():
            if model.provider not in self.providers:
                problems.append(f"models.{name}.provider: unknown provider {model.provider!r}")
            # An Anthropic provider knows a model by its upstream name: two entries for one upstream model
            # must agree on whether it takes extended thinking (other providers never send thinking).
            if isinstance(self.providers.get(model.provider), AnthropicProviderConfig):
                upstream = (model.provider, model.name or name)
                first = thinking.setdefault(upstream, (name, model.supports_thinking))
                if first[1] != model.supports_thinking:
                    problems.append(
                        f"models.{name}.supports_thinking: {str(model.supports_thinking).lower()} disagrees "
                        f"with models.{first[0]}.supports_thinking ({str(first[1]).lower()}); both are "
                        f"{upstream[1]!r} on provider {upstream[0]!r}"
                    )
        if not self.tiers:
            problems.append("tiers: at least one tier is needed")
        for tier, names in self.tiers.items():
            if not names:
                problems.append(f"tiers.{tier}: list at least one model")
            problems.extend(
                f"tiers.{tier}.{i}: unknown model {n!r}" for i, n in enumerate(names) if n not in self.models
            )
        tiers = set(self.tiers)

        def check(path: str, tier: str | None) -> None:
            if tier is not None and tier not in tiers:
                problems.append(f"{path}: unknown tier {tier!r} (tiers are {', '.join(self.tiers)})")

        r = self.routing
        check("routing.default_tier", r.default_tier)
        for task, tier in r.task_tiers.items():
            check(f"routing.task_tiers.{task}", tier)
        for name, domain in r.domains.items():
            check(f"routing.domains.{name}.min_tier", domain.min_tier)
        for i, rule in enumerate(r.rules):
            for attr in ("tier", "min_tier", "max_tier"):
                check(f"routing.rules.{i}.{attr}", getattr(rule, attr))
        for user_tier, tier in r.user_tier_caps.items():
            check(f"routing.user_tier_caps.{user_tier}", tier)
        for tier in r.classifier.thresholds:
            check(f"routing.classifier.thresholds.{tier}", tier)
        for i, gate in enumerate(r.cascade.gates):
            if gate.model is not None and gate.model not in self.models:
                problems.append(f"routing.cascade.gates.{i}.model: unknown model {gate.model!r}")
        if r.cascade.start not in ("cheapest", "classifier"):
            check("routing.cascade.start", r.cascade.start)
        for name, override in r.cascade.classes.items():
            if override.start not in (None, "cheapest", "classifier"):
                check(f"routing.cascade.classes.{name}.start", override.start)
            check(f"routing.cascade.classes.{name}.tier", override.tier)
        if r.policy == "auto" and r.classifier.type != "learned":
            problems.append(
                "routing.policy: auto needs the learned classifier (routing.classifier.type: learned)"
            )
        for i, alias in enumerate(r.model_aliases):
            at = f"routing.model_aliases.{i}"
            if alias.to.startswith("tierwise/"):
                if alias.to != "tierwise/auto":
                    check(f"{at}.to", alias.to.removeprefix("tierwise/"))
            elif alias.to not in self.models:
                problems.append(
                    f"{at}.to: unknown model {alias.to!r} "
                    "(use tierwise/auto, tierwise/<tier> or a configured model)"
                )
            if alias.route_down and (alias.to == "tierwise/auto" or not alias.to.startswith("tierwise/")):
                problems.append(f"{at}.route_down: needs a tier in to (tierwise/<tier>)")
        if r.llm_classifier is not None and r.llm_classifier.model not in self.models:
            problems.append(f"routing.llm_classifier.model: unknown model {r.llm_classifier.model!r}")
        shadow = self.shadow
        if shadow.baseline_model is not None and shadow.baseline_model not in self.models:
            problems.append(f"shadow.baseline_model: unknown model {shadow.baseline_model!r}")
        if shadow.judge.model is not None and shadow.judge.model not in self.models:
            problems.append(f"shadow.judge.model: unknown model {shadow.judge.model!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}.{i}") for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:

        def fill(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = os.environ.get(name)
            if value is None:
                if default is None:
                    raise ConfigError(
                        f"{path}: environment variable {name} is not set "
                        f"(set it, or write ${{{name}:-default}} in the config)"
                    )
                return default
            return value

        return _ENV.sub(fill, node)
    return node


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        # The provider union adds its tag after the provider's name (providers.NAME.TAG.key); drop the tag.
        loc = re.sub(r"^(providers\.[^.]+)\.(openai|anthropic|replay)(?=\.|$)", r"\1", loc)
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        where = f"{loc}: " if loc else ""
        lines.append(f"{source}: {where}{msg}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "config") -> RouterConfig:
    """Validate an already-parsed mapping (environment variables get filled in first)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        data = _interpolate(data, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        return RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def read_config_text(path: str | Path | None = None) -> tuple[str, str]:
    """A config file's text and its name for messages; ``None``: the embedded demo default."""
    if path is None:
        text = resources.files("tierwise.data").joinpath("default.yaml").read_text("utf-8")
        return text, "<embedded default config>"
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc.strerror})") from None
    try:
        return data.decode("utf-8"), str(p)
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
            "save the config as UTF-8"
        ) from None


def write_config_text(path: str | Path, text: str) -> None:
    """Replace a config file's text atomically: a temporary file beside it, flushed to disk, then renamed
    over it, so a reader (the proxy's reload, a replica) sees the old file or the new one, never half of
    one. The file keeps its permissions. Raises ConfigError saying why it could not be written."""
    import tempfile

    p = Path(path)
    try:
        mode = p.stat().st_mode & 0o7777 if p.exists() else None
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ConfigError(f"{p}: cannot write the config file ({exc.strerror or exc})") from None


def load_config(path: str | Path | None = None) -> RouterConfig:
    """Load a YAML config file; ``None`` loads the embedded demo default."""
    return parse_config_text(*read_config_text(path))


def parse_config_text(text: str, source: str) -> RouterConfig:
    """Validate a config's YAML text; ``source`` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_config(data, source)
