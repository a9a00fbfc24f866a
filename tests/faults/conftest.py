"""Fixtures for the fault-injection suite: a controllable clock, a proxy built around an engine the test
made (to give its circuit breakers that clock), configs over one upstream shape, a raw upstream that sends
exactly the bytes it is given, and checks on what clients and records saw."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RunningProxy
from tierwise.config import RouterConfig, parse_config
from tierwise.policy.circuit import Circuits
from tierwise.policy.engine import Engine
from tierwise.providers import build_providers
from tierwise.store import RoutingRecord, SQLiteStore
from tierwise.testing.upstreams import FakeUpstream, Shape

# Per million tokens, (input, output): what the configs below charge; every fake answer is 10 in, 5 out.
PRICES = {"cheap-a": (0.1, 0.4), "cheap-b": (0.2, 0.8), "mid-a": (1.0, 4.0), "premium-a": (10.0, 40.0)}


def answer_cost(model: str, tokens_in: int = 10, tokens_out: int = 5) -> float:
    rate_in, rate_out = PRICES[model]
    return (tokens_in * rate_in + tokens_out * rate_out) / 1_000_000


class FakeClock:
    """A clock the breakers read; tests move it on instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def shaped_config(
    urls: dict[str, str], *, models_on: dict[str, str] | None = None, **overrides: Any
) -> RouterConfig:
    """Tiers cheap (cheap-a, cheap-b), mid (mid-a) and premium (premium-a). ``urls`` maps provider names to
    base URLs (a name starting with "anthropic" is Anthropic-shaped, any other OpenAI-shaped); every model
    is on the first provider unless ``models_on`` (model -> provider) says otherwise. Small timeouts."""
    providers: dict[str, Any] = {}
    for name, url in urls.items():
        kind = "anthropic" if name.startswith("anthropic") else "openai"
        providers[name] = {"type": kind, "base_url": url, "api_key": f"sk-{name}"}
    first = next(iter(urls))
    on = models_on or {}
    data: dict[str, Any] = {
        "providers": providers,
        "models": {
            model: {
                "provider": on.get(model, first),
                "price": {"input_per_mtok": rate_in, "output_per_mtok": rate_out},
            }
            for model, (rate_in, rate_out) in PRICES.items()
        },
        "tiers": {"cheap": ["cheap-a", "cheap-b"], "mid": ["mid-a"], "premium": ["premium-a"]},
        "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.02, "timeout_s": 2},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return parse_config(data, "fault test config")


class ServedProxy(RunningProxy):
    """The proxy on uvicorn on a free loopback port; with ``clock``, its engine's breakers read it."""

    def __init__(self, config: RouterConfig, db_path: Path, clock: FakeClock | None = None) -> None:
        if clock is None:
            super().__init__(config, db_path)
        else:
            store = SQLiteStore(db_path, flush_interval_s=0.02)
            circuits = Circuits.from_config(config, clock=clock)
            engine = Engine(config, build_providers(config), sink=store, circuits=circuits)
            super().__init__(config, db_path, store=store, engine=engine)
        self.engine: Engine = self.app.state.proxy.engine

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(self.url + "/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def circuits(self) -> dict[str, Any]:
        ready = httpx.get(self.url + "/readyz")
        assert ready.status_code == 200
        circuits: dict[str, Any] = ready.json()["circuits"]
        return circuits


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """Call with a RouterConfig (and a FakeClock for the breakers); stopped after the test."""
    running: list[ServedProxy] = []

    def start(config: RouterConfig, clock: FakeClock | None = None) -> ServedProxy:
        proxy = ServedProxy(config, tmp_path / f"records-{len(running)}.db", clock)
        running.append(proxy)
        return proxy

    yield start
    for proxy in running:
        proxy.stop()


@pytest.fixture(params=["openai", "anthropic"])
def upstream(request: pytest.FixtureRequest) -> Iterator[FakeUpstream]:
    """A fake upstream of each shape in turn."""
    shape: Shape = request.param
    with FakeUpstream(shape) as fake:
        yield fake


def config_for(fake: FakeUpstream, **overrides: Any) -> RouterConfig:
    """Every model on ``fake``, whichever its shape."""
    return shaped_config({fake.shape: fake.base_url}, **overrides)


# ---- a raw upstream: exactly the bytes it is given ----


class RawUpstream:
    """An HTTP server on 127.0.0.1 that reads a request and answers each one with the next scripted raw
    bytes (status line, headers and body as given), then closes the connection."""

    def __init__(self) -> None:
        self.answers: list[bytes] = []
        self.received = 0
        lock = threading.Lock()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                length = 0
                while True:
                    line = self.rfile.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                self.rfile.read(length)
                with lock:
                    outer.received += 1
                    answer = outer.answers.pop(0) if outer.answers else _http(500, b"{}")
                self.wfile.write(answer)
                self.wfile.flush()

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> RawUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _http(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\nconnection: close\r\n"
    return head.encode() + f"content-length: {len(body)}\r\n\r\n".encode() + body


def raw_answer(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    return _http(status, body, content_type)


def raw_stream(body: bytes) -> bytes:
    """A 200 event stream whose body is ``body`` exactly, ended by closing the connection."""
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n" + body


@pytest.fixture
def raw_upstream() -> Iterator[RawUpstream]:
    with RawUpstream() as raw:
        yield raw


# ---- what clients saw ----


def check_openai_body(status: int, body: bytes) -> dict[str, Any]:
    """A complete JSON object: an answer (200) or an error in OpenAI's shape (anything else)."""
    data = orjson.loads(body)  # never half a JSON body
    assert isinstance(data, dict)
    if status == 200:
        assert data["object"] == "chat.completion"
        assert data["choices"][0]["message"]["content"]
    else:
        assert status >= 400
        assert set(data) == {"error"}
        assert isinstance(data["error"]["message"], str) and data["error"]["message"]
        assert isinstance(data["error"]["type"], str)
    return data


def check_openai_stream(body: bytes) -> tuple[str, dict[str, Any] | None]:
    """The text of an OpenAI event stream and its error event, if it ended with one. Every event is whole
    JSON; a stream ends with ``[DONE]`` or with one error event and nothing after it."""
    events = [e for e in body.split(b"\n\n") if e.strip()]
    assert events, "an empty stream"
    text: list[str] = []
    for i, event in enumerate(events):
        assert event.startswith(b"data: "), event
        data = event.removeprefix(b"data: ")
        if data == b"[DONE]":
            assert i == len(events) - 1, "events after [DONE]"
            return "".join(text), None
        chunk = orjson.loads(data)
        if "error" in chunk:
            assert i == len(events) - 1, "events after an error event"
            assert isinstance(chunk["error"]["message"], str) and chunk["error"]["message"]
            return "".join(text), chunk
        assert chunk["object"] == "chat.completion.chunk"
        for choice in chunk["choices"]:
            text.append(choice["delta"].get("content") or "")
    raise AssertionError("the stream ended with neither [DONE] nor an error event")


def check_costs(record: RoutingRecord) -> None:
    """Billed once: the record's cost is its attempts' (plus routing); only the attempt that answered (the
    last one) costs anything, at the price of the tokens it reported, and no failed call costs a cent (a
    stream broken after its first event costs what it had produced, estimated)."""
    assert record.cost_usd == pytest.approx(
        record.routing_cost_usd + sum(a.cost_usd for a in record.attempts)
    )
    *before, last = record.attempts
    for attempt in before:
        assert attempt.cost_usd == 0 and attempt.status in ("error", "timeout"), attempt
    if record.status == "ok":
        assert last.status == "ok" and last.model == record.model
        assert last.cost_usd == pytest.approx(answer_cost(last.model, last.input_tokens, last.output_tokens))
        assert (last.input_tokens, last.output_tokens) == (10, 5)
    elif record.error and "mid-stream" in record.error:
        assert last.status == "error" and last.cost_usd >= 0
    else:
        assert last.status in ("error", "timeout") and last.cost_usd == 0
