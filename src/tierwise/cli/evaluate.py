"""``tierwise eval`` and ``tierwise bench``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tierwise.cli import ConfigOption, _fail, _load, _load_data, _tier_list, app, err, out
from tierwise.config import RouterConfig
from tierwise.errors import ConfigError


@app.command("eval")
def eval_command(
    data: Annotated[Path, typer.Option("--data", help="Routing eval set (JSONL).")],
    config: ConfigOption = None,
    tiers: Annotated[
        str | None,
        typer.Option("--tiers", help="CHEAP,[MID,]PREMIUM models of the data, instead of --config."),
    ] = None,
    by: Annotated[str, typer.Option(help="Group rows by request 'class' or dataset 'category'.")] = "class",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON.")] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a Markdown report with figures.")
    ] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Report and skip malformed lines.")] = False,
) -> None:
    """Replay a routing eval set through the router and report cost and quality per class."""
    import orjson
    from rich.progress import Progress

    from tierwise.evals.metrics import OutcomeError
    from tierwise.evals.replay import config_for_tiers, replay, summarize
    from tierwise.evals.tables import class_table

    if by not in ("class", "category"):
        _fail("--by: use 'class' or 'category'")
    records = _load_data(data, skip_invalid)
    try:
        cfg = config_for_tiers(_tier_list(tiers)) if tiers else _load(config)
    except ConfigError as exc:
        _fail(f"[red]error[/red] {exc}")
    if records and not any(r.outcomes for r in records):
        _eval_labels(cfg, records, by, json_out, data)
        return
    try:
        with Progress(console=err, transient=True, disable=len(records) < 2000) as progress:
            task = progress.add_task("replaying", total=len(records))
            result = replay(cfg, records, on_step=lambda: progress.advance(task))
    except (ConfigError, OutcomeError) as exc:
        _fail(f"[red]error[/red] {exc}")
    summary = summarize(result, by=by)
    out.print(class_table(summary, cfg.tier_names, f"{data.name}: {len(records)} prompts"))
    if json_out:
        payload = {"data": str(data), "tiers": cfg.tier_names, "by": by, "classes": summary}
        json_out.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    if report:
        from tierwise.evals.report import write_eval_report

        path = write_eval_report(result, summary, report, title=data.name)
        out.print(f"report: {path}")


def _eval_labels(cfg: RouterConfig, records: list[Any], by: str, json_out: Path | None, data: Path) -> None:
    """A hand-labelled set (ideal_tier, no outcomes): routing accuracy of the router's decisions."""
    import orjson

    from tierwise.evals.replay import label_summary
    from tierwise.evals.tables import label_table

    if any(r.ideal_tier is None for r in records):
        _fail("the data mixes records without outcomes and without ideal_tier; label or split it")
    try:
        summary = label_summary(cfg, records, by=by)
    except ConfigError as exc:
        _fail(f"[red]error[/red] {exc}")
    out.print(label_table(summary, cfg.tier_names, f"{data.name}: {len(records)} labelled prompts"))
    if json_out:
        payload = {"data": str(data), "tiers": cfg.tier_names, "by": by, "labels": True, "classes": summary}
        json_out.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))


@app.command()
def bench(
    train: Annotated[Path, typer.Option("--train", help="Training set (JSONL).")],
    test: Annotated[Path, typer.Option("--test", help="Test set (JSONL).")],
    tiers: Annotated[str, typer.Option("--tiers", help="CHEAP,[MID,]PREMIUM models of the data.")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON.")] = None,
    decisions: Annotated[
        Path | None, typer.Option("--decisions", help="Write the calibrated point's per-prompt decisions.")
    ] = None,
    router: Annotated[str, typer.Option(help="The router to train: 'learned' or 'rules'.")] = "learned",
    skip_invalid: Annotated[bool, typer.Option(help="Report and skip malformed lines.")] = False,
) -> None:
    """Train a router, sweep its operating points on a test set, and compare with the baselines."""
    import orjson

    from tierwise.evals.bench import ROUTERS, run_bench, write_jsonl
    from tierwise.evals.metrics import OutcomeError
    from tierwise.evals.tables import bench_table

    if router not in ROUTERS:
        _fail(f"--router: use one of {', '.join(ROUTERS)}")
    models = _tier_list(tiers)
    train_records = _load_data(train, skip_invalid)
    test_records = _load_data(test, skip_invalid)
    try:
        result, rows = run_bench(train_records, test_records, models, make_scorer=ROUTERS[router])
    except (ConfigError, OutcomeError) as exc:
        _fail(f"[red]error[/red] {exc}")
    out.print(bench_table(result))
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if decisions:
        write_jsonl(decisions, rows)
