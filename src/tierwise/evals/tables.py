"""Terminal tables for evaluation results (rich)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def class_table(summary: dict[str, dict[str, Any]], tiers: list[str], title: str) -> Table:
    table = Table(title=title)
    for column in ("class", "requests", "tier mix", "cost $", "saving", "quality", "vs premium", "escalated",
                   "routing acc."):  # fmt: skip
        table.add_column(column, justify="left" if column in ("class", "tier mix") else "right")
    for name, row in summary.items():
        mix = " ".join(f"{t}:{row['tier_mix'].get(t, 0) * 100:.0f}" for t in tiers)
        table.add_row(
            f"[bold]{name}[/bold]" if name == "overall" else name,
            str(row["requests"]),
            mix,
            f"{row['cost_usd']:.4f}",
            _pct(row["saving"]),
            f"{row['quality']:.3f}",
            _pct(row["quality_vs_premium"]),
            _pct(row["escalation_rate"]),
            _pct(row["routing_accuracy"]),
        )
    return table


def label_table(summary: dict[str, dict[str, Any]], tiers: list[str], title: str) -> Table:
    table = Table(title=title)
    for column in ("class", "requests", "tier mix", "routing acc.", "below ideal"):
        table.add_column(column, justify="left" if column in ("class", "tier mix") else "right")
    for name, row in summary.items():
        mix = " ".join(f"{t}:{row['tier_mix'].get(t, 0) * 100:.0f}" for t in tiers)
        table.add_row(
            name, str(row["requests"]), mix, _pct(row["routing_accuracy"]), _pct(row["routed_below_ideal"])
        )
    return table


def bench_table(result: dict[str, Any]) -> Table:
    base = result["baselines"]
    table = Table(
        title=f"bench: {' < '.join(result['tiers'])}  (train {result['n_train']}, test {result['n_test']})"
    )
    for column in ("policy", "APGR", "CPT50", "CPT80", "saving@Q95", "saving@Q100", "calibrated Q95: saving",
                   "quality vs premium"):  # fmt: skip
        table.add_column(column, justify="right")
    for name, p in result["policies"].items():
        cal = p["calibrated_q95"]
        table.add_row(
            name, f"{p['apgr']:.3f}", _pct(p["cpt50"]), _pct(p["cpt80"]), _pct(p["saving_at_q95"]),
            _pct(p["saving_at_q100"]), _pct(cal["saving"]), _pct(cal["quality_vs_premium"]),
        )  # fmt: skip
    table.add_row(
        "oracle", "", "", "", "", "", _pct(base["oracle"]["saving"]),
        _pct(base["oracle"]["quality"] / base["premium"]["quality"] if base["premium"]["quality"] else 1),
    )  # fmt: skip
    return table
