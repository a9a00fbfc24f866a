"""The ``tierwise`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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


def _load(path: Path | None) -> RouterConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        err.print(f"[red]config error[/red]\n{exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None


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
        application = create_app(cfg)
    except ConfigError as exc:
        err.print(f"[red]config error[/red]\n{exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None
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


def main() -> None:
    app()
