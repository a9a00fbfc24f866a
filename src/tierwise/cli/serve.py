"""``tierwise serve`` and ``tierwise check-config``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tierwise._version import __version__
from tierwise.cli import ConfigOption, _fail, _load, app, err, out
from tierwise.errors import ConfigError


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: server.host, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: server.port, 8080).")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Worker processes sharing the port (default: server.workers, 1)."),
    ] = None,
) -> None:
    """Start the proxy (OpenAI-compatible API on /v1)."""
    from tierwise.server.threads import single_blas_thread

    single_blas_thread()  # before the router loads numpy
    import uvicorn

    from tierwise.server.app import create_app
    from tierwise.server.workers import STARTUP_TIMEOUT_S
    from tierwise.store import StoreError, open_store

    cfg = _load(config)
    bind_host = host or cfg.server.host
    bind_port = port if port is not None else cfg.server.port
    processes = workers if workers is not None else cfg.server.workers
    try:
        store = open_store(cfg.store)
        # A store that cannot be opened stops here, said plainly; with workers, the parent only creates or
        # migrates it (once), and each worker opens its own.
        if processes > 1:
            store.check()
        else:
            store.start()
    except StoreError as exc:
        _fail(f"[red]store error[/red] {exc}")
    try:
        # With workers this app is only a check (each worker builds its own): a config that cannot be served,
        # a router artifact that cannot be loaded, are said here, once.
        application: Any = create_app(cfg, store=store, config_path=config)
    except ConfigError as exc:
        _fail(f"[red]config error[/red]\n{exc}")
    if processes > 1:
        from tierwise.server import workers as worker_mod

        store.release()  # the parent holds no connection: each worker opens its own
        worker_mod.prepare(config, processes)  # the workers' environment: config path, metrics directory
        application = worker_mod.FACTORY
    else:
        from tierwise.server.collector import tune_for_serving

        tune_for_serving()  # the app is built: its objects leave the collector's walks
    source = str(config) if config else "embedded demo config"
    many = f", {processes} workers" if processes > 1 else ""
    err.print(
        f"tierwise {__version__} on http://{bind_host}:{bind_port}/v1  ({source}; "
        f"records: {cfg.store.describe()}{many})",
        highlight=False,
    )
    uvicorn.run(
        application,
        factory=processes > 1,
        workers=processes if processes > 1 else None,
        host=bind_host,
        port=bind_port,
        loop="auto",
        http="httptools",
        log_level="warning",
        access_log=False,
        # The client address is the peer's: no X-Forwarded-For rewriting (nothing reads a proxied address;
        # the loopback-only admin views refuse proxied requests outright).
        proxy_headers=False,
        # SIGTERM/SIGINT: stop accepting, let requests in flight (streams too) finish within the grace
        # period; the app's shutdown then writes every record the store still holds.
        timeout_graceful_shutdown=cfg.server.shutdown_grace_s,
        # With workers: how long a restarted worker (SIGHUP, an admin reload) may take to start before the
        # supervisor gives up on the rolling restart (uvicorn's default, 5 s, is short for a large router).
        timeout_worker_healthcheck=STARTUP_TIMEOUT_S,
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
        from tierwise.policy.learned_start import LearnedStart

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
