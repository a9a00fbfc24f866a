"""`tierwise eval --report DIR`: a Markdown report with two figures, readable without tierwise installed.

The report holds the per-class table `tierwise eval` prints, the baselines every saving is measured against,
and two PNG figures: where the router lands among the single-tier, random-mix and oracle points on cost and
quality, and the tier mix of each class. matplotlib is imported only here, when a report is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tierwise.evals.metrics import Point, oracle, tier_only
from tierwise.evals.replay import Replayed

COST_QUALITY_PNG = "cost_quality.png"
TIER_MIX_PNG = "tier_mix.png"
# Costs spanning more than this factor are drawn on a log axis, or the cheap points would pile up at zero.
LOG_SPAN = 20.0


@dataclass(frozen=True)
class _Labelled:
    label: str
    point: Point
    kind: str  # "tier", "oracle" or "router": how it is drawn


def _points(result: Replayed) -> list[_Labelled]:
    """The single-tier points (cheapest first), the oracle, and the router as replayed."""
    table = result.table
    out = [
        _Labelled(f"{tier}-only ({model})", tier_only(table, j), "tier")
        for j, (tier, model) in enumerate(zip(table.tiers, table.models, strict=True))
    ]
    out.append(_Labelled("oracle", oracle(table), "oracle"))
    rows = np.arange(table.n)
    quality = float(table.scores[rows, result.final].mean()) if table.n else 0.0
    out.append(_Labelled("router", Point(float(result.cost.sum()), quality), "router"))
    return out


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _plot_cost_quality(points: Sequence[_Labelled], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.add_subplot()
    single = [p.point for p in points if p.kind == "tier"]
    cheap, premium = single[0], single[-1]
    costs = [p.point.cost_usd for p in points]
    low, high = min(costs), max(costs)
    log_x = low > 0 and high / low > LOG_SPAN
    # Random mixing is a straight line in linear cost; many samples keep it exact on a log axis too.
    share = np.linspace(0, 1, 200)
    ax.plot(
        cheap.cost_usd + share * (premium.cost_usd - cheap.cost_usd),
        cheap.quality + share * (premium.quality - cheap.quality),
        linestyle="--",
        color="grey",
        label="random mix of cheap and premium",
    )
    # marker, colour, size, legend entry, label offset: the router's label goes below the point so that it
    # stays readable when the router sits on the oracle.
    style = {
        "tier": ("o", "tab:blue", 60, "one tier for every prompt", (6, 6)),
        "oracle": ("*", "tab:green", 220, "oracle (every prompt at its ideal tier)", (6, 6)),
        "router": ("D", "tab:red", 50, "router (this replay)", (6, -14)),
    }
    for kind, (marker, color, size, legend, _) in style.items():
        ax.scatter(
            [p.point.cost_usd for p in points if p.kind == kind],
            [p.point.quality for p in points if p.kind == kind],
            marker=marker,
            color=color,
            s=size,
            zorder=3,
            label=legend,
        )
    for item in points:
        dx, dy = style[item.kind][4]
        # The costliest points label below-left, or the label runs off the figure (or onto the oracle's).
        right_edge = item.point.cost_usd >= high
        ax.annotate(
            item.label,
            (item.point.cost_usd, item.point.quality),
            textcoords="offset points",
            xytext=(-dx, -14) if right_edge else (dx, dy),
            ha="right" if right_edge else "left",
            fontsize=8,
        )
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("total cost, USD" + (" (log scale)" if log_x else ""))
    ax.set_ylabel("quality (mean score)")
    ax.set_title("Cost and quality")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, dpi=120)


def _plot_tier_mix(summary: dict[str, dict[str, Any]], tiers: Sequence[str], key: str, path: Path) -> None:
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    # Groups in the order given, overall last; drawn top to bottom.
    names = [n for n in summary if n != "overall"] + (["overall"] if "overall" in summary else [])
    fig = Figure(figsize=(7.5, 1.2 + 0.45 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(names))
    left = np.zeros(len(names))
    for tier in tiers:
        share = np.array([summary[n]["tier_mix"].get(tier, 0.0) for n in names])
        bars = ax.barh(y, share, left=left, label=tier)
        ax.bar_label(
            bars, labels=[_pct(s) if s >= 0.08 else "" for s in share], label_type="center", fontsize=8
        )
        left += share
    ax.set_yticks(y, labels=[f"{n} ({summary[n]['requests']})" for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("share of requests finally answered at each tier")
    ax.set_title(f"Tier mix per {key}")
    fig.legend(loc="outside lower center", ncols=len(tiers))
    fig.savefig(path, dpi=120)


def _class_rows(summary: dict[str, dict[str, Any]], tiers: Sequence[str], key: str) -> list[str]:
    lines = [
        f"| {key} | requests | tier mix | cost $ | saving | quality | vs premium | escalated "
        "| routing acc. |",
        "|---|--:|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, row in summary.items():
        mix = " ".join(f"{t}:{row['tier_mix'].get(t, 0) * 100:.0f}" for t in tiers)
        label = f"**{name}**" if name == "overall" else _cell(name)
        lines.append(
            f"| {label} | {row['requests']} | {mix} | {row['cost_usd']:.6f} | {_pct(row['saving'])} "
            f"| {row['quality']:.3f} | {_pct(row['quality_vs_premium'])} | {_pct(row['escalation_rate'])} "
            f"| {_pct(row['routing_accuracy'])} |"
        )
    return lines


def _baseline_rows(points: Sequence[_Labelled]) -> list[str]:
    premium = [p.point for p in points if p.kind == "tier"][-1]
    lines = ["| operating point | cost $ | quality | saving |", "|---|--:|--:|--:|"]
    for item in points:
        p = item.point
        saving = 1 - p.cost_usd / premium.cost_usd if premium.cost_usd > 0 else 0.0
        lines.append(f"| {_cell(item.label)} | {p.cost_usd:.6f} | {p.quality:.3f} | {_pct(saving)} |")
    return lines


def write_eval_report(result: Replayed, summary: dict[str, Any], directory: Path, *, title: str) -> Path:
    """Write ``report.md``, ``cost_quality.png`` and ``tier_mix.png`` into ``directory``; return report.md."""
    directory.mkdir(parents=True, exist_ok=True)
    table = result.table
    points = _points(result)
    _plot_cost_quality(points, directory / COST_QUALITY_PNG)
    # Rows grouped by request class unless they name dataset categories (`tierwise eval --by category`).
    key = "class" if set(summary) - {"overall"} <= set(result.classes) else "category"
    _plot_tier_mix(summary, table.tiers, key, directory / TIER_MIX_PNG)
    lines = [
        f"# {title}: routing evaluation",
        "",
        f"{table.n} prompts, replayed through the router. Tiers, cheapest first:",
        "",
        "| tier | model |",
        "|---|---|",
        *(f"| {tier} | {_cell(model)} |" for tier, model in zip(table.tiers, table.models, strict=True)),
        "",
        f"## Per {key}",
        "",
        *_class_rows(summary, table.tiers, key),
        "",
        "## Baselines",
        "",
        f"Every saving is against premium-only: {table.models[-1]} answering every prompt. The oracle "
        "sends each prompt to its ideal tier, the cheapest whose score is at least premium's.",
        "",
        *_baseline_rows(points),
        "",
        "## Figures",
        "",
        f"![Cost and quality: the router, each tier alone, random mixing, the oracle]({COST_QUALITY_PNG})",
        "",
        f"![Tier mix per {key}]({TIER_MIX_PNG})",
        "",
        "## Definitions",
        "",
        "Quality is the mean score of the final answers; cost sums every model call a prompt paid for; "
        "saving is 1 − cost / premium-only cost; routing accuracy is the share of prompts finally answered "
        "at their ideal tier (or at their hand-labelled `ideal_tier`); escalated is the share answered above "
        "the tier routing started at. The exact definitions, with worked examples, are in "
        "docs/evaluation.md of the tierwise repository.",
        "",
    ]
    path = directory / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
