"""What every request leaves behind: one RoutingRecord with its Attempts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

AttemptStatus = Literal["ok", "error", "timeout"]
RecordStatus = Literal["ok", "error", "rejected"]


@dataclass(slots=True)
class Attempt:
    """One call to one upstream model."""

    tier: str
    model: str
    provider: str
    status: AttemptStatus
    latency_ms: float
    http_status: int | None = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    retry: int = 0
    # The gates' verdicts on this attempt's answer, in a cascade.
    gates: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class RoutingRecord:
    """One request, whatever became of it."""

    request_id: str
    ts: float
    endpoint: str
    status: RecordStatus
    http_status: int
    requested_model: str | None = None
    api_key_id: str | None = None
    user_tier: str | None = None
    request_class: str | None = None
    tier: str | None = None
    model: str | None = None
    reason: str | None = None
    features: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    baseline_cost_usd: float | None = None
    latency_ms: float = 0.0
    # The share of cost_usd spent deciding (an LLM classifier's call): the routing tax.
    routing_cost_usd: float = 0.0
    stream: bool = False
    prompt: str | None = None
    response_id: str | None = None
    response_text: str | None = None


@dataclass(slots=True)
class Feedback:
    """A quality score for one served request: from a user (``POST /v1/tierwise/feedback``) or a judge."""

    request_id: str
    ts: float
    score: float  # 0..1; thumbs up is 1, down is 0
    comment: str | None = None
    source: str = "user"
    api_key_id: str | None = None


ComparisonMode = Literal["shadow", "baseline_sample"]


@dataclass(slots=True)
class Comparison:
    """The router's answer set against the baseline model's for one request (shadow mode or live sampling).

    ``score`` is the router's side of a pairwise verdict: 1 router better, 0.5 as good, 0 baseline better;
    None when either side failed (``error`` says which).
    """

    request_id: str
    ts: float
    mode: ComparisonMode
    request_class: str | None
    router_tier: str | None
    router_model: str | None
    baseline_model: str
    router_cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0
    router_latency_ms: float | None = None
    baseline_latency_ms: float | None = None
    judge: str = ""  # "judge:<model>", "programmatic" or "same_model"
    score: float | None = None
    reason: str | None = None
    judge_cost_usd: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Change:
    """A change to the router's config, as ``tierwise learn`` proposed (and maybe applied) it.

    ``patch`` is the unified diff of the config file; ``applied`` whether it was written to the file.
    """

    ts: float
    source: str  # "learn"
    summary: str
    patch: str
    applied: bool = False
    config_path: str | None = None
    detail: dict[str, Any] | None = None  # the rules' numbers behind each change
    id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class ConfigVersion:
    """One config the replicas sharing a PostgreSQL store serve: the file's text as written (``${VAR}``
    references unresolved, so no secret is stored), and the artifacts it names.

    ``artifacts`` maps each config key naming an artifact (``routing.classifier.artifact``) to its ``path``,
    ``sha256`` and ``size``, and ``shared``: whether the bytes are in the database too (small enough).
    ``digest`` covers the text and the artifacts' hashes: two replicas serving the same digest serve the same.
    """

    digest: str
    config_text: str
    config_name: str  # the file it was read from, or "<embedded default config>"
    source: str  # "startup", "reload" (admin endpoint or SIGHUP) or "learn"
    origin: str  # host:pid of the replica or command that published it
    ts: float
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    id: int | None = None


@dataclass(slots=True)
class StoredKey:
    """A proxy API key kept in the store (``tierwise keys create``): its SHA-256, never the secret.

    ``budget_usd`` per ``budget_period`` (``day`` or ``month``, UTC) and ``rpm`` (requests per minute) are
    the key's limits (None: none); ``over_budget`` what happens past the budget: ``refuse`` (HTTP 429),
    ``route_down`` (served at the cheapest tier), or None (the config's ``auth.over_budget``).
    """

    id: str
    key_sha256: str
    prefix: str  # the secret's first characters, to tell keys apart in listings
    created_at: float
    user_tier: str | None = None
    team: str | None = None
    budget_usd: float | None = None
    budget_period: str | None = None
    rpm: int | None = None
    over_budget: str | None = None
    revoked_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class KeyUsage:
    """What one replica adds to a store key's usage: to each of ``periods`` (``day:2025-01-31``,
    ``month:2025-01``) the spent dollars and requests, and to ``minute`` (unix minute) the requests."""

    key_id: str
    replica: str
    periods: tuple[str, ...]
    spent_usd: float = 0.0
    requests: int = 0
    minute: int | None = None
