"""A bounded soak: two tierwise replicas sharing one PostgreSQL database, a fixed request rate, a fixed time.

    .venv/bin/python bench/soak.py --dsn postgresql://USER@127.0.0.1:PORT/DB [--rate 100] [--duration 600]
    .venv/bin/python bench/soak.py --start-postgres [...]     # a throwaway cluster from Debian's postgresql

On loopback: an OpenAI-shaped upstream answering after ``--upstream-ms`` (testing's FakeUpstream), two
`tierwise serve` processes (the learned router, every request recorded to the shared PostgreSQL store), and an
open-loop load generator: requests start on a fixed schedule (``--rate`` per second, alternating between the
replicas as a round-robin load balancer would), whatever the answers' latency, a share of them streamed.
First a short phase straight to the upstream at the same rate gives the latency the proxy is compared with.

It reports errors (non-200 answers, broken connections, streams that did not end with [DONE]), latency
percentiles and what the proxy added to them, each replica's memory (RSS) over the run and its growth after
the warm-up, and whether the database holds exactly one record per request sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from overhead import _cpu_model, bench_config, free_port, train_artifact, wait_http

PROMPTS = [
    "Rephrase: the quick brown fox jumps over the lazy dog.",
    "Summarise in one line: the meeting moved to Thursday because the room was booked.",
    "What is the capital of Australia?",
    "Write a Python function that reverses a string.",
    "Translate 'good morning' into French.",
    "Explain, step by step, why the sum of two odd numbers is even.",
]


def start_upstream(delay_ms: float) -> tuple[subprocess.Popen[str], int]:
    """tierwise.testing's FakeUpstream in a process of its own (it streams too), keeping no requests."""
    code = (
        "import sys, time; from tierwise.testing.upstreams import Behaviour, FakeUpstream; "
        "u = FakeUpstream('openai', record=False).start(); "
        "d = float(sys.argv[1]) / 1000; "
        "d and u.set_default(Behaviour('slow', delay_s=d)); "
        "print(u.port, flush=True); time.sleep(10**9)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(delay_ms)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    wait_http("127.0.0.1", port, "/v1/models")
    return proc, port


def start_postgres() -> tuple[str, list[str], Path]:
    """A throwaway cluster on 127.0.0.1 (Debian's postgresql), as .ci/run starts one. Returns its URL, the
    command that stops it, and its data directory (to remove afterwards)."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not bins:
        raise SystemExit("no PostgreSQL server found: apt-get install postgresql, or pass --dsn")
    pgbin = bins[-1]
    data = Path(
        tempfile.mkdtemp(prefix="tierwise-soak-pg-")
    )  # not under a private temp dir: postgres reads it
    as_pg: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        subprocess.run(["chown", "postgres", str(data)], check=True)
        as_pg = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(
        [*as_pg, str(pgbin / "initdb"), "-D", str(data), "-U", "tierwise", "--auth=trust", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data}"
    subprocess.run(
        [
            *as_pg,
            str(pgbin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(data / "log"),
            "-w",
            "-o",
            options,
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [str(pgbin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "tierwise", "soak"], check=True
    )
    stop = [*as_pg, str(pgbin / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]
    return f"postgresql://tierwise@127.0.0.1:{port}/soak", stop, data


def start_replica(
    upstream_port: int, port: int, dsn: str | None, artifact: Path, workdir: Path
) -> subprocess.Popen[bytes]:
    store = {"type": "postgres", "dsn": dsn} if dsn else {"path": str(workdir / f"records-{port}.db")}
    config = bench_config(upstream_port, store, artifact)
    path = workdir / f"replica-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tierwise", "serve", "--config", str(path), "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    wait_http("127.0.0.1", port, "/healthz")
    return proc


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def load(
    targets: list[str], rate: float, duration: float, stream_share: float, model: str
) -> dict[str, Any]:
    """Open loop: request i starts at i / rate seconds, on targets[i % len(targets)]."""
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    ids: list[str] = []
    n = int(rate * duration)
    period = max(1, round(1 / stream_share)) if stream_share > 0 else 0

    def fail(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int) -> None:
            stream = bool(period) and i % period == 0
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"{PROMPTS[i % len(PROMPTS)]} (#{i})"}],
                "stream": stream,
            }
            started = time.perf_counter()
            try:
                async with session.post(targets[i % len(targets)] + "/v1/chat/completions", json=body) as r:
                    payload = await r.read()
                    if r.status != 200:
                        fail(f"HTTP {r.status}")
                        return
                    if stream and not payload.rstrip().endswith(b"data: [DONE]"):
                        fail("stream without [DONE]")
                        return
                    if rid := r.headers.get("x-tierwise-request-id"):
                        ids.append(rid)
            except (aiohttp.ClientError, TimeoutError) as exc:
                fail(exc.__class__.__name__)
                return
            latencies.append((time.perf_counter() - started) * 1000)

        start = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"sent": n, "ok": len(latencies), "errors": errors, "latencies": latencies, "ids": ids,
            "elapsed_s": elapsed}  # fmt: skip


def percentiles(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=100)
    return {"p50_ms": statistics.median(values), "p90_ms": q[89], "p99_ms": q[98]}


def count_records(dsn: str, ids: list[str]) -> dict[str, int]:
    import psycopg

    with psycopg.connect(dsn) as db:
        total = db.execute("SELECT count(*) FROM records").fetchone()
        distinct = db.execute(
            "SELECT count(DISTINCT request_id) FROM records WHERE request_id = ANY(%s)", (ids,)
        ).fetchone()
    return {
        "records": int(total[0]) if total else 0,
        "answered_ids_recorded": int(distinct[0]) if distinct else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="a PostgreSQL database to write the records to (emptied first)")
    parser.add_argument("--start-postgres", action="store_true", help="start a throwaway cluster instead")
    parser.add_argument(
        "--sqlite", action="store_true", help="for comparison: each replica its own SQLite file, no database"
    )
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second, both replicas")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before memory growth counts")
    parser.add_argument("--direct-duration", type=float, default=20.0, help="seconds of the direct phase")
    parser.add_argument("--stream-share", type=float, default=0.3)
    parser.add_argument("--upstream-ms", type=float, default=0.0, help="the upstream's answer delay")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--train-data",
        type=Path,
        default=Path(__file__).parents[2] / "shared" / "data" / "llmrouter-train.jsonl",
    )
    args = parser.parse_args()
    if sum(map(bool, (args.dsn, args.start_postgres, args.sqlite))) != 1:
        parser.error("give one of --dsn, --start-postgres or --sqlite")

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        stop_pg: list[str] | None = None
        pg_data: Path | None = None
        dsn = args.dsn
        if args.start_postgres:
            dsn, stop_pg, pg_data = start_postgres()
        procs: list[subprocess.Popen[Any]] = []
        try:
            upstream, up_port = start_upstream(args.upstream_ms)
            procs.append(upstream)
            artifact = train_artifact(args.train_data, workdir)
            ports = [free_port(), free_port()]
            replicas = [start_replica(up_port, p, dsn, artifact, workdir) for p in ports]
            procs += replicas

            direct = asyncio.run(
                load([f"http://127.0.0.1:{up_port}"], args.rate, args.direct_duration, 0.0, "cheap-a")
            )
            memory: list[dict[str, Any]] = []

            async def sample() -> None:
                start = time.perf_counter()
                while True:
                    memory.append(
                        {
                            "t_s": round(time.perf_counter() - start, 1),
                            "rss_mb": [round(rss_mb(r.pid), 1) for r in replicas],
                            "load_avg_1m": round(os.getloadavg()[0], 2),
                        }
                    )
                    await asyncio.sleep(5)

            async def run() -> dict[str, Any]:
                sampler = asyncio.create_task(sample())
                try:
                    return await load(
                        [f"http://127.0.0.1:{p}" for p in ports],
                        args.rate,
                        args.duration,
                        args.stream_share,
                        "tierwise/auto",
                    )
                finally:
                    sampler.cancel()

            soak = asyncio.run(run())
            time.sleep(2)  # the replicas' writers flush every 0.2 s
            stored = count_records(dsn, soak["ids"]) if dsn else {}
        finally:
            for proc in reversed(procs):
                proc.terminate()
                proc.wait(30)
            if stop_pg:
                subprocess.run(stop_pg, check=False, stdout=subprocess.DEVNULL)
            if pg_data is not None:
                shutil.rmtree(pg_data, ignore_errors=True)

    after = [m for m in memory if m["t_s"] >= args.warmup] or memory
    growth = [after[-1]["rss_mb"][i] - after[0]["rss_mb"][i] for i in range(2)]
    direct_p = percentiles(direct["latencies"])
    soak_p = percentiles(soak["latencies"])
    result = {
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "python": platform.python_version()},
        "rate_per_s": args.rate,
        "duration_s": args.duration,
        "stream_share": args.stream_share,
        "upstream_ms": args.upstream_ms,
        "replicas": 2,
        "sent": soak["sent"],
        "answered": soak["ok"],
        "errors": soak["errors"],
        "achieved_rate_per_s": soak["sent"] / soak["elapsed_s"],
        "direct": direct_p,
        "through_tierwise": soak_p,
        "added_p50_ms": soak_p["p50_ms"] - direct_p["p50_ms"],
        "added_p99_ms": soak_p["p99_ms"] - direct_p["p99_ms"],
        "rss_mb_after_warmup": after[0]["rss_mb"],
        "rss_mb_at_end": after[-1]["rss_mb"],
        "rss_growth_mb": growth,
        # Other work on the machine meanwhile: the 1-minute load average over the run (2 cores).
        "load_avg_1m": {
            "min": min(m["load_avg_1m"] for m in memory),
            "max": max(m["load_avg_1m"] for m in memory),
        },
        "memory_samples": memory,
        **stored,
    }
    shown = {k: v for k, v in result.items() if k != "memory_samples"}
    print(json.dumps(shown, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
