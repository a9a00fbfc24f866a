"""The learned classifier's part in routing: the starting tier from its routing scores and thresholds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tierwise.config import RouterConfig
from tierwise.errors import ConfigError
from tierwise.features import Features
from tierwise.messages import ChatRequest

if TYPE_CHECKING:
    from tierwise.classify.learned import LearnedRouter


class LearnedStart:
    """The learned classifier's starting tier: the cheapest tier whose P(it will do) reaches its threshold."""

    def __init__(self, router: LearnedRouter, tiers: list[str], thresholds: list[float]) -> None:
        self.router, self.tiers, self.thresholds = router, tiers, thresholds

    @classmethod
    def from_config(cls, config: RouterConfig) -> LearnedStart | None:
        spec = config.routing.classifier
        if spec.type != "learned" or spec.artifact is None:
            return None
        from tierwise.classify.artifact import load_router

        router, meta = load_router(spec.artifact)
        if len(router.tiers_) != len(config.tiers):
            raise ConfigError(
                f"routing.classifier.artifact: {spec.artifact} was trained for {len(router.tiers_)} tiers "
                f"({', '.join(meta['models'])}), the config has {len(config.tiers)}"
            )
        tiers = config.tier_names
        return cls(router, tiers, [spec.thresholds.get(t, spec.threshold) for t in tiers[:-1]])

    def scores(self, request: ChatRequest, features: Features | None = None) -> tuple[Any, Any]:
        """The routing scores and the probabilities for one request (one pass over its text). The router reads
        its own features, exactly as in training: from the engine's ``features`` when given, with only the
        domains matched again (the config's keyword sets may differ from the router's)."""
        from tierwise.classify.learned import own_features

        own = None if features is None else own_features(request, features)
        return self.router.score_and_proba_request(request, own)

    def start(
        self, request: ChatRequest, features: Features, scored: tuple[Any, Any] | None = None
    ) -> tuple[str, str]:
        """The starting tier and its reason; ``scored`` is ``scores(request)`` when the caller has it."""
        scores, p = scored if scored is not None else self.scores(request, features)
        scores, p = scores.tolist(), p.tolist()  # plain floats: numpy's own formatting is slower
        shown = by_tier(self.tiers, scores)
        probs = by_tier(self.tiers, p)
        for tier, score, threshold in zip(self.tiers, scores, self.thresholds, strict=False):
            if score >= threshold:
                return tier, f"learned:score({shown})>={threshold:g};p({probs})"
        return self.tiers[-1], f"learned:score({shown})<thresholds;p({probs})"


def by_tier(tiers: list[str], values: Any) -> str:
    return ",".join(f"{t}:{v:.2f}" for t, v in zip(tiers, values, strict=False))
