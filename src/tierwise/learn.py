"""`tierwise learn`: turn what the records say about each request class into a reviewed config change.

Three rules, per request class, over the records of a window (and their feedback and shadow comparisons):

- **Escalates too often.** At least ``min_requests`` cascaded requests and more than ``ESCALATE_ABOVE`` (the
  brief's 60% band, as `tierwise report` warns) of them went past their start tier: the class starts one tier
  above the tier it usually started at (``routing.cascade.classes.<class>.start``). The junior's call was
  mostly wasted.
- **Below baseline.** At least ``min_requests`` judged shadow comparisons whose preference interval lies
  wholly below 0.5 (the router's answers lose to the baseline model's): the class starts one tier higher
  too.
- **Never escalates.** At least ``min_requests`` cascaded requests and at most ``DIRECT_MAX_RATE`` of them
  escalated: the class goes direct to the tier that kept passing (``policy: direct`` with ``tier:``), skipping
  the gates' wait and any critique calls. Not when that tier is the premium tier (nothing to skip), when its
  shadow comparisons are below baseline, or when its feedback interval lies wholly below 0.5.

A class with fewer requests than that is left as it is, and said so. The change is a unified diff of the
config file (ruamel round trip: comments and layout kept, each changed key carrying its reason as a comment);
``apply`` writes it.
"""

from __future__ import annotations

import datetime
import difflib
import io
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml as pyyaml

from tierwise.config import TASK_TYPES, RouterConfig, parse_config
from tierwise.errors import ConfigError
from tierwise.report import HIGH, escalated, summarize
from tierwise.store.records import Comparison, Feedback, RoutingRecord

ESCALATE_ABOVE = HIGH  # 0.60
DIRECT_MAX_RATE = 0.02
MIN_REQUESTS = 20


@dataclass(slots=True)
class Proposal:
    """One class's change: the config keys to set, and why."""

    request_class: str
    rule: str  # "escalates" | "below_baseline" | "never_escalates"
    sets: list[tuple[tuple[str, ...], Any]]
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def keys(self) -> list[str]:
        return [f"{'.'.join(path)}: {value}" for path, value in self.sets]

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.request_class,
            "rule": self.rule,
            "set": {".".join(path): value for path, value in self.sets},
            "reason": self.reason,
            "numbers": self.numbers,
        }


@dataclass(slots=True)
class Learned:
    proposals: list[Proposal]
    notes: list[str]  # classes left as they are, and why
    requests: int

    @property
    def summary(self) -> str:
        if not self.proposals:
            return "no change"
        return "; ".join(f"{p.request_class}: {', '.join(p.keys())}" for p in self.proposals)


def _tier_of(step: str) -> str:
    """``cheap(fail:json)`` -> ``cheap``."""
    return step.split("(", 1)[0]


def _most(counter: Counter[str], tiers: list[str]) -> str | None:
    """The most common tier; on a tie, the lowest."""
    if not counter:
        return None
    top = max(counter.values())
    return min(
        (t for t, n in counter.items() if n == top), key=lambda t: tiers.index(t) if t in tiers else 99
    )


def _above(tier: str | None, tiers: list[str]) -> str | None:
    if tier is None or tier not in tiers or tier == tiers[-1]:
        return None
    return tiers[tiers.index(tier) + 1]


def _configured(config: RouterConfig, name: str) -> str | None:
    """The tier the config now sends (or starts) class ``name`` at, where it names one: a direct class's
    ``tier:`` (else its task type's tier), a cascaded class's ``start:`` (its task type's tier with
    ``classifier``), ``routing.task_tiers`` under ``routing.policy: direct``. None where it depends on the
    request (``cheapest`` names no tier above the first; ``auto`` learns it)."""
    routing = config.routing
    task_tier = {str(task): tier for task, tier in routing.task_tiers.items()}.get(name)
    if routing.policy == "direct":
        return task_tier
    if routing.policy == "auto":
        return None
    override = routing.cascade.classes.get(name)
    if override is not None and override.policy == "direct":
        return override.tier or task_tier
    start = override.start if override is not None and override.start else routing.cascade.start
    if start == "classifier":
        return task_tier
    return None if start == "cheapest" else start


def _ci(interval: list[float] | None) -> str:
    return "" if not interval else f" (95% CI {interval[0]:.2f}-{interval[1]:.2f})"


def analyse(
    config: RouterConfig,
    records: Sequence[RoutingRecord],
    feedback: Iterable[Feedback] = (),
    comparisons: Iterable[Comparison] = (),
    *,
    min_requests: int = MIN_REQUESTS,
) -> Learned:
    """The proposals the rules make for ``config`` from the records of a window."""
    tiers = config.tier_names
    routing = config.routing
    pairs = list(comparisons)
    figures = summarize(records, feedback, pairs)
    starts: dict[str, Counter[str]] = {}
    passed: dict[str, Counter[str]] = {}
    ups: Counter[str] = Counter()
    for r in records:
        went_up = escalated(r)
        if r.request_class is None or went_up is None:
            continue
        ups[r.request_class] += went_up
        path = (r.decision or {}).get("path") or []
        start = _tier_of(path[0]) if path else r.tier
        if start:
            starts.setdefault(r.request_class, Counter())[start] += 1
        if not went_up and r.status == "ok" and r.tier:
            passed.setdefault(r.request_class, Counter())[r.tier] += 1
    router_tiers: dict[str, Counter[str]] = {}
    for c in pairs:
        if c.request_class and c.router_tier and c.score is not None:
            router_tiers.setdefault(c.request_class, Counter())[c.router_tier] += 1

    proposals: list[Proposal] = []
    notes: list[str] = []
    for name, row in figures.items():
        if name == "overall":
            continue
        override = routing.cascade.classes.get(name)
        is_direct = routing.policy == "direct" or (override is not None and override.policy == "direct")
        cascaded, rate = row["cascaded"], row["escalation_rate"]
        shadow, quality = row["shadow"], row["quality"]
        below = (
            shadow["judged"] >= min_requests
            and shadow["preference_ci95"] is not None
            and shadow["preference_ci95"][1] < 0.5
        )
        numbers: dict[str, Any] = {
            "requests": row["requests"],
            "cascaded": cascaded,
            "escalated": ups[name],
            "escalation_rate": rate,
            "start_tiers": dict(starts.get(name, Counter())),
        }
        if shadow["judged"]:
            numbers["shadow"] = {"judged": shadow["judged"], "preference": shadow["preference"],
                                 "preference_ci95": shadow["preference_ci95"]}  # fmt: skip
        if quality["n"]:
            numbers["feedback"] = {"n": quality["n"], "mean": quality["mean"], "ci95": quality["ci95"]}
        escalates = cascaded >= min_requests and rate is not None and rate > ESCALATE_ABOVE
        reasons: list[str] = []
        if escalates:
            reasons.append(
                f"{numbers['escalated']} of {cascaded} cascaded requests ({rate:.0%}) escalated past their "
                f"start tier, over the {ESCALATE_ABOVE:.0%} band"
            )
        if below:
            reasons.append(
                f"shadow comparisons put it below the baseline: preference {shadow['preference']:.2f}"
                f"{_ci(shadow['preference_ci95'])} over {shadow['judged']} judged pairs"
            )
        if reasons:
            current = _most(starts.get(name, Counter()), tiers) or _most(
                router_tiers.get(name, Counter()), tiers
            )
            higher = _above(current, tiers)
            if higher is None:
                notes.append(
                    f"{name}: {'; '.join(reasons)}, but it already starts at the top tier: no change"
                )
                continue
            # Never a move down: the config may already send it higher than these records show.
            configured = _configured(config, name)
            if configured in tiers and tiers.index(str(configured)) >= tiers.index(higher):
                notes.append(
                    f"{name}: {'; '.join(reasons)}, but the config already "
                    f"{'sends' if is_direct else 'starts'} it at {configured} (these records predate that): "
                    "no change"
                )
                continue
            base = ("routing", "cascade", "classes", name)
            if routing.policy == "auto":
                notes.append(
                    f"{name}: {'; '.join(reasons)}, but under routing.policy auto a class's start does not "
                    "apply: no change (raise it in routing.task_tiers or retrain the router)"
                )
                continue
            if routing.policy == "direct":
                if name not in TASK_TYPES:
                    notes.append(
                        f"{name}: {'; '.join(reasons)}, but under routing.policy direct only a task type has "
                        "a tier of its own (routing.task_tiers): no change"
                    )
                    continue
                sets: list[tuple[tuple[str, ...], Any]] = [(("routing", "task_tiers", name), higher)]
            elif is_direct:
                sets = [((*base, "tier"), higher)]
            else:
                sets = [((*base, "start"), higher)]
            numbers["from_tier"], numbers["to_tier"] = current, higher
            proposals.append(
                Proposal(
                    name,
                    "escalates" if escalates else "below_baseline",
                    sets,
                    f"start at {higher} instead of {current}: {'; '.join(reasons)}",
                    numbers,
                )
            )
            continue
        if is_direct or cascaded == 0:
            continue
        if cascaded < min_requests:
            notes.append(f"{name}: {cascaded} cascaded requests, fewer than {min_requests}: no change")
            continue
        if rate is None or rate > DIRECT_MAX_RATE:
            continue
        tier = _most(passed.get(name, Counter()), tiers)
        if tier is None or tier == tiers[-1]:
            notes.append(f"{name}: never escalates, but it is answered at the top tier already: no change")
            continue
        configured = _configured(config, name)
        if configured in tiers and tiers.index(str(configured)) > tiers.index(tier):
            notes.append(
                f"{name}: never escalates, but the config already starts it at {configured}, above {tier} "
                "(these records predate that): no change"
            )
            continue
        if quality["ci95"] is not None and quality["ci95"][1] < 0.5:
            notes.append(
                f"{name}: never escalates, but its feedback is poor (mean {quality['mean']:.2f}"
                f"{_ci(quality['ci95'])} over {quality['n']} scores): no change"
            )
            continue
        if shadow["preference_ci95"] is not None and shadow["preference_ci95"][1] < 0.5:
            notes.append(
                f"{name}: never escalates, but its shadow comparisons lose to the baseline: no change"
            )
            continue
        numbers["to_tier"] = tier
        proposals.append(
            Proposal(
                name,
                "never_escalates",
                [
                    (("routing", "cascade", "classes", name, "policy"), "direct"),
                    (("routing", "cascade", "classes", name, "tier"), tier),
                ],
                f"go direct to {tier}: {numbers['escalated']} of {cascaded} cascaded requests ({rate:.0%}) "
                f"escalated (at most {DIRECT_MAX_RATE:.0%}); {tier} passed the gates "
                f"{passed[name][tier]} times",
                numbers,
            )
        )
    return Learned(proposals, notes, len(records))


# ---- the config file ----


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML()
    y.indent(mapping=2, sequence=4, offset=2)
    y.preserve_quotes = True
    y.width = 4096
    return y


def _child(node: Any, key: str) -> Any:
    from ruamel.yaml.comments import CommentedMap

    value = node.get(key)
    if not isinstance(value, dict):
        value = CommentedMap()
        node[key] = value
    return value


def _flow(node: Any) -> bool:
    fa = getattr(node, "fa", None)
    return bool(fa is not None and fa.flow_style())


def _short(proposal: Proposal) -> str:
    n = proposal.numbers
    if proposal.rule == "escalates":
        return f"{n['escalated']}/{n['cascaded']} cascaded requests escalated"
    if proposal.rule == "below_baseline":
        return f"shadow preference {n['shadow']['preference']:.2f} over {n['shadow']['judged']} pairs"
    return f"{n['escalated']}/{n['cascaded']} cascaded requests escalated"


def changed_text(text: str, proposals: Sequence[Proposal], source: str, *, today: str | None = None) -> str:
    """The config file's text with the proposals' keys set, comments and layout kept; each set key carries
    ``# tierwise learn DATE: why``. Raises ConfigError when the file cannot be read as YAML or the result
    would not validate."""
    from ruamel.yaml.error import YAMLError

    y = _yaml()
    try:
        data = y.load(text)
    except YAMLError as exc:
        raise ConfigError(f"{source}: cannot update it ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    day = today or datetime.date.today().isoformat()
    for proposal in proposals:
        for i, (path, value) in enumerate(proposal.sets):
            node, flow = data, False
            for key in path[:-1]:
                # A map inside a flow-style map is written in flow style too, where a comment cannot go.
                flow = flow or _flow(node)
                node = _child(node, key)
            node[path[-1]] = value
            if i == 0 and hasattr(node, "yaml_add_eol_comment") and not (flow or _flow(node)):
                node.yaml_add_eol_comment(f"tierwise learn {day}: {_short(proposal)}", path[-1])
    buffer = io.StringIO()
    y.dump(data, buffer)
    new = buffer.getvalue()
    try:
        parse_config(pyyaml.safe_load(new), source)
    except ConfigError as exc:
        raise ConfigError(f"the changed config would not validate:\n{exc}") from None
    return new


def shown_path(path: Path) -> str:
    """The path as the patch names it: relative to the working directory when it is under it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def unified_diff(old: str, new: str, name: str) -> str:
    """A unified diff of one file that ``patch -p0`` and ``git apply -p0`` apply."""
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), name, name)
    out = []
    for line in lines:
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def patch_text(learned: Learned, diff: str, *, since: str, db: str | Path) -> str:
    """The patch file: each change's reason as a leading ``#`` comment (patch and git apply skip text before
    the diff), then the diff."""
    head = [f"# tierwise learn --since {since}: {learned.requests} records from {db}"]
    for p in learned.proposals:
        head.append(f"# {p.request_class}: {', '.join(p.keys())}")
        head.append(f"#   {p.reason}")
    for note in learned.notes:
        head.append(f"# unchanged: {note}")
    return "\n".join(head) + "\n\n" + diff


def reload_url(config: RouterConfig) -> str:
    host = config.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


def reload_proxy(base_url: str, admin_key: str, *, timeout: float = 10.0) -> str:
    """POST the admin reload; returns the proxy's status, raises RuntimeError saying what went wrong."""
    import httpx

    url = base_url.rstrip("/") + "/v1/tierwise/admin/reload"
    try:
        response = httpx.post(url, headers={"authorization": f"Bearer {admin_key}"}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise RuntimeError(f"cannot reach the proxy at {url} ({exc.__class__.__name__}: {exc})") from None
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise RuntimeError(f"the proxy at {url} refused the reload (HTTP {response.status_code}: {message})")
    return str(response.json().get("status", "reloaded"))
