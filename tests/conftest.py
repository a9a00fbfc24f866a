"""Shared fixtures: real loopback upstreams and a real proxy server in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tierwise.config import RouterConfig, parse_config
from tierwise.server.app import create_app
from tierwise.store import BatchStore, RoutingRecord, SQLiteStore
from tierwise.testing.upstreams import FakeUpstream


class RunningProxy:
    """The tierwise proxy served by uvicorn on a free loopback port."""

    def __init__(
        self,
        config: RouterConfig,
        db_path: Path,
        config_path: Path | None = None,
        store: BatchStore | None = None,
        **app_options: Any,
    ) -> None:
        self.config = config
        self.store = store if store is not None else SQLiteStore(db_path, flush_interval_s=0.02)
        self.app = create_app(config, store=self.store, config_path=config_path, **app_options)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", lifespan="on", http="httptools", access_log=False)
        )
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the proxy did not start")
            time.sleep(0.01)
        self._sock = sock

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def records(self) -> list[RoutingRecord]:
        self.store.flush()
        return self.store.query()

    def record(self, request_id: str) -> RoutingRecord:
        self.store.flush()
        found = self.store.get(request_id)
        assert found is not None, f"no record for {request_id}"
        return found

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()


def router_config(openai_url: str, anthropic_url: str | None = None, **overrides: Any) -> RouterConfig:
    """A three-tier config over the fake upstreams: cheap has two OpenAI models (no tools on the first),
    mid one, premium one (on Anthropic when an Anthropic upstream is given)."""
    providers: dict[str, Any] = {
        "up": {"type": "openai", "base_url": openai_url, "api_key": "sk-upstream-secret"}
    }
    premium_provider = "up"
    if anthropic_url is not None:
        providers["claude"] = {"type": "anthropic", "base_url": anthropic_url, "api_key": "sk-ant-secret"}
        premium_provider = "claude"
    data: dict[str, Any] = {
        "providers": providers,
        "models": {
            "cheap-a": {"provider": "up", "supports_tools": False, "context_window": 4096,
                        "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.4}},
            "cheap-b": {"provider": "up", "price": {"input_per_mtok": 0.2, "output_per_mtok": 0.8}},
            "mid-a": {"provider": "up", "price": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}},
            "premium-a": {"provider": premium_provider, "price": {"input_per_mtok": 10.0, "output_per_mtok": 40.0}},
        },
        "tiers": {"cheap": ["cheap-a", "cheap-b"], "mid": ["mid-a"], "premium": ["premium-a"]},
        "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05, "timeout_s": 5},
    }  # fmt: skip
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data, "test config")


@pytest.fixture
def openai_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream("openai") as upstream:
        yield upstream


@pytest.fixture
def anthropic_upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream("anthropic") as upstream:
        yield upstream


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[Any]:
    """Call with a RouterConfig; returns a RunningProxy that is stopped after the test."""
    running: list[RunningProxy] = []

    def start(config: RouterConfig, config_path: Path | None = None) -> RunningProxy:
        proxy = RunningProxy(config, tmp_path / f"records-{len(running)}.db", config_path)
        running.append(proxy)
        return proxy

    yield start
    for proxy in running:
        proxy.stop()
