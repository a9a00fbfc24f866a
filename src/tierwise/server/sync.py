"""One config for every replica: config versions shared through the PostgreSQL store.

When a replica loads a config (its admin reload or SIGHUP, ``tierwise learn --apply``, or at startup a config
file the database has never seen), it publishes a *version*: the file's text as written (``${VAR}``
references unresolved, so no secret reaches the database) and the artifacts the config names, each by sha256,
with the bytes when the file is at most ``SHARE_LIMIT`` bytes. Every replica polls the latest version's id
every ``store.sync_interval_s`` (off the event loop) and, when it changed, builds the config from the row
(interpolating its own environment) and swaps its engine exactly as a reload does. Replicas need not share a
filesystem: an artifact whose local copy is missing or differs is written from the database into a cache
directory. A replica that cannot apply a version keeps serving what it had and says why on ``/readyz``.

At startup a replica serving a config file the database has never seen publishes it (a deploy of a new config
rolls out to the replicas still running the old one); one whose file the database has seen before, when a
newer version exists, adopts the newest (a replica restarting with an old file follows the fleet).

A version's ``store`` section is never adopted: a replica keeps its own (the store is never reloaded, and
``store.redact`` names code to import, which a database row must not choose); it says so on stderr and in
``status()`` when the row's section differed.

With the SQLite store (one process) there is nothing to share and none of this runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import yaml
from pydantic import BaseModel

from tierwise.config import RouterConfig, parse_config, parse_config_text, read_config_text
from tierwise.errors import ConfigError
from tierwise.store.postgres import PostgresStore
from tierwise.store.records import ConfigVersion

if TYPE_CHECKING:
    from tierwise.policy.engine import Engine
    from tierwise.server.app import Proxy

# Artifacts up to this size travel through the database; a larger one must be the same file on every replica.
SHARE_LIMIT = 64 * 1024 * 1024
ORIGIN = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A config as read from its file: the text (what is shared) and what it validated to."""

    text: str
    name: str
    config: RouterConfig


def read_snapshot(path: str | Path | None) -> Snapshot:
    """Read and validate a config file (None: the embedded default); raises ConfigError."""
    text, name = read_config_text(path)
    return Snapshot(text, name, parse_config_text(text, name))


# ---- the artifacts a config names: every field called ``artifact``, by its key path ----


def artifact_keys(config: RouterConfig) -> dict[str, str]:
    """``{"routing.classifier.artifact": "router.npz", "routing.cascade.gates.2.artifact": ...}``."""
    found: dict[str, str] = {}

    def walk(node: Any, at: str) -> None:
        if isinstance(node, BaseModel):
            for name in type(node).model_fields:
                value = getattr(node, name)
                key = f"{at}.{name}" if at else name
                if name == "artifact" and isinstance(value, str):
                    found[key] = value
                else:
                    walk(value, key)
        elif isinstance(node, list | tuple):
            for i, value in enumerate(node):
                walk(value, f"{at}.{i}")
        elif isinstance(node, dict):
            for k, value in node.items():
                walk(value, f"{at}.{k}")

    walk(config, "")
    return found


def with_artifacts(config: RouterConfig, paths: dict[str, str]) -> RouterConfig:
    """``config`` with the artifact fields at the given key paths pointing elsewhere."""
    if not paths:
        return config

    def swap(node: Any, at: str) -> Any:
        if isinstance(node, BaseModel):
            updates = {}
            for name in type(node).model_fields:
                value = getattr(node, name)
                key = f"{at}.{name}" if at else name
                new = paths[key] if key in paths else swap(value, key)
                if new is not value:
                    updates[name] = new
            return node.model_copy(update=updates) if updates else node
        if isinstance(node, list | tuple):
            items = [swap(v, f"{at}.{i}") for i, v in enumerate(node)]
            return type(node)(items) if any(a is not b for a, b in zip(items, node, strict=True)) else node
        if isinstance(node, dict):
            entries = {k: swap(v, f"{at}.{k}") for k, v in node.items()}
            return entries if any(entries[k] is not node[k] for k in node) else node
        return node

    result: RouterConfig = swap(config, "")
    return result


def _file_sha256(path: Path) -> tuple[str, int] | None:
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError:
        return None
    return digest.hexdigest(), size


def version_of(snapshot: Snapshot, source: str) -> tuple[ConfigVersion, dict[str, bytes]]:
    """The version a snapshot publishes, and the artifact bytes small enough to share (by sha256)."""
    artifacts: dict[str, dict[str, Any]] = {}
    blobs: dict[str, bytes] = {}
    for key, path in artifact_keys(snapshot.config).items():
        found = _file_sha256(Path(path))
        if found is None:
            continue  # building the engine says what is wrong with it
        sha, size = found
        shared = size <= SHARE_LIMIT
        if shared:
            data = Path(path).read_bytes()
            if hashlib.sha256(data).hexdigest() != sha:
                raise ConfigError(f"{key}: {path} changed while it was being read; reload again")
            blobs[sha] = data
        artifacts[key] = {"path": path, "sha256": sha, "size": size, "shared": shared}
    hashes = orjson.dumps(sorted((k, a["sha256"]) for k, a in artifacts.items()))
    digest = hashlib.sha256(snapshot.text.encode() + b"\0" + hashes).hexdigest()
    version = ConfigVersion(digest, snapshot.text, snapshot.name, source, ORIGIN, time.time(), artifacts)
    return version, blobs


def adopt_config(text: str, source: str, own: RouterConfig) -> tuple[RouterConfig, bool]:
    """A config version's text validated with ``own``'s ``store`` section in place of the row's, and whether
    the row's differed. The row's ``store.redact`` is never imported: a row must not choose code to run."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return parse_config_text(text, source), False  # raises ConfigError, saying where
    if not isinstance(data, dict):
        return parse_config(data, source), False  # raises ConfigError
    row_store = data.pop("store", None)
    differs = False
    if row_store is not None:
        if isinstance(row_store, dict):
            # Validated without ``redact``: only to compare with this replica's own section.
            safe = {k: v for k, v in row_store.items() if k != "redact"}
            try:
                theirs = parse_config({**data, "store": safe}, source).store
                differs = theirs.model_copy(update={"redact": row_store.get("redact")}) != own.store
            except ConfigError:
                differs = True
        else:
            differs = True
    config = parse_config(data, source).model_copy(update={"store": own.store})
    return config, differs


def publish_file(store: PostgresStore, path: str | Path | None, source: str) -> tuple[int, bool]:
    """Publish the config file at ``path`` to every replica (``tierwise learn --apply``); returns the
    version's id and whether it is new (False: the latest version is this config already)."""
    version, blobs = version_of(read_snapshot(path), source)
    return store.publish_config(version, blobs)


class ConfigSync:
    """Keeps one replica on the latest config version: publishes what it loads, follows what others do."""

    def __init__(self, proxy: Proxy, store: PostgresStore, interval_s: float) -> None:
        self.proxy = proxy
        self.store = store
        self.interval_s = interval_s
        self.version_id: int | None = None  # the version this replica serves (or has seen)
        self.digest: str | None = None  # its digest; None: a config given as an object, never published
        self.problem: str | None = None  # why the latest version is not served here
        self.unreachable: str | None = None  # why the last poll failed
        self._cache: Path | None = None  # artifacts written from the database
        self.store_kept: str | None = None  # why the last adopted version's store section was not used

    # ---- publishing what this replica loaded ----

    async def published(self, snapshot: Snapshot, source: str) -> None:
        """Called with the reload lock held, after this replica switched to ``snapshot``."""
        self.digest = None  # what this replica serves now, until it is known as a published version
        try:
            version, blobs = await asyncio.to_thread(version_of, snapshot, source)
            self.digest = version.digest
            version_id, _ = await asyncio.to_thread(self.store.publish_config, version, blobs)
        except Exception as exc:
            self.problem = (
                f"the reloaded config is served here but was not shared with the other replicas: {exc}"
            )
            return
        self.version_id, self.problem = version_id, None

    # ---- following what others published ----

    async def startup(self) -> None:
        """Before serving: publish a config file the database has never seen, else adopt the newest."""
        async with self.proxy.reload_lock:
            try:
                await self._startup()
            except Exception as exc:  # serve the file's config; the poll follows later versions
                self.problem = f"cannot compare this replica's config with the shared versions: {exc}"
                print(f"tierwise: {self.problem}", file=sys.stderr)

    async def _startup(self) -> None:
        latest = await asyncio.to_thread(self.store.latest_config)
        path = self.proxy.config_path
        if path is None:
            # Given as an object (a library, a test): nothing to publish; follow later versions.
            self.version_id = latest[0] if latest else 0
            return
        version, blobs = await asyncio.to_thread(lambda: version_of(read_snapshot(path), "startup"))
        self.digest = version.digest
        if latest is not None and latest[1] == version.digest:
            self.version_id = latest[0]
        elif latest is None or not await asyncio.to_thread(self.store.knows_config, version.digest):
            self.version_id, _ = await asyncio.to_thread(self.store.publish_config, version, blobs)
        else:
            await self._follow(latest[0])

    async def run(self) -> None:
        """Poll every ``interval_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.poll()
            except Exception as exc:  # the database is away: try again next time
                self.unreachable = f"cannot check for config versions in {self.store.describe()}: {exc}"
            else:
                self.unreachable = None

    async def poll(self) -> bool:
        """One check; True when a newer version was applied."""
        latest = await asyncio.to_thread(self.store.latest_config)
        if latest is None or latest[0] == self.version_id:
            return False
        async with self.proxy.reload_lock:
            # Again under the lock: a reload here may have published a newer version meanwhile.
            latest = await asyncio.to_thread(self.store.latest_config)
            if latest is None or latest[0] == self.version_id:
                return False
            if latest[1] == self.digest:
                self.version_id, self.problem = latest[0], None
                return False
            return await self._follow(latest[0])

    async def _follow(self, version_id: int) -> bool:
        """Switch to version ``version_id`` (with the reload lock held)."""
        try:
            version = await asyncio.to_thread(self.store.config_version, version_id)
            if version is None:
                return False
            config, engine = await asyncio.to_thread(self._build, version)
        except Exception as exc:
            # Keep serving what this replica has; a newer version is tried when one comes.
            self.version_id = version_id
            self.problem = (
                f"config version {version_id} could not be applied here, still serving the previous config: "
                f"{exc}"
            )
            print(f"tierwise: {self.problem}", file=sys.stderr)
            return False
        self.proxy.swap(config, engine)
        self.version_id, self.digest, self.problem = version_id, version.digest, None
        print(
            f"tierwise: now serving config version {version_id} ({version.source} of {version.config_name} "
            f"on {version.origin})",
            file=sys.stderr,
        )
        return True

    def _build(self, version: ConfigVersion) -> tuple[RouterConfig, Engine]:
        from tierwise.policy.engine import Engine
        from tierwise.providers import build_providers

        source = f"config version {version.id} ({version.config_name})"
        config, differs = adopt_config(version.config_text, source, self.proxy.config)
        self.store_kept = None
        if differs:
            self.store_kept = (
                f"{source} has another store section; this replica keeps its own (the store is never "
                "reloaded, and store.redact is never taken from the database)"
            )
            print(f"tierwise: {self.store_kept}", file=sys.stderr)
        moved: dict[str, str] = {}
        for key, path in artifact_keys(config).items():
            meta = version.artifacts.get(key)
            if meta is None:
                continue  # the publisher could not read it either; building the engine says what is wrong
            local = _file_sha256(Path(path))
            if local is not None and local[0] == meta["sha256"]:
                continue
            moved[key] = str(self._fetch_artifact(key, path, meta))
        config = with_artifacts(config, moved)
        return config, Engine(config, build_providers(config), sink=self.proxy.sink)

    def _fetch_artifact(self, key: str, path: str, meta: dict[str, Any]) -> Path:
        sha = str(meta["sha256"])
        data = self.store.artifact_data(sha) if meta.get("shared") else None
        if data is None:
            raise ConfigError(
                f"{key}: {path} is missing here or differs from the file the version was published with "
                f"(sha256 {sha[:16]}…, {meta['size']} bytes, over the {SHARE_LIMIT >> 20} MiB shared through "
                "the database): put the same file on every replica"
            )
        if hashlib.sha256(data).hexdigest() != sha:
            raise ConfigError(f"{key}: the database's copy of {path} does not match its sha256")
        if self._cache is None:
            self._cache = Path(tempfile.mkdtemp(prefix="tierwise-artifacts-"))
        target = self._cache / sha / Path(path).name
        if not target.exists():
            target.parent.mkdir(exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(data)
            partial.replace(target)
        return target

    def status(self) -> dict[str, Any]:
        """For /readyz: the version served, and why not the latest (if so)."""
        status: dict[str, Any] = {"version": self.version_id, "problem": self.problem or self.unreachable}
        if self.store_kept is not None:
            status["store"] = self.store_kept
        return status

    def close(self) -> None:
        if self._cache is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._cache)
            self._cache = None
