"""The ``tierwise`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from tierwise._version import __version__
from tierwise.config import RouterConfig, load_config
from tierwise.errors import ConfigError

app = typer.Typer(
    name="tierwise",
    help="An LLM router: send each request to the cheapest model tier that answers it well.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Router config (YAML). Default: the embedded demo config."),
]


def _fail(message: object) -> NoReturn:
    """Say what is wrong on stderr and exit with status 2 (bad input, as every command does)."""
    err.print(message, highlight=False)
    raise typer.Exit(2)


def _load(path: Path | None) -> RouterConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(f"[red]config error[/red]\n{exc}")


def _version(value: bool) -> None:
    if value:
        out.print(f"tierwise {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """tierwise routes chat requests across cheap, mid and premium model tiers."""


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: server.host, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: server.port, 8080).")] = None,
) -> None:
    """Start the proxy (OpenAI-compatible API on /v1)."""
    import uvicorn

    from tierwise.server.app import create_app

    cfg = _load(config)
    bind_host = host or cfg.server.host
    bind_port = port if port is not None else cfg.server.port
    try:
        application = create_app(cfg, config_path=config)
    except ConfigError as exc:
        _fail(f"[red]config error[/red]\n{exc}")
    source = str(config) if config else "embedded demo config"
    err.print(
        f"tierwise {__version__} on http://{bind_host}:{bind_port}/v1  ({source}; "
        f"records: {cfg.store.resolved_path()})",
        highlight=False,
    )
    uvicorn.run(
        application,
        host=bind_host,
        port=bind_port,
        loop="auto",
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )


@app.command("check-config")
def check_config(path: Annotated[Path, typer.Argument(help="The config file to check.")]) -> None:
    """Validate a config file and print the tiers it resolves to."""
    from tierwise.pricing import Pricing

    cfg = _load(path)
    pricing = Pricing(cfg)
    table = Table(title=f"{path}: tiers, cheapest first")
    for column in (
        "tier",
        "model",
        "provider",
        "upstream name",
        "context",
        "tools",
        "$/Mtok in",
        "$/Mtok out",
    ):
        table.add_column(column)
    for tier, models in cfg.tiers.items():
        for name in models:
            spec = cfg.models[name]
            rates = pricing.rates(name)
            table.add_row(
                tier,
                name,
                spec.provider,
                spec.name or name,
                f"{spec.context_window:,}",
                "yes" if spec.supports_tools else "no",
                f"{rates.input_per_mtok:g}" if rates else "unknown",
                f"{rates.output_per_mtok:g}" if rates else "unknown",
            )
    out.print(table)
    out.print(f"premium (baseline) tier: {cfg.premium_tier}; records: {cfg.store.resolved_path()}")
    classifier = cfg.routing.classifier
    if classifier.type == "learned":
        from tierwise.policy.engine import LearnedStart

        try:
            learned = LearnedStart.from_config(cfg)
        except ConfigError as exc:
            _fail(f"[red]config error[/red]\n{exc}")
        assert learned is not None
        thresholds = ", ".join(
            f"{t}>={v:g}" for t, v in zip(cfg.tier_names, learned.thresholds, strict=False)
        )
        out.print(
            f"classifier: learned, {classifier.artifact} ({len(learned.router.vocabulary_):,} terms; "
            f"trained for {', '.join(learned.router.models_)}); thresholds {thresholds}",
            highlight=False,
        )
    else:
        out.print("classifier: rules")


def _tier_list(value: str) -> list[str]:
    models = [m.strip() for m in value.split(",") if m.strip()]
    if len(models) < 2:
        _fail("--tiers: name at least two models, cheapest first: CHEAP,[MID,]PREMIUM")
    return models


def _outcomes(records: list[Any], models: list[str]) -> Any:
    """The records' outcome table for ``models``; exits 2 naming what the data lacks."""
    from tierwise.evals.metrics import OutcomeError, OutcomeTable

    try:
        return OutcomeTable.from_records(records, models)
    except OutcomeError as exc:
        _fail(f"[red]error[/red] {exc}")


def _load_data(path: Path, skip_invalid: bool) -> list[Any]:
    from tierwise.evals.dataset import DatasetError, iter_records

    def skipped(message: str) -> None:
        err.print(f"skipped: {message}", highlight=False)

    try:
        records = list(iter_records(path, skip_invalid=skip_invalid, on_skip=skipped))
    except DatasetError as exc:
        _fail(f"[red]data error[/red] {exc}")
    if not records:
        _fail(f"[red]data error[/red] {path}: no records to use")
    return records


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


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="Routing eval set (JSONL) to learn from.")],
    tiers: Annotated[str, typer.Option("--tiers", help="CHEAP,[MID,]PREMIUM models of the data.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the router artifact (.tw).")],
    folds: Annotated[
        int, typer.Option(help="Folds for the out-of-fold metrics kept in the artifact (0: none).")
    ] = 5,
    skip_invalid: Annotated[bool, typer.Option(help="Report and skip malformed lines.")] = False,
) -> None:
    """Train the learned router on a routing eval set and save it for the proxy (routing.classifier)."""
    from tierwise.classify.artifact import file_sha256, out_of_fold_metrics, save_router
    from tierwise.classify.learned import LearnedRouter

    models = _tier_list(tiers)
    records = _load_data(data, skip_invalid)
    table = _outcomes(records, models)
    router = LearnedRouter().fit(records, table)
    metrics = out_of_fold_metrics(records, table, folds=folds) if folds > 1 else {}
    extra = {
        "data": {"path": str(data), "sha256": file_sha256(data), "prompts": len(records)},
        "metrics": metrics,
    }
    save_router(router, output, extra=extra)
    out.print(
        f"trained on {len(records)} prompts ({len(router.vocabulary_):,} terms) for tiers "
        f"{', '.join(models)}; wrote {output}",
        highlight=False,
    )
    if metrics:
        auc = ", ".join(f"{t} {v:.3f}" for t, v in metrics["auc"].items())
        out.print(
            f"{folds}-fold out-of-fold: APGR {metrics['apgr']:.3f}, "
            f"saving at Q95 {metrics['saving_at_q95']:.1%}, AUC per tier {auc}",
            highlight=False,
        )


@app.command("train-gate")
def train_gate(
    data: Annotated[
        Path, typer.Option("--data", help="Routing eval set (JSONL) that kept the models' answers.")
    ],
    tiers: Annotated[str, typer.Option("--tiers", help="CHEAP,[MID,]PREMIUM models of the data.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the gate artifact (.twg).")],
    skip_invalid: Annotated[bool, typer.Option(help="Report and skip malformed lines.")] = False,
) -> None:
    """Train the learned gate (P(an answer is as good as premium's)) for a cascade's `learned` gate."""
    from tierwise.classify.artifact import file_sha256
    from tierwise.gates.learned import AnswerScorer

    models = _tier_list(tiers)
    records = _load_data(data, skip_invalid)
    table = _outcomes(records, models)
    try:
        scorer = AnswerScorer().fit(records, table)
    except ValueError as exc:
        _fail(f"[red]error[/red] {exc}")
    scorer.save(
        output, extra={"data": {"path": str(data), "sha256": file_sha256(data), "prompts": len(records)}}
    )
    out.print(
        f"trained the answer gate on {len(records)} prompts' answers ({len(scorer.vocabulary_):,} terms) "
        f"for {', '.join(models[:-1])} against {models[-1]}; wrote {output}",
        highlight=False,
    )


@app.command()
def calibrate(
    data: Annotated[Path, typer.Option("--data", help="Routing eval set (JSONL) to calibrate on.")],
    config: ConfigOption = None,
    tiers: Annotated[
        str | None,
        typer.Option("--tiers", help="CHEAP,[MID,]PREMIUM models of the data (default: the artifact's)."),
    ] = None,
    target_quality: Annotated[
        float | None, typer.Option(help="Reach this share of premium-only quality, at the lowest cost.")
    ] = None,
    max_cost_share: Annotated[
        float | None, typer.Option(help="Spend at most this share of premium-only cost, at the best quality.")
    ] = None,
    budget_usd_per_1k: Annotated[
        float | None, typer.Option(help="Spend at most this many dollars per 1,000 requests.")
    ] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds for the out-of-fold scores.")] = 5,
    write: Annotated[bool, typer.Option(help="Write the threshold into --config (comments kept).")] = False,
    skip_invalid: Annotated[bool, typer.Option(help="Report and skip malformed lines.")] = False,
) -> None:
    """Pick the learned router's threshold for a quality or cost target, cross-validated on the data."""
    from tierwise.classify.calibrate import Target, write_threshold
    from tierwise.classify.calibrate import calibrate as run_calibration

    try:
        target = Target(target_quality, max_cost_share, budget_usd_per_1k)
    except ValueError as exc:
        _fail(f"{exc} (--target-quality, --max-cost-share or --budget-usd-per-1k)")
    if write and config is None:
        _fail("--write needs --config: the router config to write the threshold into")
    models = _tier_list(tiers) if tiers else None
    if models is None and config is not None:
        cfg = _load(config)
        if cfg.routing.classifier.artifact:
            from tierwise.classify.artifact import load_router

            try:
                models = list(load_router(cfg.routing.classifier.artifact)[0].models_)
            except ConfigError as exc:
                _fail(f"[red]config error[/red]\n{exc}")
    if models is None:
        _fail("name the tiers: --tiers CHEAP,[MID,]PREMIUM, or --config with a learned artifact")
    records = _load_data(data, skip_invalid)
    table = _outcomes(records, models)
    result = run_calibration(records, table, target, folds=folds)
    threshold = min(result.threshold, 1.0)
    out.print(
        f"threshold {threshold:.4f}: quality {result.quality_vs_premium:.1%} of premium-only, cost "
        f"{result.cost_vs_premium:.1%} of premium-only (${result.usd_per_1k:.4f} per 1k requests), "
        f"tier mix {', '.join(f'{t} {v:.0%}' for t, v in result.point.tier_mix.items())} "
        f"({folds}-fold out-of-fold on {len(records)} prompts)",
        highlight=False,
    )
    if write and config is not None:
        try:
            write_threshold(config, threshold)
        except ConfigError as exc:
            _fail(f"[red]error[/red] {exc}")
        out.print(f"wrote routing.classifier.threshold = {threshold:.4f} to {config}", highlight=False)


@app.command()
def report(
    since: Annotated[str, typer.Option(help="How far back: 7d, 24h, 30m...")] = "7d",
    config: ConfigOption = None,
    db: Annotated[Path | None, typer.Option("--db", help="The records file (default: the config's).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures as JSON.")] = None,
) -> None:
    """Per-class cost against premium-only, escalation health, errors and latency, from the records."""
    import orjson
    from rich.table import Table

    from tierwise.report import parse_since, summarize, warnings
    from tierwise.store import SQLiteStore

    try:
        start = parse_since(since)
    except ValueError as exc:
        _fail(str(exc))
    path = db if db is not None else _load(config).store.resolved_path()
    if not path.exists():
        _fail(f"no records at {path}: serve some requests first, or name the file with --db")
    summary = summarize(SQLiteStore(path).query(since=start))
    table = Table(title=f"{path}: the last {since}")
    for column in ("class", "requests", "errors", "cost $", "premium-only $", "saving", "escalated", "health",
                   "p50 ms", "p95 ms"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("class", "health") else "right")

    def pct(value: float | None) -> str:
        return "" if value is None else f"{value:.1%}"

    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.1f}"

    for name, row in summary.items():
        table.add_row(
            name, str(row["requests"]), str(row["errors"]), f"{row['cost_usd']:.4f}",
            f"{row['baseline_cost_usd']:.4f}", pct(row["saving"]), pct(row["escalation_rate"]), row["health"],
            ms(row["latency_ms"]["p50"]), ms(row["latency_ms"]["p95"]),
        )  # fmt: skip
    out.print(table)
    for line in warnings(summary):
        out.print(f"[yellow]warning[/yellow] {line}", highlight=False)
    if json_out:
        json_out.write_bytes(orjson.dumps({"since": since, "classes": summary}, option=orjson.OPT_INDENT_2))


def main() -> None:
    app()
