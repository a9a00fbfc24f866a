"""Graceful shutdown of a real `tierwise serve` process: SIGTERM while a slow stream is in flight stops new
connections, lets the stream finish, and leaves its record in the SQLite file."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.faults.conftest import check_openai_stream
from tierwise.store import SQLiteStore
from tierwise.testing.upstreams import Behaviour, FakeUpstream

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_serve(tmp_path: Path, upstream_url: str, grace_s: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    db = tmp_path / "records.db"
    config = {
        "providers": {"up": {"type": "openai", "base_url": upstream_url, "api_key": "sk-up"}},
        "models": {
            "cheap-a": {"provider": "up", "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.4}},
            "mid-a": {"provider": "up", "price": {"input_per_mtok": 1, "output_per_mtok": 4}},
            "premium-a": {"provider": "up", "price": {"input_per_mtok": 10, "output_per_mtok": 40}},
        },
        "tiers": {"cheap": ["cheap-a"], "mid": ["mid-a"], "premium": ["premium-a"]},
        "server": {"shutdown_grace_s": grace_s},
        "store": {"path": str(db)},
    }
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierwise", "serve", "--config", str(path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.communicate()[0].decode(errors="replace")
            raise RuntimeError(f"tierwise serve did not start:\n{out}")
        time.sleep(0.05)
    return proc, url, db


def test_sigterm_lets_a_stream_in_flight_finish_and_flushes_its_record(tmp_path: Path) -> None:
    answer = "a slow answer that must reach the client whole, after the signal"
    with FakeUpstream("openai") as upstream:
        upstream.script("cheap-a", Behaviour("slow", delay_s=0.6, content=answer))
        proc, url, db = start_serve(tmp_path, upstream.base_url, grace_s=10)
        got: dict[str, Any] = {}

        def client() -> None:
            body = {
                "model": "tierwise/cheap",
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            }
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as response:
                got["id"] = response.headers["x-tierwise-request-id"]
                got["body"] = response.read()

        try:
            thread = threading.Thread(target=client)
            thread.start()
            deadline = time.monotonic() + 5
            while not upstream.requests_for("cheap-a"):  # the stream is in flight, waiting on the upstream
                assert time.monotonic() < deadline, "the request never reached the upstream"
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            # No new connections once shutting down...
            with pytest.raises(httpx.TransportError):
                httpx.get(url + "/healthz", timeout=1)
            assert proc.poll() is None  # ...but the process waits for the stream
            thread.join(timeout=10)
            assert not thread.is_alive()
            # uvicorn re-raises the signal once it has shut down cleanly, so the exit says "terminated".
            assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

    assert check_openai_stream(got["body"]) == (answer, None)
    record = SQLiteStore(db).get(got["id"])
    assert record is not None, "the record was lost at shutdown"
    assert record.status == "ok" and record.stream and record.response_text == answer


def test_a_request_cut_off_by_the_grace_period_still_leaves_its_record(tmp_path: Path) -> None:
    with FakeUpstream("openai") as upstream:
        upstream.script("cheap-a", Behaviour("slow", delay_s=5, content="too late"))
        proc, url, db = start_serve(tmp_path, upstream.base_url, grace_s=1)
        got: dict[str, Any] = {}

        def client() -> None:
            body = {"model": "tierwise/cheap", "messages": [{"role": "user", "content": "hi"}]}
            try:
                got["status"] = httpx.post(url + "/v1/chat/completions", json=body, timeout=10).status_code
            except httpx.TransportError as exc:
                got["error"] = exc

        try:
            thread = threading.Thread(target=client)
            thread.start()
            deadline = time.monotonic() + 5
            while not upstream.requests_for("cheap-a"):
                assert time.monotonic() < deadline, "the request never reached the upstream"
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
            thread.join(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()

    # The client got no answer (the grace period ran out), but the request is on record.
    assert "status" not in got or got["status"] >= 500
    (record,) = SQLiteStore(db).query()
    assert record.status == "error" and record.http_status == 499
    assert record.error is not None and record.error.startswith("cancelled before the answer was complete")
    assert [(a.model, a.status) for a in record.attempts] == []  # the attempt never came back
