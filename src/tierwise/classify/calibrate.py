"""Calibration: pick the learned router's threshold for a quality or cost target, on training data only.

The scores used are out-of-fold (each prompt scored by a router trained without it), so the threshold is the
one a router trained on all the data would need on prompts it has not seen. The chosen threshold can be
written into a router config in place (comments and layout kept).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tierwise.classify.learned import LearnedRouter
from tierwise.errors import ConfigError
from tierwise.evals.dataset import EvalRecord
from tierwise.evals.metrics import Baselines, OutcomeTable, Point
from tierwise.evals.sweep import kfold_predict, sweep


@dataclass(frozen=True)
class Target:
    """Exactly one of: a share of premium-only quality or cost, or a budget per 1,000 requests."""

    quality: float | None = None
    cost_share: float | None = None
    usd_per_1k: float | None = None

    def __post_init__(self) -> None:
        if sum(v is not None for v in (self.quality, self.cost_share, self.usd_per_1k)) != 1:
            raise ValueError("give exactly one target: quality, cost share or budget per 1k requests")


class _AgainstPremium:
    """A chosen operating point's quality and cost as shares of premium-only's."""

    point: Point
    base: Baselines

    @property
    def quality_vs_premium(self) -> float:
        return self.point.quality / self.base.premium.quality if self.base.premium.quality else 1.0

    @property
    def cost_vs_premium(self) -> float:
        return self.point.cost_usd / self.base.premium.cost_usd if self.base.premium.cost_usd else 0.0


@dataclass(frozen=True)
class Calibration(_AgainstPremium):
    threshold: float
    point: Point
    base: Baselines
    n: int

    @property
    def usd_per_1k(self) -> float:
        return self.point.cost_usd / self.n * 1000 if self.n else 0.0


def calibrate(
    records: Sequence[EvalRecord],
    table: OutcomeTable,
    target: Target,
    *,
    make: type[LearnedRouter] = LearnedRouter,
    folds: int = 5,
) -> Calibration:
    """The threshold that meets ``target`` at the lowest cost (quality target) or the highest quality (cost
    targets), on out-of-fold scores. When nothing meets a cost target, the cheapest point is returned."""
    scores = kfold_predict(make, records, table, folds=folds)
    base = Baselines.of(table)
    points = sweep(table, scores, n_points=201)
    if target.quality is not None:
        need = target.quality * base.premium.quality - 1e-12
        ok = [(t, p) for t, p in points if p.quality >= need]
        t, p = min(ok, key=lambda tp: tp[1].cost_usd) if ok else points[-1]
    else:
        limit = (
            target.cost_share * base.premium.cost_usd
            if target.cost_share is not None
            else (target.usd_per_1k or 0.0) * table.n / 1000
        )
        ok = [(t, p) for t, p in points if p.cost_usd <= limit + 1e-12]
        t, p = max(ok, key=lambda tp: tp[1].quality) if ok else min(points, key=lambda tp: tp[1].cost_usd)
    return Calibration(t, p, base, table.n)


def write_threshold(config_path: Path, threshold: float, artifact: str | None = None) -> None:
    """Set routing.classifier.threshold (and type: learned, and the artifact if given) in a YAML config,
    keeping its comments and layout."""
    yaml, data = _load(config_path)
    routing = data.setdefault("routing", {})
    classifier = routing.setdefault("classifier", {})
    classifier["type"] = "learned"
    if artifact is not None:
        classifier["artifact"] = artifact
    classifier["threshold"] = round(float(threshold), 4)
    _dump(yaml, data, config_path)


def _load(config_path: Path) -> tuple[Any, Any]:
    """The YAML config as a round-trip document (its comments and layout kept), and the YAML that wrote it."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    try:
        data = yaml.load(config_path.read_text("utf-8"))
    except (OSError, YAMLError) as exc:
        raise ConfigError(f"{config_path}: cannot update it ({exc})") from None
    return yaml, data


def _dump(yaml: Any, data: Any, config_path: Path) -> None:
    """Write the YAML atomically (a temporary file renamed over the config): a proxy reloading meanwhile
    reads the old config or the new one, never half of one."""
    from tierwise.config import write_config_text

    text = io.StringIO()
    yaml.dump(data, text)
    write_config_text(config_path, text.getvalue())


# How sure a policy's operating point must be to reach the quality target: the share of bootstrap resamples
# of the prompts in which it does (tierwise.evals.cascade_sweep.choose).
REQUIRED_CONFIDENCE = 0.8


@dataclass(frozen=True)
class PolicyCalibration(_AgainstPremium):
    """The cascade's or the auto policy's parameters for a quality target: the learned gate's threshold
    (``gate``), and for auto the bands ``hi`` (confident_cheap) and ``lo`` (confident_premium)."""

    policy: str
    params: dict[str, float]
    point: Point
    base: Baselines
    n: int


def calibrate_policy(
    records: Sequence[EvalRecord],
    table: OutcomeTable,
    policy: str,
    quality: float,
    *,
    make: type[LearnedRouter] = LearnedRouter,
    folds: int = 5,
) -> PolicyCalibration:
    """The cheapest ``cascade`` or ``auto`` operating point reaching ``quality`` of premium-only quality, on
    out-of-fold router scores and out-of-fold learned-gate scores (as `tierwise bench` calibrates them). The
    data must have kept the non-premium tiers' answers: the gate judges them."""
    from tierwise.evals.cascade_sweep import GateScorer, cheapest_reaching, has_answers, plan_for
    from tierwise.evals.metrics import point_for

    if policy not in ("cascade", "auto"):
        raise ValueError(f"policy must be cascade or auto, not {policy!r}")
    if not has_answers(records, table.models):
        raise ValueError(
            "the data kept no answers for the cheaper tiers (response is null): a learned gate cannot be "
            "calibrated on it"
        )
    gate = kfold_predict(GateScorer, records, table, folds=folds)
    router = kfold_predict(make, records, table, folds=folds) if policy == "auto" else gate * 0
    found = cheapest_reaching(table, policy, router, gate, quality, confidence=REQUIRED_CONFIDENCE)
    if found is None:
        raise ValueError(
            f"no {policy} operating point reaches {quality:.1%} of premium-only quality in "
            f"{REQUIRED_CONFIDENCE:.0%} of bootstrap resamples of these {table.n} prompts: lower "
            "--target-quality, give more data, or route everything to premium (--policy direct)"
        )
    params = found
    plan = plan_for(policy, params, router, gate)
    clipped = {k: min(max(v, 0.0), 1.0) for k, v in params.items()}
    return PolicyCalibration(
        policy, clipped, point_for(table, plan.final, plan.paid), Baselines.of(table), table.n
    )


def write_policy(config_path: Path, result: PolicyCalibration, gate_artifact: str | None = None) -> None:
    """Set routing.policy, the auto bands and the learned gate's threshold in a YAML config, keeping its
    comments. The config must list a learned gate in routing.cascade.gates, or ``gate_artifact`` names one
    to add."""
    yaml, data = _load(config_path)
    routing = data.setdefault("routing", {})
    routing["policy"] = result.policy
    if result.policy == "auto":
        auto = routing.setdefault("auto", {})
        auto["confident_cheap"] = round(result.params["hi"], 4)
        auto["confident_premium"] = round(result.params["lo"], 4)
    cascade = routing.setdefault("cascade", {})
    if "gates" not in cascade:  # keep the default gates the config relied on, and add the learned one
        from tierwise.config import DEFAULT_GATES

        cascade["gates"] = [{"type": t} for t in DEFAULT_GATES]
    gates = cascade["gates"]
    learned = [g for g in gates if isinstance(g, dict) and g.get("type") == "learned"]
    if not learned:
        if gate_artifact is None:
            raise ConfigError(
                f"{config_path}: routing.cascade.gates has no learned gate; train one with `tierwise "
                "train-gate` and pass it with --gate"
            )
        gates.append({"type": "learned", "artifact": gate_artifact})
        learned = [gates[-1]]
    for gate in learned:
        if gate_artifact is not None:
            gate["artifact"] = gate_artifact
        gate["threshold"] = round(result.params["gate"], 4)
    _dump(yaml, data, config_path)
