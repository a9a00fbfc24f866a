"""Reloading the config (and the router artifact it names) without a restart: admin endpoint and SIGHUP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tierwise.config import load_config
from tierwise.testing.upstreams import FakeUpstream


def write_config(
    path: Path, upstream: FakeUpstream, cheap: list[str], admin_key: str | None = "adm-1"
) -> Path:
    price = {"input_per_mtok": 1, "output_per_mtok": 1}
    data: dict[str, Any] = {
        "providers": {"up": {"type": "openai", "base_url": upstream.base_url}},
        "models": {m: {"provider": "up", "price": price} for m in ("cheap-a", "cheap-b", "premium-a")},
        "tiers": {"cheap": cheap, "premium": ["premium-a"]},
        "routing": {"task_tiers": dict.fromkeys(
            ("classify", "extract", "rephrase", "summarize", "chat", "code", "reasoning"), "cheap"),
            "domains": {}},
        "store": {"path": str(path.parent / "records.db")},
    }  # fmt: skip
    if admin_key:
        data["auth"] = {"admin_key": admin_key}
    path.write_text(yaml.safe_dump(data))
    return path


def chat(url: str) -> httpx.Response:
    body = {"model": "tierwise/cheap", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(url + "/v1/chat/completions", json=body, timeout=10)


def test_admin_reload_switches_config_and_keeps_a_bad_one_out(
    start_proxy: Any, openai_upstream: FakeUpstream, tmp_path: Path
) -> None:
    path = write_config(tmp_path / "router.yaml", openai_upstream, ["cheap-a"])
    proxy = start_proxy(load_config(path), config_path=path)
    reload_url = proxy.url + "/v1/tierwise/admin/reload"
    assert chat(proxy.url).headers["x-tierwise-model"] == "cheap-a"

    write_config(path, openai_upstream, ["cheap-b"])
    assert httpx.post(reload_url, headers={"authorization": "Bearer wrong"}).status_code == 401
    assert chat(proxy.url).headers["x-tierwise-model"] == "cheap-a"
    done = httpx.post(reload_url, headers={"authorization": "Bearer adm-1"})
    assert done.status_code == 200 and done.json()["tiers"]["cheap"] == ["cheap-b"]
    assert chat(proxy.url).headers["x-tierwise-model"] == "cheap-b"

    path.write_text(path.read_text().replace("cheap-b", "cheap-typo", 1))
    failed = httpx.post(reload_url, headers={"x-api-key": "adm-1"})
    assert failed.status_code == 400
    assert "still serving the previous config" in failed.json()["error"]["message"]
    assert chat(proxy.url).headers["x-tierwise-model"] == "cheap-b"


def test_admin_endpoints_are_off_without_an_admin_key(
    start_proxy: Any, openai_upstream: FakeUpstream, tmp_path: Path
) -> None:
    path = write_config(tmp_path / "router.yaml", openai_upstream, ["cheap-a"], admin_key=None)
    proxy = start_proxy(load_config(path), config_path=path)
    response = httpx.post(proxy.url + "/v1/tierwise/admin/reload", headers={"authorization": "Bearer x"})
    assert response.status_code == 403 and "auth.admin_key" in response.json()["error"]["message"]


def test_sighup_reloads_a_running_server(openai_upstream: FakeUpstream, tmp_path: Path) -> None:
    path = write_config(tmp_path / "router.yaml", openai_upstream, ["cheap-a"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierwise", "serve", "--config", str(path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TIERWISE_HOME": str(tmp_path)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
        assert chat(url).headers["x-tierwise-model"] == "cheap-a"
        write_config(path, openai_upstream, ["cheap-b"])
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while chat(url).headers["x-tierwise-model"] != "cheap-b":
            assert time.monotonic() < deadline, "SIGHUP did not reload the config"
            time.sleep(0.1)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert "configuration reloaded" in stderr
