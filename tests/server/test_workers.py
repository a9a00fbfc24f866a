"""`tierwise serve --workers 2`: two worker processes on one port, over a loopback upstream — every request
answered and recorded, /metrics summed over the workers whichever answers, an admin reload reaching both,
and a clean stop."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.server.test_reload import write_config
from tierwise.testing.upstreams import FakeUpstream

ADMIN = "adm-1"  # write_config's admin key


def until(check: Callable[[], bool], within_s: float, message: str) -> None:
    """Wait for ``check``; a connection dropped meanwhile counts as not yet (a worker that is stopping in a
    rolling restart closes the connections it accepted but has no request on yet)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            if check():
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def start(path: Path, home: Path) -> tuple[str, subprocess.Popen[str]]:
    """`tierwise serve --config PATH --workers 2` on a free port, once /healthz answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "tierwise",
        "serve",
        "--config",
        str(path),
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TIERWISE_HOME": str(home)},
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, "the server stopped"
        try:
            return httpx.get(url + "/healthz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        until(up, 60, "the server did not start")
    except BaseException:
        proc.kill()
        proc.communicate(timeout=30)
        raise
    return url, proc


@pytest.fixture
def server(
    openai_upstream: FakeUpstream, tmp_path: Path
) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    path = write_config(tmp_path / "router.yaml", openai_upstream, ["cheap-a"])
    url, proc = start(path, tmp_path)
    try:
        yield url, path, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=60)


def workers_seen(url: str, tries: int = 60) -> set[int]:
    """The worker pids /readyz names over ``tries`` new connections."""
    return {httpx.get(url + "/readyz").json()["worker"] for _ in range(tries)}


def served(metrics: str) -> float:
    return sum(
        float(v)
        for v in re.findall(r'^tierwise_requests_total\{[^}]*status="ok"[^}]*\} (\S+)$', metrics, re.M)
    )


def one_client_per_worker(url: str) -> dict[int, httpx.Client]:
    """A keep-alive client held by each worker (new connections until both have one)."""
    clients: dict[int, httpx.Client] = {}
    deadline = time.monotonic() + 30  # the second worker may still be starting
    while time.monotonic() < deadline:
        client = httpx.Client(base_url=url, timeout=10)
        pid = client.get("/readyz").json()["worker"]
        if pid in clients:
            client.close()
            time.sleep(0.02)
        else:
            clients[pid] = client
        if len(clients) == 2:
            return clients
    raise AssertionError("the connections did not reach two workers")


def test_two_workers_answer_record_and_count_together(
    server: tuple[str, Path, subprocess.Popen[str]], openai_upstream: FakeUpstream
) -> None:
    url, path, proc = server
    clients = one_client_per_worker(url)
    pids = set(clients)
    assert proc.pid not in pids  # the supervisor serves nothing itself
    first, second = clients.values()
    ask = {"model": "tierwise/cheap", "messages": [{"role": "user", "content": "hi"}]}
    # Each worker answers some; feedback on a request reaches its record from the other worker at once.
    for i in range(4):
        answered = (first if i % 2 else second).post("/v1/chat/completions", json=ask)
        assert answered.status_code == 200
        rid = answered.headers["x-tierwise-request-id"]
        scored = (second if i % 2 else first).post(
            "/v1/tierwise/feedback", json={"request_id": rid, "score": 1}
        )
        assert scored.status_code == 200, scored.text
    # Scrapes through either worker give both workers' counts together.
    assert served(first.get("/metrics").text) == served(second.get("/metrics").text) == 4
    for client in clients.values():
        client.close()
    for i in range(30):  # a new connection each: the kernel spreads them over the workers
        with openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="tierwise/cheap", messages=[{"role": "user", "content": f"hi {i}"}]
            )
        assert raw.http_response.status_code == 200 and raw.headers["x-tierwise-model"] == "cheap-a"
    for _ in range(6):
        assert served(httpx.get(url + "/metrics").text) == 34

    # An admin reload (SQLite: no shared config versions) restarts both workers on the new file.
    write_config(path, openai_upstream, ["cheap-b"])
    done = httpx.post(url + "/v1/tierwise/admin/reload", headers={"authorization": f"Bearer {ADMIN}"})
    assert done.status_code == 200 and done.json()["workers"] == "restart of all 2 workers requested"

    def both_new() -> bool:
        models = {httpx.post(url + "/v1/chat/completions", json={"model": "tierwise/cheap", "messages": [
            {"role": "user", "content": "hi"}]}).headers["x-tierwise-model"] for _ in range(10)}  # fmt: skip
        return models == {"cheap-b"} and not pids & workers_seen(url, 20)

    until(both_new, 60, "the workers did not restart on the new config")
    assert served(httpx.get(url + "/metrics").text) >= 34 + 10  # the old workers' counts are kept

    # SIGTERM to the parent stops both workers; every request answered is in the store.
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    db = sqlite3.connect(path.parent / "records.db")
    (ok,) = db.execute("SELECT count(*) FROM records WHERE status = 'ok'").fetchone()
    answered = len(openai_upstream.requests)
    assert ok == answered >= 44


def test_two_workers_on_postgresql_follow_one_config_version(
    openai_upstream: FakeUpstream, tmp_path: Path
) -> None:
    """With PostgreSQL the workers are replicas: an admin reload through one publishes a config version the
    other adopts (no restart), and both write to the one database."""
    from tests.store.pg import execute, pg_schema

    with pg_schema() as dsn:
        path = tmp_path / "router.yaml"

        def write(cheap: str) -> None:
            write_config(path, openai_upstream, [cheap])
            data = yaml.safe_load(path.read_text())
            data["store"] = {"type": "postgres", "dsn": dsn, "sync_interval_s": 0.2}
            path.write_text(yaml.safe_dump(data))

        write("cheap-a")
        url, proc = start(path, tmp_path)
        try:
            clients = one_client_per_worker(url)
            ask = {"model": "tierwise/cheap", "messages": [{"role": "user", "content": "hi"}]}
            for client in clients.values():
                assert client.post("/v1/chat/completions", json=ask).headers["x-tierwise-model"] == "cheap-a"
            write("cheap-b")
            first, second = clients.values()
            done = first.post("/v1/tierwise/admin/reload", headers={"authorization": f"Bearer {ADMIN}"})
            assert done.status_code == 200 and "workers" not in done.json()  # no restart: a config version
            until(
                lambda: (
                    second.post("/v1/chat/completions", json=ask).headers["x-tierwise-model"] == "cheap-b"
                ),
                10,
                "the other worker did not adopt the published version",
            )
            # The same worker processes serve on (nothing restarted).
            assert {c.get("/readyz").json()["worker"] for c in clients.values()} == set(clients)
            for client in clients.values():
                client.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        ((ok,),) = execute(dsn, "SELECT count(*) FROM records WHERE status = 'ok'")
        assert ok == len(openai_upstream.requests) >= 3


def test_each_workers_own_state_is_combined_in_metrics(openai_upstream: FakeUpstream, tmp_path: Path) -> None:
    """Shadow comparisons each worker skips (its own state, not a record) add up across the workers, and the
    breakers' gauges are there, whichever worker answers the scrape."""
    path = write_config(tmp_path / "router.yaml", openai_upstream, ["cheap-a"])
    data = yaml.safe_load(path.read_text())
    data |= {"mode": "shadow", "shadow": {"sample": 1.0, "max_spend_usd_per_day": 0}}
    path.write_text(yaml.safe_dump(data))
    url, proc = start(path, tmp_path)
    try:
        clients = one_client_per_worker(url)
        ask = {"model": "tierwise/auto", "messages": [{"role": "user", "content": "Say hello"}]}
        for n, client in zip((3, 2), clients.values(), strict=True):
            for _ in range(n):
                assert client.post("/v1/chat/completions", json=ask).status_code == 200

        def skipped(client: httpx.Client) -> float:
            found = re.search(r'^tierwise_shadow_skipped_total\{reason="budget"\} (\S+)$', client.get(
                "/metrics").text, re.M)  # fmt: skip
            return float(found.group(1)) if found else -1.0

        first, second = clients.values()
        until(
            lambda: skipped(first) == skipped(second) == 5, 10, "the skips were not summed over the workers"
        )
        metrics = first.get("/metrics").text
        assert re.search(r'^tierwise_circuit_open\{model="premium-a"\} 0\.0$', metrics, re.M)
        assert re.search(r"^tierwise_shadow_running 0\.0$", metrics, re.M)
        for client in clients.values():
            client.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
