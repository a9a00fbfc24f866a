"""``tierwise report --html OUT``: the per-class figures as one self-contained HTML file.

The input is what :func:`tierwise.report.build_stats` returns (the stats endpoint's body). The plots (cost
against premium-only over time, escalation rate by class, quality by class) are drawn with matplotlib's
``Figure`` (no pyplot, no GUI backend; imported only here, when a report is asked for) and embedded as base64
PNG, so the file opens anywhere without a network.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tierwise.report import GOOD, HIGH

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #1d2329;
       padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.meta { color: #5b6570; margin-top: 0; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: .3rem .5rem; border-bottom: 1px solid #dde2e6; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text { text-align: left; }
tr.overall td { font-weight: 600; border-top: 2px solid #9aa4ad; }
.good { color: #1b7f3b; } .normal { color: #9a6700; } .high { color: #c0392b; }
ul.warnings li { color: #9a3b00; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid #e4e8eb; }
figcaption { color: #5b6570; font-size: .9rem; }
"""


def pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def usd(value: float | None) -> str:
    if value is None:
        return ""
    return f"${value:.2f}" if abs(value) >= 1 else f"${value:.6f}"


def ms(value: float | None) -> str:
    return "" if value is None else f"{value:.0f} ms"


def quality_text(quality: dict[str, Any]) -> str:
    """``0.90 [0.70, 1.00] n=2``: the mean feedback score with its 95% interval."""
    if not quality.get("n"):
        return ""
    low, high = quality["ci95"]
    return f"{quality['mean']:.2f} [{low:.2f}, {high:.2f}] n={quality['n']}"


def shadow_text(shadow: dict[str, Any]) -> str:
    """``0.62 [0.51, 0.73] n=40 ready``: the router's preference score against the baseline model."""
    if shadow.get("preference") is None:
        return ""
    low, high = shadow["preference_ci95"]
    ready = {True: " ready", False: " not ready", None: ""}[shadow.get("ready")]
    return f"{shadow['preference']:.2f} [{low:.2f}, {high:.2f}] n={shadow['judged']}{ready}"


def _band(health: str) -> str:
    return health.split(":")[0] if health else ""


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _time(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def plot_cost(series: Sequence[dict[str, Any]], until: float) -> str:
    """Cumulative cost against cumulative premium-only cost over the window."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), layout="constrained")
    ax = fig.add_subplot()
    span = until - series[0]["start"] if series else 3600.0
    unit, seconds = (
        ("minutes", 60) if span <= 7200 else ("hours", 3600) if span <= 3 * 86400 else ("days", 86400)
    )
    # Each bucket's running total, drawn at the bucket's end; the window's start is 0.
    times = [-span / seconds] + [(b["start"] - until) / seconds for b in series[1:]] + [0.0]
    cost = baseline = 0.0
    costs, baselines = [0.0], [0.0]
    for bucket in series:
        cost += bucket["cost_usd"]
        baseline += bucket["baseline_cost_usd"]
        costs.append(cost)
        baselines.append(baseline)
    times = times[: len(costs)]
    ax.plot(times, baselines, color="#8a94a0", linestyle="--", marker=".", label="premium-only")
    ax.plot(times, costs, color="#1565c0", marker=".", label="routed")
    ax.set_xlabel(f"{unit} before {_time(until)}")
    ax.set_ylabel("cumulative cost, USD")
    ax.set_title("Cost against premium-only over time")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def plot_escalation(classes: dict[str, dict[str, Any]]) -> str | None:
    """Each cascaded class's escalation rate, coloured by health band, with the band edges drawn."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    names = [n for n, row in classes.items() if n != "overall" and row["escalation_rate"] is not None]
    if not names:
        return None
    rates = [classes[n]["escalation_rate"] for n in names]
    colors = ["#1b7f3b" if r < GOOD else "#d4a017" if r <= HIGH else "#c0392b" for r in rates]
    fig = Figure(figsize=(8, 1.2 + 0.4 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.barh(names, rates, color=colors)
    ax.bar_label(bars, labels=[pct(r) for r in rates], padding=3, fontsize=8)
    for edge in (GOOD, HIGH):
        ax.axvline(edge, color="#5b6570", linestyle=":", linewidth=1)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel(f"escalation rate (good < {GOOD:.0%}, normal to {HIGH:.0%}, above: start a tier higher)")
    ax.set_title("Escalation rate by class")
    return _png(fig)


def plot_quality(classes: dict[str, dict[str, Any]]) -> str | None:
    """Feedback quality and the shadow preference score by class, with their 95% intervals."""
    from matplotlib.figure import Figure

    names = [
        n
        for n, row in classes.items()
        if n != "overall" and (row["quality"]["n"] or row["shadow"]["preference"] is not None)
    ]
    if not names:
        return None
    fig = Figure(figsize=(8, 1.3 + 0.5 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    for offset, key, label, color in (
        (-0.15, "quality", "feedback quality", "#1565c0"),
        (0.15, "shadow", "shadow preference (0.5 = as good as the baseline)", "#8e44ad"),
    ):
        ys, xs, lows, highs = [], [], [], []
        for i, name in enumerate(names):
            block = classes[name][key]
            mean = block["mean"] if key == "quality" else block["preference"]
            ci = block["ci95"] if key == "quality" else block["preference_ci95"]
            if mean is None:
                continue
            ys.append(i + offset)
            xs.append(mean)
            lows.append(mean - ci[0])
            highs.append(ci[1] - mean)
        if xs:
            ax.errorbar(xs, ys, xerr=[lows, highs], fmt="o", color=color, capsize=3, label=label)
    ax.axvline(0.5, color="#5b6570", linestyle=":", linewidth=1)
    ax.set_yticks(range(len(names)), labels=names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (mean, with its 95% interval)")
    ax.set_title("Quality by class")
    ax.legend(loc="lower left", fontsize=8)
    return _png(fig)


COLUMNS = (
    "class", "requests", "errors", "upstream fallbacks", "cost", "premium-only", "saving", "escalation",
    "health", "quality (feedback)", "shadow preference", "p50", "p95",
)  # fmt: skip


def table_row(name: str, row: dict[str, Any]) -> list[str]:
    """One class's cells, in COLUMNS order (the terminal report and the HTML file show the same)."""
    return [
        name,
        str(row["requests"]),
        str(row["errors"]),
        str(row["upstream_fallbacks"]),
        usd(row["cost_usd"]),
        usd(row["baseline_cost_usd"]),
        pct(row["saving"]),
        pct(row["escalation_rate"]),
        row["health"],
        quality_text(row["quality"]),
        shadow_text(row["shadow"]),
        ms(row["latency_ms"]["p50"]),
        ms(row["latency_ms"]["p95"]),
    ]


def render(stats: dict[str, Any], *, title: str) -> str:
    """The report as one HTML document."""
    e = html.escape
    classes: dict[str, dict[str, Any]] = stats["classes"]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{e(_time(stats["since"]))} to {e(_time(stats["until"]))}. Savings are against '
        f"premium-only (every request answered by the <b>{e(stats['premium_tier'])}</b> tier); "
        f"premium's own p95 latency: {e(ms(stats['premium_p95_ms']) or 'no requests')}.</p>",
        "<h2>Warnings</h2>",
    ]
    if stats["warnings"]:
        parts.append('<ul class="warnings">')
        parts += [f"<li>{e(line)}</li>" for line in stats["warnings"]]
        parts.append("</ul>")
    else:
        parts.append("<p>None.</p>")
    parts.append("<h2>By class</h2><table><thead><tr>")
    parts += [f"<th>{e(c)}</th>" for c in COLUMNS]
    parts.append("</tr></thead><tbody>")
    for name, row in classes.items():
        cells = table_row(name, row)
        css = "overall" if name == "overall" else ""
        parts.append(f'<tr class="{css}" data-class="{e(name)}">')
        for column, cell in zip(COLUMNS, cells, strict=True):
            kind = "text" if column in ("class", "quality (feedback)", "shadow preference") else ""
            if column == "health":
                kind = f"text {_band(cell)}"
            parts.append(f'<td class="{kind}">{e(cell)}</td>')
        parts.append("</tr>")
    parts.append("</tbody></table>")
    hinted = {n: row["hints"] for n, row in classes.items() if n != "overall" and row.get("hints")}
    if hinted:
        parts.append(
            "<h2>Hints</h2><p>Escalated answers whose senior saw the junior's draft (hinted) against those "
            "held out without it (unhinted).</p><table><thead><tr><th>class</th><th>group</th>"
            "<th>escalated</th><th>quality (feedback)</th><th>final gate score</th></tr></thead><tbody>"
        )
        for name, groups in hinted.items():
            for group, figures in groups.items():
                parts.append(
                    f"<tr><td>{e(name)}</td><td class='text'>{e(group)}</td><td>{figures['escalated']}</td>"
                    f"<td class='text'>{e(quality_text(figures['feedback']))}</td>"
                    f"<td class='text'>{e(quality_text(figures['final_gate_score']))}</td></tr>"
                )
        parts.append("</tbody></table>")
    parts.append("<h2>Plots</h2>")
    plots = [
        (
            "cost",
            plot_cost(stats["series"], stats["until"]),
            "Cumulative cost of the routed requests against premium-only.",
        ),
        ("escalation", plot_escalation(classes), "Share of cascaded requests past their start tier."),
        ("quality", plot_quality(classes), "Mean feedback score and shadow preference, with 95% intervals."),
    ]
    for name, png, caption in plots:
        if png is None:
            parts.append(f"<p>No {name} figures in this window.</p>")
            continue
        parts.append(
            f'<figure><img alt="{e(caption)}" data-plot="{name}" src="data:image/png;base64,{png}">'
            f"<figcaption>{e(caption)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report_html(stats: dict[str, Any], path: Path, *, title: str = "tierwise report") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(stats, title=title), encoding="utf-8")
    return path
