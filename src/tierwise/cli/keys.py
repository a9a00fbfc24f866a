"""``tierwise keys``: API keys kept in the store (docs/keys.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tierwise.cli import _fail, _load, app, err, out
from tierwise.config import RouterConfig

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
