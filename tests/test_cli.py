"""The command line as a user runs it: real processes, the embedded demo config, records on disk."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import openai
import pytest

from tierwise import __version__


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tierwise", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tierwise {__version__}"


def test_check_config_prints_the_resolved_tiers() -> None:
    example = Path(__file__).parents[1] / "examples" / "openai-anthropic.yaml"
    secrets = {"OPENAI_API_KEY": "sk-openai-secret-1", "ANTHROPIC_API_KEY": "sk-ant-secret-2"}
    result = run_cli("check-config", str(example), env=secrets)
    assert result.returncode == 0, result.stderr
    assert "claude-3-5-haiku-latest" in result.stdout
    assert "premium (baseline) tier: premium" in result.stdout
    for value in secrets.values():
        assert value not in result.stdout + result.stderr


def test_check_config_names_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {p: {type: openai}}\nmodels: {m: {provider: p}}\ntiers: {cheap: [m, typo]}\n")
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2
    assert "tiers.cheap.1: unknown model 'typo'" in result.stderr
    bad.write_text("providers: {p: {type: openai}}\nmodels: {m: {provider: p}}\ntiers: {cheap: [m]}\n"
                   "routing: {rules: [{name: r, when: {tokens_gt: 5}, tier: cheap}]}\n")  # fmt: skip
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2
    assert "routing.rules.0.when.tokens_gt: unknown key" in result.stderr


def test_check_config_missing_env_var(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "providers: {p: {type: openai, api_key: '${TIERWISE_TEST_UNSET_KEY}'}}\n"
        "models: {m: {provider: p}}\ntiers: {cheap: [m]}\n"
    )
    result = run_cli("check-config", str(cfg))
    assert result.returncode == 2
    assert "providers.p.api_key: environment variable TIERWISE_TEST_UNSET_KEY is not set" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def demo_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """`tierwise serve` with no config: the embedded demo, as `make run` starts it."""
    port = _free_port()
    env = {**os.environ, "TIERWISE_HOME": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierwise", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"tierwise serve did not start: {proc.communicate()[1]}")
        time.sleep(0.1)
    yield url, proc, tmp_path / "records.db"
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def _demo_record(index: int) -> dict[str, object]:
    text = resources.files("tierwise.data").joinpath("arena-demo.jsonl").read_text("utf-8")
    return dict(json.loads(text.splitlines()[index]))


def test_demo_serves_recorded_answers_and_records_them(
    demo_server: tuple[str, subprocess.Popen[str], Path],
) -> None:
    url, proc, db_path = demo_server
    recorded = _demo_record(3)
    messages = recorded["messages"]
    with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="tierwise/premium", messages=messages)  # type: ignore[arg-type]
        outcome = recorded["outcomes"]["gpt-4-1106-preview"]  # type: ignore[index]
        assert raw.parse().choices[0].message.content == outcome["response"]
        assert raw.headers["x-tierwise-replay-match"] == "exact"
        assert raw.headers["x-tierwise-replay-id"] == recorded["id"]
        assert float(raw.headers["x-tierwise-cost-usd"]) == pytest.approx(outcome["cost_usd"])

        unseen = client.chat.completions.with_raw_response.create(
            model="tierwise/auto",
            messages=[{"role": "user", "content": "Summarize the plot of Hamlet in two sentences."}],
        )
        assert unseen.headers["x-tierwise-replay-match"] == "nearest"
        assert 0 <= float(unseen.headers["x-tierwise-replay-similarity"]) < 1
        assert unseen.headers["x-tierwise-tier"] == "cheap"
        assert unseen.parse().choices[0].message.content
        ids = {raw.headers["x-tierwise-request-id"], unseen.headers["x-tierwise-request-id"]}

    proc.send_signal(signal.SIGTERM)  # a clean shutdown writes every queued record
    assert proc.wait(timeout=30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    db = sqlite3.connect(db_path)
    try:
        rows = dict(db.execute("SELECT request_id, status FROM records").fetchall())
    finally:
        db.close()
    assert {rid: rows.get(rid) for rid in ids} == dict.fromkeys(ids, "ok")
