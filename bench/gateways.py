"""Speed against the gateways: tierwise beside an aiohttp pass-through, LiteLLM's proxy, Portkey's gateway.

    .venv/bin/python bench/gateways.py [--install] [--rounds 3] [--requests 2000] [--duration 10]
                                       [--concurrency 10 50] [--json OUT]

One session, one machine, one loopback upstream that answers at once (tierwise.testing's FakeUpstream with
record=False, or with ``--upstream instant`` bench/instant_upstream.py), and these ways to reach it:

  (a) direct to the upstream;
  (b) bench/passthrough.py: aiohttp server + one pooled aiohttp ClientSession, the floor for a Python proxy;
  (c) tierwise (`tierwise serve`): the learned router (knn, trained here on llmrouter-train, threshold 0.8)
      on ``tierwise/auto``, every request recorded to SQLite;
  (d) LiteLLM's proxy (litellm[proxy]==1.74.9 in its own venv), offline: local model cost map, telemetry
      off, no callbacks, access and library logs off, one uvicorn worker;
  (e) Portkey's open-source gateway (@portkey-ai/gateway from npm, on node, --headless), sent to the
      upstream with x-portkey-provider: openai and x-portkey-custom-host;
  (f) a diagnostic: (c) again with OPENBLAS_NUM_THREADS=1 in its environment (not a tierwise setting);
  (g) (c) with two worker processes (`tierwise serve --workers 2`);
  (h) (d) with two worker processes (`litellm --num_workers 2`), to compare (g) with.

LiteLLM and Portkey are installed (into --litellm-venv and --portkey-dir) only when ``--install`` is given;
otherwise a missing one is skipped with a message saying how to get it. Everything but those installs stays
on 127.0.0.1.

Per gateway and round: sequential latency (``--requests`` requests on one keep-alive connection after
``--warmup``), then closed-loop throughput at each ``--concurrency`` for ``--duration`` seconds (wrk when
installed, else an asyncio client; a 2-second unrecorded run first), and the CPU time the gateway's processes
used per request in the throughput runs. Rounds go through the gateways in a rotated order; the summary is the
median over rounds. Added latency is the gateway's figure minus (a)'s in the same round; ratios are to (b).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from overhead import _count_records, _cpu_model, bench_config, free_port, train_artifact  # shared

HERE = Path(__file__).resolve().parent
LITELLM_SPEC = "litellm[proxy]==1.74.9"
PORTKEY_SPEC = "@portkey-ai/gateway@1.15.2"
PROMPT = "Rephrase: the quick brown fox."
PATH = "/v1/chat/completions"
JSON_CT = {"Content-Type": "application/json"}
TICKS = os.sysconf("SC_CLK_TCK")

# Issue 8's targets.
TARGET_LATENCY_RATIO = 1.3  # tierwise's added median latency within 1.3x the pass-through's
TARGET_RPS_C50 = 2500.0  # req/s at concurrency 50 on 2 cores
TARGET_VS_LITELLM = 10.0  # 10x LiteLLM's throughput


def body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}]}


# ---------------------------------------------------------------- processes


def wait_http(port: int, path: str, timeout: float, procs: list[subprocess.Popen[Any]]) -> None:
    """Until anything below a 500 answers GET path, or raise (also when a process has died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before answering")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path} within {timeout:.0f} s")


def spawn(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,  # a signal to the bench does not reach it; we stop it ourselves
        )


def stop(proc: subprocess.Popen[Any], grace: float = 30.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def proc_tree(pid: int) -> list[int]:
    """pid and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


# ---------------------------------------------------------------- the gateways


@dataclass
class Gateway:
    key: str
    label: str
    port: int
    model: str
    headers: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)
    version: str = ""
    note: str = ""

    def pids(self) -> list[int]:
        return [pid for proc in self.procs for pid in proc_tree(proc.pid)]


def start_upstream(kind: str, workdir: Path) -> Gateway:
    port = free_port()
    if kind == "fake":
        code = (
            "import time; from tierwise.testing.upstreams import FakeUpstream; "
            "u = FakeUpstream('openai', record=False).start(); print(u.port, flush=True); time.sleep(10**9)"
        )
        proc: subprocess.Popen[Any] = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        label, version = (
            "direct to the upstream (FakeUpstream, record=False)",
            "tierwise.testing.FakeUpstream",
        )
    else:
        cmd = [sys.executable, str(HERE / "instant_upstream.py"), "--port", str(port)]
        proc = spawn(cmd, workdir / "upstream.log")
        label, version = "direct to the upstream (bench/instant_upstream.py)", "bench/instant_upstream.py"
    wait_http(port, "/v1/models", 20, [proc])
    return Gateway("a", label, port, "cheap-a", procs=[proc], version=version)


def start_passthrough(upstream: int, workdir: Path) -> Gateway:
    port = free_port()
    cmd = [
        sys.executable,
        str(HERE / "passthrough.py"),
        "--port",
        str(port),
        "--upstream",
        f"http://127.0.0.1:{upstream}",
    ]
    proc = spawn(cmd, workdir / "passthrough.log")
    wait_http(port, "/", 20, [proc])
    import aiohttp

    return Gateway(
        "b", "aiohttp pass-through (the floor)", port, "cheap-a", procs=[proc], version=aiohttp.__version__
    )


def start_tierwise(upstream: int, workdir: Path, artifact: Path, key: str = "c") -> Gateway:
    """``key`` "c": tierwise as it ships. "f": the same with OPENBLAS_NUM_THREADS=1 (a diagnostic row: the
    knn router's matrix-vector products otherwise go through OpenBLAS's thread pool, see the README). "g":
    the same with two worker processes."""
    port = free_port()
    config = bench_config(upstream, {"path": str(workdir / f"records-{key}.db")}, artifact)
    path = workdir / f"tierwise-{key}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ)
    label, note = "tierwise, learned router, records on", "as it ships: one uvicorn worker"
    if key == "f":
        env["OPENBLAS_NUM_THREADS"] = "1"
        label = "tierwise as (c), OPENBLAS_NUM_THREADS=1 (diagnostic)"
        note = "not a tierwise setting: shows what a one-thread BLAS would give"
    cmd = [sys.executable, "-m", "tierwise", "serve", "--config", str(path), "--port", str(port)]
    if key == "g":
        cmd += ["--workers", "2"]
        label, note = "tierwise as (c), 2 worker processes", "tierwise serve --workers 2"
    proc = spawn(cmd, workdir / f"tierwise-{key}.log", env=env)
    wait_http(port, "/healthz", 60, [proc])
    from tierwise import __version__

    return Gateway(
        key, label, port, "tierwise/auto", procs=[proc], version=f"{__version__} ({_git_head()})", note=note
    )


def start_litellm(venv: Path, upstream: int, workdir: Path, workers: int = 1) -> Gateway:
    port = free_port()
    config = {
        "model_list": [
            {
                "model_name": "cheap-a",
                "litellm_params": {
                    "model": "openai/cheap-a",
                    "api_base": f"http://127.0.0.1:{upstream}/v1",
                    "api_key": "sk-unused",
                },
            }
        ],
        "litellm_settings": {
            "telemetry": False,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
            "set_verbose": False,
            "json_logs": False,
        },
        "general_settings": {"disable_spend_logs": True},
    }
    (workdir / "litellm.yaml").write_text(yaml.safe_dump(config))
    # uvicorn's access log and LiteLLM's per-request INFO lines off: a logging config that drops them.
    null = {"handlers": ["null"], "level": "WARNING", "propagate": False}
    log_config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"null": {"class": "logging.NullHandler"}},
        "root": {"handlers": ["null"], "level": "WARNING"},
        "loggers": {name: null for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }
    (workdir / "litellm-log.json").write_text(json.dumps(log_config))
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
    }
    cmd = [
        str(venv / "bin" / "litellm"),
        "--config",
        str(workdir / "litellm.yaml"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        str(workers),
        "--telemetry",
        "False",
        "--log_config",
        str(workdir / "litellm-log.json"),
    ]
    proc = spawn(cmd, workdir / f"litellm-{workers}.log", env=env, cwd=workdir)
    wait_http(port, "/health/liveliness", 120, [proc])
    return Gateway(
        "d" if workers == 1 else "h",
        "LiteLLM proxy" if workers == 1 else "LiteLLM proxy, 2 worker processes",
        port,
        "cheap-a",
        procs=[proc],
        version=_pip_version(venv, "litellm"),
        note=f"{workers} uvicorn worker{'s' if workers > 1 else ''}, offline, callbacks and logs off",
    )


def start_portkey(directory: Path, upstream: int, workdir: Path) -> Gateway:
    port = free_port()
    package = directory / "node_modules" / "@portkey-ai" / "gateway"
    cmd = ["node", str(package / "build" / "start-server.js"), f"--port={port}", "--headless"]
    proc = spawn(cmd, workdir / "portkey.log", cwd=directory)
    wait_http(port, "/", 60, [proc])
    version = json.loads((package / "package.json").read_text())["version"]
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    headers = {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://127.0.0.1:{upstream}/v1",
        "Authorization": "Bearer sk-unused",
    }
    return Gateway(
        "e",
        "Portkey gateway",
        port,
        "cheap-a",
        headers=headers,
        procs=[proc],
        version=f"{version} (node {node})",
        note="--headless, one node process",
    )


def install_litellm(venv: Path) -> None:
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", LITELLM_SPEC], check=True)


def install_portkey(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "package.json").exists():
        (directory / "package.json").write_text('{"name": "portkey-bench", "private": true}\n')
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", PORTKEY_SPEC], cwd=directory, check=True)


# ---------------------------------------------------------------- measurements


def check_answer(gw: Gateway) -> dict[str, Any]:
    """One request: it must be a 200 chat.completion whose answer came from the upstream."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.request("POST", PATH, json.dumps(body(gw.model)).encode(), {**JSON_CT, **gw.headers})
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    if response.status != 200:
        raise RuntimeError(f"({gw.key}) {gw.label}: HTTP {response.status}: {raw[:300]!r}")
    data = json.loads(raw)
    content = data["choices"][0]["message"]["content"]
    if "says:" not in content:
        raise RuntimeError(f"({gw.key}) {gw.label}: unexpected answer {content!r}")
    return {"answer_bytes": len(raw), "answer_model": data.get("model"), "content": content}


def sequential(gw: Gateway, n: int, warmup: int) -> list[float]:
    payload = json.dumps(body(gw.model)).encode()
    headers = {**JSON_CT, **gw.headers}
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    times = []
    for i in range(n + warmup):
        start = time.perf_counter()
        conn.request("POST", PATH, payload, headers)
        response = conn.getresponse()
        response.read()
        elapsed = time.perf_counter() - start
        if response.status != 200:
            raise RuntimeError(f"({gw.key}) HTTP {response.status}")
        if i >= warmup:
            times.append(elapsed * 1000)
    conn.close()
    return times


def _lua(gw: Gateway) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body(gw.model)))}"]
    for name, value in {**JSON_CT, **gw.headers}.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def _wrk(gw: Gateway, concurrency: int, duration: float, script: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{duration:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{gw.port}{PATH}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if rps is None or total is None:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "requests": int(total.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
    }


async def _closed_loop(gw: Gateway, concurrency: int, duration: float) -> dict[str, Any]:
    import aiohttp

    payload = json.dumps(body(gw.model)).encode()
    headers = {**JSON_CT, **gw.headers}
    done = errors = 0
    url = f"http://127.0.0.1:{gw.port}{PATH}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop_at:
                async with session.post(url, data=payload, headers=headers) as r:
                    await r.read()
                    done += 1
                    errors += r.status != 200

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {"rps": done / elapsed, "requests": done, "non_2xx": errors, "socket_errors": 0}


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


def own_cpu() -> float:
    """CPU seconds of this process and its waited-for children (the load generator)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def throughput(
    gw: Gateway, concurrency: int, duration: float, workdir: Path, everyone: list[int]
) -> dict[str, Any]:
    """A 2-second unrecorded run, then the measured one, with the gateway's CPU time per request and the CPU
    that processes outside the bench took meanwhile (``everyone``: the pids of all started servers)."""
    if shutil.which("wrk"):
        script = workdir / f"wrk-{gw.key}.lua"
        script.write_text(_lua(gw))

        def run(d: float) -> dict[str, Any]:
            return _wrk(gw, concurrency, d, script)

        client = "wrk -t1"
    else:

        def run(d: float) -> dict[str, Any]:
            return asyncio.run(_closed_loop(gw, concurrency, d))

        client = "python-aiohttp"
    warm = run(2)
    pids = gw.pids()
    cpu0, all0, busy0, own0 = cpu_seconds(pids), cpu_seconds(everyone), machine_busy(), own_cpu()
    start = time.perf_counter()
    result = run(duration)
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(pids) - cpu0
    ours = cpu_seconds(everyone) - all0 + own_cpu() - own0
    result["cpu_ms_per_request"] = 1000 * cpu / max(result["requests"], 1)
    result["cpu_cores_used"] = cpu / elapsed
    result["other_processes_cores"] = max(0.0, machine_busy() - busy0 - ours) / elapsed
    result["warmup_requests"] = warm["requests"]
    result["client"] = client
    return result


def idle_cpu(gateways: dict[str, Gateway], everyone: list[int], span: float) -> dict[str, float]:
    """Cores each started server uses while nobody sends it anything, and what other processes use."""
    before = {key: cpu_seconds(gw.pids()) for key, gw in gateways.items()}
    all0, busy0, own0 = cpu_seconds(everyone), machine_busy(), own_cpu()
    time.sleep(span)
    out = {key: (cpu_seconds(gw.pids()) - before[key]) / span for key, gw in gateways.items()}
    ours = cpu_seconds(everyone) - all0 + own_cpu() - own0
    out["other processes"] = max(0.0, machine_busy() - busy0 - ours) / span
    return out


def summary(times: list[float]) -> dict[str, float]:
    q = statistics.quantiles(times, n=100)
    return {"median_ms": statistics.median(times), "p99_ms": q[98]}


# ---------------------------------------------------------------- report


def aggregate(rounds: list[dict[str, dict[str, Any]]], keys: list[str], levels: list[int]) -> dict[str, Any]:
    """Medians over rounds; added latency is per round against (a) before the median is taken."""
    out: dict[str, Any] = {}
    for key in keys:
        per = [r[key] for r in rounds if key in r]
        if not per:
            continue
        row: dict[str, Any] = {
            "median_ms": statistics.median(p["median_ms"] for p in per),
            "p99_ms": statistics.median(p["p99_ms"] for p in per),
            "added_median_ms": statistics.median(
                p["median_ms"] - a["median_ms"] for p, a in _pairs(rounds, key)
            ),
            "added_p99_ms": statistics.median(p["p99_ms"] - a["p99_ms"] for p, a in _pairs(rounds, key)),
        }
        for c in levels:
            row[f"rps_c{c}"] = statistics.median(p[f"c{c}"]["rps"] for p in per)
            row[f"cpu_ms_per_request_c{c}"] = statistics.median(p[f"c{c}"]["cpu_ms_per_request"] for p in per)
            row[f"non_2xx_c{c}"] = sum(p[f"c{c}"]["non_2xx"] + p[f"c{c}"]["socket_errors"] for p in per)
            row[f"other_processes_cores_c{c}"] = statistics.median(
                p[f"c{c}"]["other_processes_cores"] for p in per
            )
        out[key] = row
    floor = out.get("b")
    if floor:
        for row in out.values():
            row["added_median_vs_b"] = _ratio(row["added_median_ms"], floor["added_median_ms"])
            row["added_p99_vs_b"] = _ratio(row["added_p99_ms"], floor["added_p99_ms"])
            for c in levels:
                row[f"rps_c{c}_vs_b"] = _ratio(row[f"rps_c{c}"], floor[f"rps_c{c}"])
    return out


def _pairs(
    rounds: list[dict[str, dict[str, Any]]], key: str
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for r in rounds:
        if key in r:
            yield r[key], r["a"]


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def targets(
    agg: dict[str, Any], levels: list[int], key: str = "c", litellm: str = "d"
) -> list[dict[str, Any]]:
    """Issue 8's targets for tierwise (``key`` c; f for the diagnostic row; g, two workers, against LiteLLM's
    row ``litellm``)."""
    tw, floor, ll = agg.get(key), agg.get("b"), agg.get(litellm)
    out: list[dict[str, Any]] = []
    if tw and floor:
        ratio = tw["added_median_vs_b"]
        out.append(
            {
                "target": f"tierwise's added median latency <= {TARGET_LATENCY_RATIO}x the pass-through's",
                "value": ratio,
                "detail": f"{tw['added_median_ms']:.2f} ms vs {floor['added_median_ms']:.2f} ms",
                "met": ratio is not None and ratio <= TARGET_LATENCY_RATIO,
            }
        )
    if tw and 50 in levels:
        out.append(
            {
                "target": f"tierwise >= {TARGET_RPS_C50:,.0f} req/s at c=50 on {os.cpu_count()} cores",
                "value": tw["rps_c50"],
                "detail": f"{tw['rps_c50']:,.0f} req/s",
                "met": tw["rps_c50"] >= TARGET_RPS_C50,
            }
        )
    if tw and ll:
        for c in levels:
            ratio = _ratio(tw[f"rps_c{c}"], ll[f"rps_c{c}"])
            out.append(
                {
                    "target": f"tierwise >= {TARGET_VS_LITELLM:g}x LiteLLM's throughput at concurrency {c}",
                    "value": ratio,
                    "detail": f"{tw[f'rps_c{c}']:,.0f} vs {ll[f'rps_c{c}']:,.0f} req/s",
                    "met": ratio is not None and ratio >= TARGET_VS_LITELLM,
                }
            )
    elif tw:
        out.append(
            {
                "target": "tierwise >= 10x LiteLLM's throughput",
                "value": None,
                "met": None,
                "detail": "LiteLLM was not run",
            }
        )
    return out


def table(agg: dict[str, Any], labels: dict[str, str], levels: list[int]) -> str:
    def f(x: float | None, spec: str) -> str:
        return "—" if x is None else format(x, spec) + "×"

    head = ["", "median", "p99", "added median", "added p99", "added median vs (b)"]
    for c in levels:
        head += [f"req/s c={c}", "vs (b)", f"CPU/req c={c}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, row in agg.items():
        cells = [
            f"({key}) {labels[key]}",
            f"{row['median_ms']:.2f} ms",
            f"{row['p99_ms']:.2f} ms",
            "—" if key == "a" else f"{row['added_median_ms']:.2f} ms",
            "—" if key == "a" else f"{row['added_p99_ms']:.2f} ms",
            "—" if key == "a" else f(row.get("added_median_vs_b"), ".2f"),
        ]
        for c in levels:
            cells += [
                f"{row[f'rps_c{c}']:,.0f}",
                f(row.get(f"rps_c{c}_vs_b"), ".2f"),
                f"{row[f'cpu_ms_per_request_c{c}']:.2f} ms",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--requests", type=int, default=2000, help="sequential requests per gateway and round"
    )
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--duration", type=float, default=10, help="seconds per throughput run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--upstream", choices=("fake", "instant"), default="fake")
    parser.add_argument("--only", default="abcdefgh", help="which gateways to run, e.g. abc")
    parser.add_argument("--install", action="store_true", help="install LiteLLM and Portkey if missing")
    parser.add_argument("--litellm-venv", type=Path, default=Path("/tmp/venv-litellm"))
    parser.add_argument("--portkey-dir", type=Path, default=Path("/tmp/portkey"))
    parser.add_argument(
        "--train-data",
        type=Path,
        default=HERE.parent.parent / "shared" / "data" / "llmrouter-train.jsonl",
        help="the set tierwise's learned router is trained on",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep configs, logs and the records here")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    levels: list[int] = args.concurrency

    skipped: dict[str, str] = {}
    litellm_bin = args.litellm_venv / "bin" / "litellm"
    portkey_js = args.portkey_dir / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if ("d" in args.only or "h" in args.only) and not litellm_bin.exists():
        if args.install:
            print(f"installing {LITELLM_SPEC} into {args.litellm_venv} ...", file=sys.stderr)
            install_litellm(args.litellm_venv)
        else:
            for key in ("d", "h"):
                skipped[key] = (
                    f"LiteLLM ({key}) skipped: {litellm_bin} not found; run with --install to pip-install "
                    f"{LITELLM_SPEC!r} into {args.litellm_venv}"
                )
    if "e" in args.only and not portkey_js.exists():
        if not shutil.which("node") or not shutil.which("npm"):
            skipped["e"] = "Portkey skipped: node and npm are needed"
        elif args.install:
            print(f"installing {PORTKEY_SPEC} into {args.portkey_dir} ...", file=sys.stderr)
            try:
                install_portkey(args.portkey_dir)
            except subprocess.CalledProcessError as exc:
                skipped["e"] = f"Portkey skipped: npm install failed ({exc})"
        else:
            skipped["e"] = (
                f"Portkey skipped: {portkey_js} not found; run with --install to npm-install "
                f"{PORTKEY_SPEC} into {args.portkey_dir}"
            )
    for message in skipped.values():
        print(message, file=sys.stderr)

    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tw-gateways-")))
        gateways: dict[str, Gateway] = {}

        def cleanup() -> None:
            for gw in reversed(list(gateways.values())):
                for proc in gw.procs:
                    stop(proc)

        stack.callback(cleanup)
        started = time.monotonic()
        up = start_upstream(args.upstream, workdir)
        gateways["a"] = up
        artifact: list[Path] = []

        def tierwise(key: str) -> Gateway:
            if not artifact:
                print(f"training the learned router on {args.train_data} ...", file=sys.stderr)
                artifact.append(train_artifact(args.train_data, workdir))
            return start_tierwise(up.port, workdir, artifact[0], key)

        starters: dict[str, Callable[[], Gateway]] = {
            "b": lambda: start_passthrough(up.port, workdir),
            "c": lambda: tierwise("c"),
            "d": lambda: start_litellm(args.litellm_venv, up.port, workdir),
            "e": lambda: start_portkey(args.portkey_dir, up.port, workdir),
            "f": lambda: tierwise("f"),
            "g": lambda: tierwise("g"),
            "h": lambda: start_litellm(args.litellm_venv, up.port, workdir, workers=2),
        }
        for key, start in starters.items():
            if key not in args.only or key in skipped:
                continue
            try:
                gateways[key] = start()
                print(f"({key}) {gateways[key].label}: port {gateways[key].port}", file=sys.stderr)
            except Exception as exc:  # one gateway that fails to start must not sink the others
                if key == "c":
                    raise
                skipped[key] = f"{key} skipped: it did not start ({exc}); see its log in --keep"
                print(skipped[key], file=sys.stderr)
        checks = {key: check_answer(gw) for key, gw in gateways.items()}
        everyone = [pid for gw in gateways.values() for pid in gw.pids()]
        idle = idle_cpu(gateways, everyone, 5.0)
        print(
            "idle CPU (cores): "
            + ", ".join(f"({k}) {v:.3f}" for k, v in idle.items() if k != "other processes")
            + f"; other processes on the machine {idle['other processes']:.2f}",
            file=sys.stderr,
        )
        load_before = os.getloadavg()

        rounds: list[dict[str, dict[str, Any]]] = []
        order = list(gateways)
        for i in range(args.rounds):
            rotated = order[i % len(order) :] + order[: i % len(order)]
            result: dict[str, dict[str, Any]] = {}
            for key in rotated:
                gw = gateways[key]
                lat = summary(sequential(gw, args.requests, args.warmup))
                row: dict[str, Any] = dict(lat)
                for c in levels:
                    row[f"c{c}"] = throughput(gw, c, args.duration, workdir, everyone)
                result[key] = row
                print(
                    f"round {i + 1}/{args.rounds} ({key}): median {lat['median_ms']:.2f} ms, p99 "
                    f"{lat['p99_ms']:.2f} ms, "
                    + ", ".join(
                        f"c={c} {row[f'c{c}']['rps']:,.0f} req/s "
                        f"(CPU {row[f'c{c}']['cpu_ms_per_request']:.2f} ms/req; "
                        f"others busy {row[f'c{c}']['other_processes_cores']:.2f} cores)"
                        for c in levels
                    ),
                    file=sys.stderr,
                )
            rounds.append(result)
        load_after = os.getloadavg()
        elapsed = time.monotonic() - started
        cleanup()
        written = {k: _count_records(workdir / f"records-{k}.db") for k in ("c", "f", "g") if k in gateways}

    agg = aggregate(rounds, list(gateways), levels)
    labels = {key: gw.label for key, gw in gateways.items()}
    records = {key: completed(rounds, key, levels, args) | {"written": written[key]} for key in written}
    result_doc: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in load_after],
            "idle_cpu_cores": {k: round(v, 4) for k, v in idle.items()},
        },
        "settings": {
            "rounds": args.rounds,
            "sequential_requests": args.requests,
            "warmup": args.warmup,
            "duration_s": args.duration,
            "concurrency": levels,
            "upstream": args.upstream,
            "load_generator": "wrk -t1" if shutil.which("wrk") else "python-aiohttp",
            "prompt": PROMPT,
        },
        "gateways": {
            key: {
                "label": gw.label,
                "version": gw.version,
                "note": gw.note,
                "model": gw.model,
                "check": checks[key],
            }
            for key, gw in gateways.items()
        },
        "skipped": skipped,
        "summary": agg,
        "targets": targets(agg, levels),
        "targets_diagnostic_f": targets(agg, levels, "f") if "f" in agg else [],
        # Two workers each: tierwise (g) against the pass-through and against LiteLLM with two workers (h).
        "targets_two_workers_g": targets(agg, levels, "g", "h") if "g" in agg else [],
        "tierwise_records": records,
        "rounds": rounds,
        "elapsed_s": round(elapsed, 1),
    }
    print(table(agg, labels, levels))
    print()
    for which, tag in (
        ("targets", ""),
        ("targets_diagnostic_f", " [(f), diagnostic]"),
        ("targets_two_workers_g", " [(g) against (h): two workers each]"),
    ):
        for t in result_doc[which]:
            status = {True: "MET", False: "MISSED", None: "NOT MEASURED"}[t["met"]]
            print(f"{status:>12}  {t['target']}{tag}: {t['detail']}")
    for message in skipped.values():
        print(f"     SKIPPED  {message}")
    for key, rec in records.items():
        print(
            f"({key}) tierwise wrote {rec['written']:,} records for {rec['completed']:,} completed requests"
        )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} cores)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result_doc, indent=2) + "\n")


def completed(
    rounds: list[dict[str, dict[str, Any]]], key: str, levels: list[int], args: argparse.Namespace
) -> dict[str, int]:
    """Requests a gateway answered: the check, sequential with its warm-up, and the throughput runs with
    theirs (wrk counts completed requests; a few more may be in flight when it stops)."""
    n = 1
    for r in rounds:
        n += args.requests + args.warmup
        n += sum(r[key][f"c{c}"]["requests"] + r[key][f"c{c}"]["warmup_requests"] for c in levels)
    return {"completed": n}


def _git_head() -> str:
    try:
        root = HERE.parent
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], capture_output=True, text=True, cwd=root
        )
        return head + ("+uncommitted changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _pip_version(venv: Path, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
