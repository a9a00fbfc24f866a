"""The rules classifier: features -> tier, by the YAML rules, with the reason spelled out.

Order of precedence, lowest first: the task type's tier, expertise domains (raise), free-form rules (in
order), the user tier's cap, and last the keyword blacklist, which forces the premium tier and cannot be
lowered by anything a client writes. Hard limits of the models (tools, context window) are applied after
this, by the policy, because they depend on which models a tier holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from tierwise.config import RouterConfig, Rule, RuleCondition
from tierwise.features import Features, KeywordSet, extract_features, keyword_pattern
from tierwise.messages import ChatRequest


@dataclass(frozen=True, slots=True)
class TierChoice:
    """The classifier's answer: a tier, the request class, and why."""

    tier: str
    request_class: str
    reason: str
    forced: bool = False


class RulesClassifier:
    def __init__(self, config: RouterConfig) -> None:
        self.routing = config.routing
        self.tiers = config.tier_names
        self._rank = {t: i for i, t in enumerate(self.tiers)}
        self.domain_patterns = {name: keyword_pattern(d.keywords) for name, d in self.routing.domains.items()}
        self.blacklist_patterns = {
            name: keyword_pattern(words) for name, words in self.routing.blacklist.items()
        }
        self._rule_keywords: dict[int, KeywordSet] = {
            i: keyword_pattern(rule.when.keywords)
            for i, rule in enumerate(self.routing.rules)
            if rule.when.keywords
        }

    def features(self, request: ChatRequest, user_tier: str | None) -> Features:
        return extract_features(
            request,
            domain_patterns=self.domain_patterns,
            blacklist_patterns=self.blacklist_patterns,
            user_tier=user_tier,
        )

    def _matches(self, index: int, when: RuleCondition, f: Features, text: str) -> bool:
        checks = (
            when.task is None or f.task in when.task,
            when.domain is None or any(d in when.domain for d in f.domains),
            when.user_tier is None or f.user_tier in when.user_tier,
            when.tools is None or f.tools == when.tools,
            when.input_tokens_gt is None or f.input_tokens > when.input_tokens_gt,
            when.input_tokens_lt is None or f.input_tokens < when.input_tokens_lt,
            when.output_tokens_gt is None or f.expected_output_tokens > when.output_tokens_gt,
            when.depth_gt is None or f.depth > when.depth_gt,
        )
        if not all(checks):
            return False
        pattern = self._rule_keywords.get(index)
        return pattern is None or bool(pattern.search(text))

    def _apply(self, rule: Rule, tier: str) -> str:
        if rule.tier is None and rule.min_tier is None and rule.max_tier is None:
            return tier  # a rule that only names the class
        if rule.tier is not None:
            return rule.tier
        if rule.min_tier is not None and self._rank[rule.min_tier] > self._rank[tier]:
            return rule.min_tier
        if rule.max_tier is not None and self._rank[rule.max_tier] < self._rank[tier]:
            return rule.max_tier
        return tier

    def classify(self, request: ChatRequest, f: Features, start: tuple[str, str] | None = None) -> TierChoice:
        """The tier for ``request``. ``start`` (tier, reason) replaces the task type's tier as the starting
        point, as a learned classifier's choice does; the rules that follow apply all the same."""
        routing = self.routing
        if start is not None:
            tier, reason = start
        else:
            tier = routing.task_tiers.get(f.task, routing.default_tier)  # type: ignore[call-overload]
            reason = f"task={f.task}"
        for domain in f.domains:
            floor = routing.domains[domain].min_tier
            if self._rank[floor] > self._rank[tier]:
                tier, reason = floor, f"rule:domain={domain}"
        request_class = f.task
        if routing.rules:
            text = request.all_text()
            for i, rule in enumerate(routing.rules):
                if self._matches(i, rule.when, f, text):
                    if rule.request_class is not None:
                        request_class = rule.request_class
                    new = self._apply(rule, tier)
                    if new != tier:
                        tier, reason = new, f"rule:{rule.name}"
        cap = routing.user_tier_caps.get(f.user_tier or "")
        if cap is not None and self._rank[tier] > self._rank[cap]:
            tier, reason = cap, f"rule:user_tier={f.user_tier}"
        if f.blacklist_hits:
            return TierChoice(
                self.tiers[-1], request_class, f"rule:keyword={f.blacklist_hits[0]}", forced=True
            )
        return TierChoice(tier, request_class, reason)
