"""What the proxy adds: latency and throughput, direct to an instant upstream versus through tierwise.

    .venv/bin/python bench/overhead.py [--requests 2000] [--duration 10] [--concurrency 50] [--json OUT]

Three processes on loopback: an OpenAI-shaped upstream that answers at once (tierwise.testing's FakeUpstream),
the proxy (`tierwise serve`, rules routing, records written to SQLite), and the load generator. Sequential
latency uses one keep-alive connection; throughput is closed-loop at a fixed concurrency, measured with wrk
when it is installed (Debian: apt-get install wrk) and with an asyncio client otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

BODY_AUTO = {
    "model": "tierwise/auto",
    "messages": [{"role": "user", "content": "Rephrase: the quick brown fox."}],
}
BODY_DIRECT = {**BODY_AUTO, "model": "cheap-a"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(host: str, port: int, path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                conn.close()
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answered on {host}:{port}{path}")


def start_upstream() -> tuple[subprocess.Popen[str], int]:
    code = (
        "import time; from tierwise.testing.upstreams import FakeUpstream; "
        "u = FakeUpstream('openai').start(); print(u.port, flush=True); time.sleep(10**9)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    wait_http("127.0.0.1", port, "/v1/models")
    return proc, port


def train_artifact(data: Path, workdir: Path) -> Path:
    """A learned router trained on a shared routing eval set (its three suggested tiers)."""
    from tierwise.classify.artifact import save_router
    from tierwise.classify.learned import LearnedRouter
    from tierwise.evals.dataset import load_records
    from tierwise.evals.metrics import OutcomeTable

    models = ["gemma-2-9b-it", "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct"]
    records = load_records(data)
    router = LearnedRouter().fit(records, OutcomeTable.from_records(records, models))
    return save_router(router, workdir / "router.tw")


def bench_config(upstream_port: int, store: dict[str, Any], artifact: Path | None = None) -> dict[str, Any]:
    """The benches' tierwise config: three one-model tiers on the loopback upstream, ``store`` as the store
    section, and with ``artifact`` the learned router on it (threshold 0.8)."""
    price = {"input_per_mtok": 1.0, "output_per_mtok": 1.0}
    config: dict[str, Any] = {
        "providers": {"up": {"type": "openai", "base_url": f"http://127.0.0.1:{upstream_port}/v1"}},
        "models": {name: {"provider": "up", "price": price} for name in ("cheap-a", "mid-a", "premium-a")},
        "tiers": {"cheap": ["cheap-a"], "mid": ["mid-a"], "premium": ["premium-a"]},
        "store": store,
    }
    if artifact is not None:
        config["routing"] = {"classifier": {"type": "learned", "artifact": str(artifact), "threshold": 0.8}}
    return config


def start_proxy(
    upstream_port: int, port: int, workdir: Path, artifact: Path | None = None, workers: int = 1
) -> subprocess.Popen[bytes]:
    config = bench_config(upstream_port, {"path": str(workdir / "records.db")}, artifact)
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "tierwise", "serve", "--config", str(path), "--port", str(port)]
    proc = subprocess.Popen(
        [*cmd, "--workers", str(workers)],
        stderr=subprocess.DEVNULL,
    )
    wait_http("127.0.0.1", port, "/healthz")
    return proc


def sequential(port: int, path: str, body: dict[str, Any], n: int) -> list[float]:
    payload = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for i in range(n + 200):
        start = time.perf_counter()
        conn.request("POST", path, payload, headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        if i >= 200:  # warm-up
            times.append((time.perf_counter() - start) * 1000)
    conn.close()
    return times


WRK_SCRIPT = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""


def throughput_wrk(
    port: int, path: str, body: dict[str, Any], concurrency: int, duration: int
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT.format(body=json.dumps(json.dumps(body))))
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{duration}s",
            "--latency",
            "-s",
            f.name,
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "non_2xx": int(errors.group(1)) if errors else 0, "client": "wrk"}


async def _closed_loop(
    port: int, path: str, body: dict[str, Any], concurrency: int, duration: int
) -> dict[str, Any]:
    import aiohttp

    payload = json.dumps(body).encode()
    done = errors = 0
    stop = time.perf_counter() + duration
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop:
                async with session.post(
                    f"http://127.0.0.1:{port}{path}",
                    data=payload,
                    headers={"content-type": "application/json"},
                ) as r:
                    await r.read()
                    done += 1
                    errors += r.status != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"rps": done / elapsed, "non_2xx": errors, "client": "python-aiohttp"}


def throughput(port: int, path: str, body: dict[str, Any], concurrency: int, duration: int) -> dict[str, Any]:
    if shutil.which("wrk"):
        return throughput_wrk(port, path, body, concurrency, duration)
    return asyncio.run(_closed_loop(port, path, body, concurrency, duration))


def summary(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=100)
    return {"median_ms": statistics.median(times), "p99_ms": q[98]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--router", choices=("rules", "learned"), default="rules")
    parser.add_argument(
        "--train-data",
        type=Path,
        default=Path(__file__).parents[2] / "shared" / "data" / "llmrouter-train.jsonl",
        help="for --router learned: the set the router is trained on",
    )
    parser.add_argument("--workers", type=int, default=1, help="tierwise serve --workers")
    args = parser.parse_args()

    proxy_port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        upstream, up_port = start_upstream()
        artifact = train_artifact(args.train_data, Path(tmp)) if args.router == "learned" else None
        proxy = start_proxy(up_port, proxy_port, Path(tmp), artifact, args.workers)
        try:
            direct_lat = summary(sequential(up_port, "/v1/chat/completions", BODY_DIRECT, args.requests))
            proxy_lat = summary(sequential(proxy_port, "/v1/chat/completions", BODY_AUTO, args.requests))
            direct_tp = throughput(
                up_port, "/v1/chat/completions", BODY_DIRECT, args.concurrency, args.duration
            )
            proxy_tp = throughput(
                proxy_port, "/v1/chat/completions", BODY_AUTO, args.concurrency, args.duration
            )
        finally:
            proxy.terminate()
            proxy.wait(30)
            upstream.terminate()
            upstream.wait(10)
        records = _count_records(Path(tmp) / "records.db")

    result = {
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "python": platform.python_version()},
        "router": args.router,
        "workers": args.workers,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "direct": {**direct_lat, **direct_tp},
        "tierwise": {**proxy_lat, **proxy_tp},
        "added_median_ms": proxy_lat["median_ms"] - direct_lat["median_ms"],
        "added_p99_ms": proxy_lat["p99_ms"] - direct_lat["p99_ms"],
        "records_written": records,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def _count_records(path: Path) -> int:
    """Records in a bench's SQLite store (0 when it was never created)."""
    import sqlite3

    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM records").fetchone()[0])
    finally:
        db.close()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
