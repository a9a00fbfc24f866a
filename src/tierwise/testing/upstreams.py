"""Fake OpenAI and Anthropic upstreams: real HTTP servers on 127.0.0.1, scripted per model.

    with FakeUpstream("anthropic") as upstream:
        upstream.script("claude-x", Behaviour("status", status=529), Behaviour(content="hello"))
        ...  # point a provider at upstream.base_url: the first call gets a 529, the second "hello"
        assert upstream.requests_for("claude-x")[0].headers["x-api-key"] == "k"

Each server runs an aiohttp app on an event loop of its own in a background thread, so synchronous and
asynchronous callers can use it alike, and it keeps answering while the caller's loop is busy. It answers
in the API's real shapes (bodies, stream events, error objects; built in ``_shapes``) so that the code under
test parses exactly what it would parse in production. It checks no credentials but records every request's
headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import orjson
from aiohttp import web

from tierwise.testing import _shapes
from tierwise.testing._shapes import Shape as Shape  # re-exported: FakeUpstream's ``shape`` is typed by it

Kind = Literal["ok", "slow", "status", "drop", "malformed_json", "stream_error"]


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What the upstream does for one request.

    ``kind``:
        ``ok``: answer (``content``, or ``tool_calls``, or by default ``"<model> says: <last user text>"``).
        ``slow``: the same, after ``delay_s`` (for streams, before the first byte).
        ``status``: answer HTTP ``status`` with an error object in the API's own shape, and a
        ``retry-after`` header when ``retry_after`` is set.
        ``drop``: streams send a couple of events then abort the connection (no terminator); other
        requests get the connection closed without any response.
        ``malformed_json``: a 200 whose body is ``{"choices": [``; streams send one good event then one
        whose data is ``{not json``.
        ``stream_error``: streams send one good event then an error event in the API's shape (Anthropic's
        ``event: error``, OpenAI's ``data: {"error": ...}``), typed after ``status``; other requests are
        answered as ``status``.

    ``delay_s`` delays every kind, not only ``slow``. ``finish_reason`` overrides the finish reason; it takes
    tierwise's names (``stop``, ``length``, ``tool_calls``, ``content_filter``), which the Anthropic shape
    translates to its own (``end_turn``, ``max_tokens``, ...); other values are sent as they are.
    """

    kind: Kind = "ok"
    delay_s: float = 0.0
    status: int = 500
    retry_after: float | None = None
    content: str | None = None
    tool_calls: list[tuple[str, str]] | None = None
    finish_reason: str | None = None
    set_cookie: str | None = None  # a Set-Cookie header on a non-streamed OpenAI-shaped answer


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the upstream received it; header names are lowercased. ``received_at`` is
    ``time.monotonic()`` when its body had been read (comparable with the caller's own readings)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = 0.0

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))


class FakeUpstream:
    """An OpenAI- or Anthropic-shaped upstream on 127.0.0.1, answering each model as scripted.

    ``start()`` binds a free port and returns once the server accepts connections; ``stop()`` closes it
    (waiting at most a quarter second for handlers still running, then cancelling them). It is also a
    context manager. ``base_url`` is what a provider's config takes: ``http://127.0.0.1:PORT/v1`` for the
    OpenAI shape, ``http://127.0.0.1:PORT`` for the Anthropic shape.

    Routes: OpenAI ``POST /v1/chat/completions``; Anthropic ``POST /v1/messages``; both ``GET /v1/models``
    (listing ``models`` and every scripted model). ``usage`` is the (input, output) token counts every
    answer reports. ``record=False`` keeps no requests, for long benchmark runs.
    """

    def __init__(
        self,
        shape: Shape = "openai",
        *,
        usage: tuple[int, int] = (10, 5),
        models: Iterable[str] = (),
        record: bool = True,
    ) -> None:
        if shape not in ("openai", "anthropic"):
            raise ValueError(f"shape must be 'openai' or 'anthropic', not {shape!r}")
        self.shape: Shape = shape
        self.usage = usage
        self.record = record
        self.port = 0
        self._models = list(models)
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Behaviour]] = {}
        self._default = Behaviour()
        self._requests: list[ReceivedRequest] = []
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- control, from the caller's thread ----

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("the fake upstream is not started; call start() first")
        root = f"http://127.0.0.1:{self.port}"
        return root + "/v1" if self.shape == "openai" else root

    def script(self, model: str, *behaviours: Behaviour) -> None:
        """Queue what the next requests for ``model`` get, in order; once they are used up, the default."""
        for behaviour in behaviours:
            self._check(behaviour)
        with self._lock:
            self._queues.setdefault(model, deque()).extend(behaviours)

    def set_default(self, behaviour: Behaviour) -> None:
        """What every request gets when its model's script is empty (initially ``Behaviour()``, "ok")."""
        self._check(behaviour)
        with self._lock:
            self._default = behaviour

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, model: str) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.model == model]

    def reset(self) -> None:
        """Forget the received requests and the scripts, and make "ok" the default again."""
        with self._lock:
            self._requests.clear()
            self._queues.clear()
            self._default = Behaviour()

    def start(self) -> FakeUpstream:
        if self._thread is not None:
            raise RuntimeError("the fake upstream is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failures: list[BaseException] = []
        thread = threading.Thread(
            target=self._serve,
            args=(loop, sock, ready, failures),
            name=f"fake-{self.shape}-{self.port}",
            daemon=True,
        )
        thread.start()
        ready.wait()
        if failures:
            thread.join()
            self.port = 0
            raise RuntimeError("the fake upstream failed to start") from failures[0]
        self._loop, self._thread = loop, thread
        return self

    def stop(self) -> None:
        """Close the server and its connections; a no-op when it is not running."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._loop = self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _check(self, behaviour: Behaviour) -> None:
        # The Anthropic shape sends tool arguments as a JSON object, so bad ones are the script's mistake:
        # say so here rather than as a 500 from the server thread.
        if self.shape == "anthropic":
            for name, arguments in behaviour.tool_calls or []:
                try:
                    parsed = orjson.loads(arguments)
                except orjson.JSONDecodeError:
                    parsed = None
                if not isinstance(parsed, dict):
                    raise ValueError(
                        f"tool call {name!r}: arguments must be a JSON object, got {arguments!r}"
                    )

    # ---- the server, on its own thread and loop ----

    def _serve(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        ready: threading.Event,
        failures: list[BaseException],
    ) -> None:
        asyncio.set_event_loop(loop)
        app = web.Application()
        if self.shape == "openai":
            app.router.add_post("/v1/chat/completions", self._chat)
        else:
            app.router.add_post("/v1/messages", self._chat)
        app.router.add_get("/v1/models", self._list_models)
        # handler_cancellation: a handler sleeping for a "slow" answer stops when its client gives up.
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.25, handler_cancellation=True
        )
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock, backlog=1024).start())
        except BaseException as exc:
            failures.append(exc)
            sock.close()
            with contextlib.suppress(Exception):
                loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            asyncio.set_event_loop(None)
            loop.close()

    def _next(self, model: str) -> Behaviour:
        with self._lock:
            queue = self._queues.get(model)
            return queue.popleft() if queue else self._default

    def _record(self, request: web.Request, body: dict[str, Any]) -> None:
        if not self.record:
            return
        headers = {k.lower(): v for k, v in request.headers.items()}
        record = ReceivedRequest(request.path, headers, body, time.monotonic())
        with self._lock:
            self._requests.append(record)

    async def _list_models(self, request: web.Request) -> web.Response:
        self._record(request, {})
        with self._lock:
            models = list(dict.fromkeys([*self._models, *self._queues]))
        return _json(_shapes.models_list(self.shape, models))

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            self._record(request, {})
            return self._error(400, "the request body is not a JSON object")
        self._record(request, body)
        problem = _shapes.request_problem(self.shape, body)
        if problem:
            return self._error(400, problem)

        model = str(body.get("model", ""))
        behaviour = self._next(model)
        if behaviour.delay_s > 0:
            await asyncio.sleep(behaviour.delay_s)
        stream = body.get("stream") is True
        kind = behaviour.kind
        if kind == "status" or (kind == "stream_error" and not stream):
            return self._error(behaviour.status, f"scripted HTTP {behaviour.status}", behaviour.retry_after)
        if kind == "drop" and not stream:
            _abort(request)
            return web.Response()
        if kind == "malformed_json" and not stream:
            return web.Response(body=b'{"choices": [', content_type="application/json")

        text = behaviour.content
        if text is None and not behaviour.tool_calls:
            text = f"{model} says: {_shapes.last_user_text(body.get('messages'))[:60]}"
        prefix = "call_" if self.shape == "openai" else "toolu_"
        calls = [(f"{prefix}fake{next(self._ids)}", name, args) for name, args in behaviour.tool_calls or []]
        finish = behaviour.finish_reason or ("tool_calls" if calls else "stop")
        usage, ids = self.usage, self._ids
        if self.shape == "openai":
            if not stream:
                answer = _json(_shapes.openai_completion(model, text, calls, finish, usage=usage, ids=ids))
                if behaviour.set_cookie:
                    answer.headers["set-cookie"] = behaviour.set_cookie
                return answer
            events = _shapes.openai_chunks(body, model, text, calls, finish, usage=usage, ids=ids)
            return await self._send_stream(request, behaviour, events)
        stop = _shapes.anthropic_stop(finish)
        # Asked for extended thinking, the Anthropic shape thinks first, in a signed block.
        setting = body.get("thinking")
        thinking = None
        if isinstance(setting, dict) and setting.get("type") != "disabled":
            said = _shapes.last_user_text(body.get("messages"))[:40]
            thinking = (f"{model} thinks about: {said}", f"sig-fake{next(ids)}")
        if not stream:
            message = _shapes.anthropic_message(
                model, text, calls, stop, usage=usage, ids=ids, thinking=thinking
            )
            return _json(message)
        events = _shapes.anthropic_events(model, text, calls, stop, usage=usage, ids=ids, thinking=thinking)
        return await self._send_stream(request, behaviour, events)

    async def _send_stream(
        self, request: web.Request, behaviour: Behaviour, events: list[bytes]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        await response.prepare(request)
        if behaviour.kind == "drop":
            # Far enough for the client to have seen some of the answer (for Anthropic: past the ping).
            for event in events[: 2 if self.shape == "openai" else 4]:
                await response.write(event)
            _abort(request)
            return response
        if behaviour.kind in ("malformed_json", "stream_error"):
            await response.write(events[0])
            if behaviour.kind == "malformed_json":
                bad = b"data: {not json\n\n"
                await response.write(bad if self.shape == "openai" else b"event: content_block_delta\n" + bad)
            else:
                await response.write(_shapes.stream_error(self.shape, behaviour.status, self._ids))
            await response.write_eof()
            return response
        for event in events:
            await response.write(event)
        await response.write_eof()
        return response

    def _error(self, status: int, message: str, retry_after: float | None = None) -> web.Response:
        headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else None
        return web.Response(
            status=status,
            body=orjson.dumps(_shapes.error_body(self.shape, status, message, self._ids)),
            content_type="application/json",
            headers=headers,
        )


def _json(data: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()
