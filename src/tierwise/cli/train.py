"""``tierwise train``, ``tierwise train-gate`` and ``tierwise calibrate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tierwise.cli import ConfigOption, _fail, _load, _load_data, _outcomes, _tier_list, app, out
from tierwise.errors import ConfigError


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
