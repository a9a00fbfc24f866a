"""The ``tierwise`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

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


# The command modules register their commands on ``app``, in the order --help lists them.
# isort: off
import tierwise.cli.serve  # noqa: E402
import tierwise.cli.evaluate  # noqa: E402
import tierwise.cli.train  # noqa: E402
import tierwise.cli.records  # noqa: E402
import tierwise.cli.keys  # noqa: E402, F401
# isort: on


def main() -> None:
    app()
