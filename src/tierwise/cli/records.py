"""``tierwise report``, ``tierwise learn`` and ``tierwise label``: commands over the records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tierwise.cli import ConfigOption, DbOption, _fail, _load, _open_records, app, err, out
from tierwise.config import write_config_text
from tierwise.errors import ConfigError


@app.command()
def report(
    since: Annotated[str, typer.Option(help="How far back: 7d, 24h, 30m...")] = "7d",
    config: ConfigOption = None,
    db: DbOption = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures as JSON.")] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write the table, warnings and plots as one HTML file.")
    ] = None,
    premium_tier: Annotated[
        str | None,
        typer.Option(help="The premium tier, for latency warnings (default: the config's last tier)."),
    ] = None,
) -> None:
    """Per-class cost against premium-only, escalation health, quality, shadow preference, errors and
    latency, from the records and their feedback."""
    import time

    import orjson
    from rich.table import Table

    from tierwise.report import build_stats, parse_since
    from tierwise.report_html import write_report_html

    now = time.time()
    try:
        start = parse_since(since, now=now)
    except ValueError as exc:
        _fail(str(exc))
    cfg = _load(config) if config is not None or db is None else None
    store, path = _open_records(cfg, db)
    records = store.query(since=start)
    if premium_tier is None and cfg is not None:
        premium_tier = cfg.tier_names[-1]
    if premium_tier is None:
        # --db alone: the tier whose answers cost most against their premium-only baseline (premium's own
        # answers cost about the baseline; cheaper tiers a fraction of it).
        ratios: dict[str, list[float]] = {}
        for r in records:
            if r.status == "ok" and r.tier and r.baseline_cost_usd:
                ratios.setdefault(r.tier, []).append(r.cost_usd / r.baseline_cost_usd)
        premium_tier = max(ratios, key=lambda t: sum(ratios[t]) / len(ratios[t])) if ratios else ""
    stats = build_stats(
        records,
        store.feedback(since=start - 86400),  # a score may come a while after its request
        store.comparisons(since=start),
        start=start,
        end=now,
        premium_tier=premium_tier,
    )
    summary = stats["classes"]
    table = Table(title=f"{path}: the last {since}")
    for column in ("class", "requests", "errors", "upstream fallbacks", "cost $", "premium-only $", "saving",
                   "escalated", "health", "quality", "shadow", "p50 ms", "p95 ms"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("class", "health", "shadow") else "right")

    def pct(value: float | None) -> str:
        return "" if value is None else f"{value:.1%}"

    def num(value: float | None, digits: int = 1) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    def shadow_cell(shadow: dict[str, Any]) -> str:
        """The router's preference against the baseline, its 95% interval, the pairs, and readiness."""
        if not shadow["judged"]:
            return ""
        low, high = shadow["preference_ci95"]
        ready = {True: " ready", False: " not ready", None: ""}[shadow["ready"]]
        return f"{shadow['preference']:.2f} [{low:.2f}-{high:.2f}] (n={shadow['judged']}){ready}"

    for name, row in summary.items():
        quality = row["quality"]
        table.add_row(
            name, str(row["requests"]), str(row["errors"]), str(row["upstream_fallbacks"]),
            f"{row['cost_usd']:.4f}",
            f"{row['baseline_cost_usd']:.4f}", pct(row["saving"]), pct(row["escalation_rate"]),
            row["health"].split(":")[0],
            f"{quality['mean']:.2f} (n={quality['n']})" if quality["n"] else "",
            shadow_cell(row["shadow"]),
            num(row["latency_ms"]["p50"]), num(row["latency_ms"]["p95"]),
        )  # fmt: skip
    # Piped or redirected, the table keeps its rows whole rather than wrapping to 80 columns.
    (out if out.is_terminal else Console(width=max(out.width, 160))).print(table)
    if stats["premium_p95_ms"] is not None:
        out.print(f"premium tier {premium_tier!r}: p95 {stats['premium_p95_ms']:.0f} ms", highlight=False)
    for line in stats["warnings"]:
        out.print(f"[yellow]warning[/yellow] {line}", highlight=False)
    if json_out:
        body = {
            "since": since,
            "classes": summary,
            "warnings": stats["warnings"],
            "premium_tier": premium_tier,
            "premium_p95_ms": stats["premium_p95_ms"],
            "series": stats["series"],
        }
        json_out.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    if html_out:
        out.print(f"report: {write_report_html(stats, html_out, title=f'tierwise report: the last {since}')}")


@app.command()
def learn(
    since: Annotated[str, typer.Option(help="How far back to read the records: 7d, 24h, 30m...")] = "7d",
    config: ConfigOption = None,
    db: DbOption = None,
    patch_out: Annotated[
        Path | None, typer.Option("--out", help="Write the change as a patch file (patch -p0 applies it).")
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Write the change into --config and hot-reload the proxy.")
    ] = False,
    min_requests: Annotated[
        int, typer.Option(min=1, help="Requests (or judged shadow pairs) a class needs before it is changed.")
    ] = 20,
    proxy_url: Annotated[
        str | None,
        typer.Option(help="The proxy to reload with --apply (default: the config's server host and port)."),
    ] = None,
    reload: Annotated[bool, typer.Option(help="With --apply: reload the running proxy.")] = True,
) -> None:
    """Propose config changes from the records: classes that keep escalating start a tier higher, classes
    that never escalate go direct, classes below the shadow baseline start higher (docs/learning.md)."""
    import time

    from tierwise import learn as rules
    from tierwise.report import parse_since
    from tierwise.store import PostgresStore, StoreError
    from tierwise.store.records import Change

    try:
        start = parse_since(since)
    except ValueError as exc:
        _fail(str(exc))
    if apply and config is None:
        _fail("--apply needs --config FILE: the embedded default config has no file to write the change to")
    cfg = _load(config)
    store, path = _open_records(cfg, db)
    records = store.query(since=start)
    if not records:
        _fail(f"no records in the last {since} in {path}: nothing to learn from")
    learned = rules.analyse(
        cfg,
        records,
        store.feedback(since=start - 86400),  # a score may come a while after its request
        store.comparisons(since=start),
        min_requests=min_requests,
    )
    out.print(f"{len(records)} records from the last {since} in {path}", highlight=False)
    for p in learned.proposals:
        out.print(f"[bold]{p.request_class}[/bold]: {', '.join(p.keys())}", highlight=False)
        out.print(f"  {p.reason}", highlight=False, markup=False)
    for note in learned.notes:
        out.print(f"unchanged: {note}", highlight=False, markup=False)
    if not learned.proposals:
        out.print("no change to propose")
        return
    if config is None:
        from importlib import resources

        text = resources.files("tierwise.data").joinpath("default.yaml").read_text("utf-8")
        name = "<embedded default config>"
    else:
        text = config.read_text("utf-8")
        name = rules.shown_path(config)
    try:
        new = rules.changed_text(text, learned.proposals, name)
    except ConfigError as exc:
        _fail(f"[red]error[/red] {exc}")
    diff = rules.unified_diff(text, new, name)
    typer.echo(diff, nl=False)
    if patch_out is not None:
        patch_out.write_text(rules.patch_text(learned, diff, since=since, db=path), "utf-8")
        out.print(f"wrote the patch to {patch_out}", highlight=False)
    if not apply or config is None:
        if not apply:
            out.print("nothing changed: review the diff, then run again with --apply", highlight=False)
        return
    try:
        write_config_text(config, new)
    except ConfigError as exc:
        _fail(f"[red]error[/red] {exc}")
    out.print(f"wrote {config}", highlight=False)
    shared = None
    if isinstance(store, PostgresStore):  # the replicas sharing the database follow it
        from tierwise.server.sync import publish_file

        try:
            shared, _ = publish_file(store, config, "learn")
            out.print(
                f"published as config version {shared}: every replica on {path} follows within its "
                "store.sync_interval_s",
                highlight=False,
            )
        except (ConfigError, StoreError) as exc:
            err.print(f"[red]error[/red] the change was not shared with the replicas: {exc}", highlight=False)
    problem = None
    status = "not reloaded (--no-reload)"
    if reload:
        admin = cfg.auth.admin_key
        target = proxy_url or rules.reload_url(cfg)
        if admin is None:
            problem = "the config has no auth.admin_key, so the proxy cannot be reloaded"
        else:
            try:
                status = rules.reload_proxy(target, admin.get_secret_value())
            except RuntimeError as exc:
                problem = str(exc)
        if problem is None:
            out.print(f"the proxy at {target} reloaded the config ({status})", highlight=False)
        elif shared is not None:
            out.print(f"the proxy at {target} was not reloaded ({problem}); it follows version {shared}")
            status, problem = f"published as config version {shared}", None
        else:
            status = f"reload failed: {problem}"
    change = Change(
        ts=time.time(),
        source="learn",
        summary=learned.summary,
        patch=diff,
        applied=True,
        config_path=str(config),
        detail={"since": since, "proposals": [p.to_dict() for p in learned.proposals], "reload": status},
    )
    change_id = store.add_change(change)
    out.print(f"recorded as change {change_id} in {path}", highlight=False)
    if problem is not None:
        err.print(
            f"[red]error[/red] {problem}. {config} is written; reload the proxy yourself "
            "(POST /v1/tierwise/admin/reload, SIGHUP, or a restart).",
            highlight=False,
        )
        raise typer.Exit(1)


@app.command()
def label(
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the routing eval set (JSONL).")],
    since: Annotated[str, typer.Option(help="How far back to read the records: 7d, 24h, 30m...")] = "7d",
    config: ConfigOption = None,
    db: DbOption = None,
    judge: Annotated[
        str | None,
        typer.Option(
            help="A configured model that judges each tier against premium (default: shadow.judge)."
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Label at most this many (the newest) conversations.")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Model calls running at once.")] = 8,
) -> None:
    """Turn logged conversations into a routing eval set: every tier answers each again, a judge scores each
    answer against premium's (docs/learning.md)."""
    import asyncio
    from collections import Counter

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tierwise import label as labelling
    from tierwise.report import parse_since

    try:
        start = parse_since(since)
    except ValueError as exc:
        _fail(str(exc))
    cfg = _load(config)
    judge_model = judge or cfg.shadow.judge.model
    if judge_model is not None and judge_model not in cfg.models:
        _fail(f"--judge: unknown model {judge_model!r} (configured: {', '.join(cfg.models)})")
    store, path = _open_records(cfg, db)
    records = store.query(since=start)
    prompts, skipped = labelling.prompts_from_records(records, limit)

    def said(counts: Any) -> str:
        return ", ".join(f"{n} {why}" for why, n in counts.most_common())

    if skipped:
        out.print(f"skipped {sum(skipped.values())} records: {said(skipped)}", highlight=False)
    if not prompts:
        _fail(
            f"no labelable records in the last {since} in {path} ({len(records)} records): label needs "
            "conversations kept in full (store.prompts: full)"
        )
    repeats = sum(p.seen for p in prompts)
    out.print(f"{len(prompts)} distinct conversations from {repeats} records to label", highlight=False)
    if judge_model is None:
        out.print(
            "no judge (--judge or shadow.judge.model): answers are compared programmatically, by the gates; "
            "that measures breakage, not finer quality",
            highlight=False,
        )
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=False,
    ) as bar:  # fmt: skip

        def progress(description: str, total: int) -> Any:
            task = bar.add_task(description, total=total)
            return lambda: bar.advance(task)

        try:
            result = asyncio.run(
                labelling.label(
                    cfg, prompts, judge_model=judge_model, concurrency=concurrency, progress=progress
                )
            )
        except ConfigError as exc:
            _fail(f"[red]config error[/red]\n{exc}")
    if result.skipped:
        out.print(
            f"left out {sum(result.skipped.values())} conversations: {said(result.skipped)}", highlight=False
        )
    if not result.rows:
        _fail(f"no conversation could be labelled ({len(prompts)} tried); nothing written to {out_file}")
    labelling.write_rows(result.rows, out_file)
    ideal = Counter(row["ideal_tier"] for row in result.rows)
    mix = ", ".join(f"{t} {ideal.get(t, 0)}" for t in cfg.tier_names)
    out.print(
        f"labelled {len(result.rows)} conversations into {out_file} (judge: {result.judge}); ideal tiers: "
        f"{mix}; cost: answers ${result.answer_cost_usd:.4f}, judging ${result.judge_cost_usd:.4f}",
        highlight=False,
    )
