"""The ``tierwise`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from tierwise._version import __version__
from tierwise.config import RouterConfig, load_config, write_config_text
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


DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="The records: a SQLite file, a postgresql:// URL or a key=value DSN (host=... dbname=...); "
        "default: the config's store.",
    ),
]


def _open_records(cfg: RouterConfig | None, db: str | None) -> tuple[Any, str]:
    """The store to read (not started) and how to name it; fails when it is not there."""
    from tierwise.config import StoreConfig
    from tierwise.store import SQLiteStore, StoreError, open_store

    try:
        store = open_store(cfg.store if cfg is not None else StoreConfig(), db)
        where = store.describe()
        if isinstance(store, SQLiteStore) and not store.path.is_file():
            _fail(f"no records at {where}: serve some requests first, or name the file with --db")
        store.check()  # a file that is not a SQLite database, a newer schema, an unreachable server
    except StoreError as exc:
        _fail(f"[red]store error[/red] {exc}")
    return store, where


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
    from tierwise.server.threads import single_blas_thread

    single_blas_thread()  # before the router loads numpy
    import uvicorn

    from tierwise.server.app import create_app
    from tierwise.store import StoreError, open_store

    cfg = _load(config)
    bind_host = host or cfg.server.host
    bind_port = port if port is not None else cfg.server.port
    try:
        store = open_store(cfg.store).start()  # a store that cannot be opened stops here, said plainly
    except StoreError as exc:
        _fail(f"[red]store error[/red] {exc}")
    try:
        application = create_app(cfg, store=store, config_path=config)
    except ConfigError as exc:
        _fail(f"[red]config error[/red]\n{exc}")
    source = str(config) if config else "embedded demo config"
    err.print(
        f"tierwise {__version__} on http://{bind_host}:{bind_port}/v1  ({source}; "
        f"records: {cfg.store.describe()})",
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
        # SIGTERM/SIGINT: stop accepting, let requests in flight (streams too) finish within the grace
        # period; the app's shutdown then writes every record the store still holds.
        timeout_graceful_shutdown=cfg.server.shutdown_grace_s,
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
    out.print(f"premium (baseline) tier: {cfg.premium_tier}; records: {cfg.store.describe()}")
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
    embeddings: Annotated[
        Path | None,
        typer.Option(
            "--embeddings",
            help="Directory of a local sentence-transformers model whose embeddings the router uses too "
            "(needs `pip install 'tierwise[embeddings]'`; never downloaded).",
        ),
    ] = None,
) -> None:
    """Train the learned router on a routing eval set and save it for the proxy (routing.classifier)."""
    from tierwise.classify.artifact import file_sha256, out_of_fold_metrics, save_router
    from tierwise.classify.learned import LearnedRouter

    models = _tier_list(tiers)
    encoder = None
    if embeddings is not None:
        from tierwise.classify.embeddings import SentenceEncoder

        try:
            encoder = SentenceEncoder(embeddings)
        except ConfigError as exc:
            _fail(f"[red]error[/red] {exc}")
    records = _load_data(data, skip_invalid)
    table = _outcomes(records, models)
    router = LearnedRouter(encoder=encoder).fit(records, table)
    metrics = out_of_fold_metrics(records, table, folds=folds, encoder=encoder) if folds > 1 else {}
    extra = {
        "data": {"path": str(data), "sha256": file_sha256(data), "prompts": len(records)},
        "metrics": metrics,
    }
    save_router(router, output, extra=extra)
    out.print(
        f"trained on {len(records)} prompts ({len(router.vocabulary_):,} terms"
        f"{f', embeddings of {encoder.name}' if encoder is not None else ''}) for tiers "
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
    policy: Annotated[
        str,
        typer.Option(
            help="direct: the router's threshold; cascade or auto: the gate's threshold (and bands)."
        ),
    ] = "direct",
    gate: Annotated[
        str | None,
        typer.Option("--gate", help="With --write: the learned gate artifact to put in the config."),
    ] = None,
) -> None:
    """Pick the learned router's threshold (or the cascade's, or auto's) for a target, cross-validated."""
    from tierwise.classify.calibrate import Target, write_threshold
    from tierwise.classify.calibrate import calibrate as run_calibration

    try:
        target = Target(target_quality, max_cost_share, budget_usd_per_1k)
    except ValueError as exc:
        _fail(f"{exc} (--target-quality, --max-cost-share or --budget-usd-per-1k)")
    if policy not in ("direct", "cascade", "auto"):
        _fail(f"--policy: expected direct, cascade or auto, got {policy!r}")
    if policy != "direct" and target.quality is None:
        _fail(f"--policy {policy} calibrates for a quality target: give --target-quality")
    if write and config is None:
        _fail("--write needs --config: the router config to write the threshold into")
    if gate is not None and not write:
        _fail(
            "--gate names the learned gate artifact to write into the config: it needs --write and --config"
        )
    if gate is not None and policy == "direct":
        _fail("--gate is for --policy cascade or auto: the direct policy has no gate")
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
    if policy != "direct":
        _calibrate_policy(
            records, table, policy, target.quality or 0.0, folds, config if write else None, gate
        )
        return
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


def _calibrate_policy(
    records: Any, table: Any, policy: str, quality: float, folds: int, write_to: Path | None, gate: str | None
) -> None:
    from tierwise.classify.calibrate import calibrate_policy, write_policy

    try:
        result = calibrate_policy(records, table, policy, quality, folds=folds)
    except ValueError as exc:
        _fail(f"[red]error[/red] {exc}")
    p = result.params
    bands = (
        f"bands confident_cheap {p['hi']:.4f}, confident_premium {p['lo']:.4f}, " if policy == "auto" else ""
    )
    out.print(
        f"{policy}: {bands}learned gate threshold {p['gate']:.4f}: quality "
        f"{result.quality_vs_premium:.1%} of premium-only, cost {result.cost_vs_premium:.1%} of premium-only "
        "(every attempt paid), tier mix "
        f"{', '.join(f'{t} {v:.0%}' for t, v in result.point.tier_mix.items())} "
        f"({folds}-fold out-of-fold on {len(records)} prompts)",
        highlight=False,
    )
    if write_to is not None:
        try:
            write_policy(write_to, result, gate)
        except ConfigError as exc:
            _fail(f"[red]error[/red] {exc}")
        out.print(f"wrote routing.policy = {policy} and its settings to {write_to}", highlight=False)


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


# ---- tierwise keys: API keys kept in the store (docs/keys.md) ----

keys_app = typer.Typer(
    help="API keys kept in the store, with budgets and rate limits every replica enforces (docs/keys.md).",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")

KeysConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Router config (YAML) whose store keeps the keys."),
]
KeysDbOption = Annotated[
    str | None,
    typer.Option(
        "--db", help="The store: a SQLite file or a postgresql:// URL (default: the config's store)."
    ),
]


def _key_store(
    config: Path | None, db: str | None, *, create: bool = False
) -> tuple[Any, RouterConfig | None]:
    """The store keeping the keys (schema created or migrated) and the config, if one was named."""
    from tierwise.config import StoreConfig
    from tierwise.store import SQLiteStore, StoreError, open_store

    cfg = _load(config) if config is not None or db is None else None
    try:
        store = open_store(cfg.store if cfg is not None else StoreConfig(), db)
        if isinstance(store, SQLiteStore) and not create and not store.path.is_file():
            _fail(f"no store at {store.describe()}: create a key first, or name it with --config or --db")
        store.check()
    except StoreError as exc:
        _fail(f"[red]store error[/red] {exc}")
    return store, cfg


def _when(ts: float | None) -> str:
    import datetime

    if ts is None:
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


@keys_app.command("create")
def keys_create(
    key_id: Annotated[str, typer.Option("--id", help="The key's name in records, listings and revocation.")],
    tier: Annotated[
        str | None, typer.Option("--tier", help="The user tier of its requests (routing.user_tier_caps).")
    ] = None,
    team: Annotated[
        str | None, typer.Option("--team", help="Its team: the request class of its requests.")
    ] = None,
    budget_usd: Annotated[
        str | None,
        typer.Option("--budget-usd", help="Spend allowed per UTC day or calendar month: 100/month, 5/day."),
    ] = None,
    rpm: Annotated[int | None, typer.Option("--rpm", help="Requests allowed per minute.")] = None,
    over_budget: Annotated[
        str | None,
        typer.Option(
            "--over-budget",
            help="Past the budget: refuse (HTTP 429) or route-down (the cheapest tier answers). "
            "Default: the config's auth.over_budget.",
        ),
    ] = None,
    config: KeysConfigOption = None,
    db: KeysDbOption = None,
) -> None:
    """Make a key; its secret is printed once (on stdout) and only its SHA-256 is stored."""
    from tierwise import keys
    from tierwise.store import StoreError

    try:
        keys.check_id(key_id)
    except ValueError as exc:
        _fail(f"--id: {exc}")
    budget = None
    if budget_usd is not None:
        try:
            budget = keys.parse_budget(budget_usd)
        except ValueError as exc:
            _fail(f"--budget-usd: {exc}")
    if rpm is not None and rpm < 1:
        _fail(f"--rpm: at least 1 request per minute, got {rpm}")
    mode: keys.OverBudget | None = None
    if over_budget is not None:
        given = over_budget.strip().lower().replace("-", "_")
        if given not in keys.OVER_BUDGET:
            _fail(f"--over-budget: refuse or route-down, got {over_budget!r}")
        mode = "refuse" if given == "refuse" else "route_down"
    for option, value in (("--tier", tier), ("--team", team)):
        if value is not None and not value.strip():
            _fail(f"{option}: empty; leave it out instead")
    store, cfg = _key_store(config, db, create=True)
    if cfg is not None and any(k.id == key_id for k in cfg.auth.keys):
        _fail(f"--id: {key_id!r} is the id of a key in the config (auth.keys); choose another")
    try:
        secret, key = keys.create_key(
            store, key_id, user_tier=tier, team=team, budget=budget, rpm=rpm, over_budget=mode
        )
    except ValueError as exc:
        _fail(str(exc))
    except StoreError as exc:
        _fail(f"[red]store error[/red] {exc}")
    limits = [f"budget ${budget}" if budget else "no budget", f"{rpm} rpm" if rpm else "no rate limit"]
    if budget is not None:
        shown = mode.replace("_", "-") if mode else "the config's auth.over_budget"
        limits.append(f"past the budget: {shown}")
    err.print(
        f"created key {key.id!r} in {store.describe()} (user tier {tier or '-'}, team {team or '-'}; "
        f"{', '.join(limits)}). The secret is shown this once; tierwise keeps only its SHA-256. Running "
        "proxies accept it within store.sync_interval_s.",
        highlight=False,
    )
    typer.echo(secret)


@keys_app.command("list")
def keys_list(
    config: KeysConfigOption = None,
    db: KeysDbOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The store's keys (never their secrets) with this period's spend and requests."""
    import time

    import orjson

    from tierwise import keys

    store, _ = _key_store(config, db)
    now = time.time()
    found = store.stored_keys()
    usage = store.key_usage(keys.periods(now))
    rows = []
    for key in found:
        period = keys.period_of(key, now)
        spent, requests = usage.get((key.id, period), (0.0, 0))
        rows.append({
            **key.to_dict(),
            "period": period,
            "spent_usd": spent,
            "requests": requests,
            "status": "revoked" if key.revoked_at is not None else "active",
        })  # fmt: skip
    if json_out:
        for row in rows:
            row.pop("key_sha256")
        typer.echo(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
        return
    if not rows:
        out.print(f"no keys in {store.describe()}: tierwise keys create --id NAME", highlight=False)
        return
    table = Table(title=f"API keys in {store.describe()}")
    for column in ("id", "secret", "user tier", "team", "budget", "spent", "requests", "rpm", "over budget",
                   "created", "status"):  # fmt: skip
        table.add_column(column, justify="right" if column in ("spent", "requests", "rpm") else "left")
    for row in rows:
        budget = f"${row['budget_usd']:g}/{row['budget_period']}" if row["budget_usd"] is not None else ""
        status = row["status"] if row["revoked_at"] is None else f"revoked {_when(row['revoked_at'])}"
        table.add_row(
            row["id"], f"{row['prefix']}…", row["user_tier"] or "", row["team"] or "", budget,
            f"{row['spent_usd']:.4f}", str(row["requests"]), str(row["rpm"] or ""),
            (row["over_budget"] or "default").replace("_", "-") if row["budget_usd"] is not None else "",
            _when(row["created_at"]), status,
        )  # fmt: skip
    (out if out.is_terminal else Console(width=max(out.width, 160))).print(table)
    out.print(
        "spent and requests: this UTC month, or this UTC day for a daily budget; from every replica, up to "
        "its last write (store.flush_interval_s)",
        highlight=False,
    )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The id of the key to revoke.")],
    config: KeysConfigOption = None,
    db: KeysDbOption = None,
) -> None:
    """Revoke a key: every replica refuses it (HTTP 401) within store.sync_interval_s."""
    import time

    store, _ = _key_store(config, db)
    known = {k.id: k for k in store.stored_keys()}
    key = known.get(key_id)
    if key is None:
        shown = ", ".join(known) or "none"
        _fail(f"no key {key_id!r} in {store.describe()} (keys: {shown})")
    if key.revoked_at is not None or not store.revoke_key(key_id, time.time()):
        _fail(f"the key {key_id!r} was revoked already ({_when(key.revoked_at)})")
    out.print(
        f"revoked key {key_id!r} in {store.describe()}: running proxies refuse it within "
        "store.sync_interval_s",
        highlight=False,
    )


def main() -> None:
    app()
