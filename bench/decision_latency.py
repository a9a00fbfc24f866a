"""How long a routing decision takes in-process: features + learned classifier + rules + plan (Engine.route),
and how long a router artifact takes to load.

    .venv/bin/python bench/decision_latency.py [--data-dir ../shared/data]
        [--json bench/results/decision_latency.json]

For each shared set: train the learned router on half of it (split by id), save and load the artifact, then
time Engine.route on every prompt of the other half through a config that uses the artifact.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from routing_quality import SETS, split_by_id
from tierwise.classify.artifact import load_router, save_router
from tierwise.classify.learned import LearnedRouter
from tierwise.config import parse_config
from tierwise.evals.dataset import load_records
from tierwise.evals.metrics import OutcomeTable
from tierwise.evals.sweep import to_request
from tierwise.policy.engine import Engine, RequestContext


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parents[2] / "shared" / "data")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "decision_latency.json"
    )
    args = parser.parse_args()
    results = {}
    for name, models in SETS.items():
        train, test = split_by_id(load_records(args.data_dir / f"{name}.jsonl"))
        router = LearnedRouter().fit(train, OutcomeTable.from_records(train, models))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "router.tw"
            save_router(router, path)
            size = path.stat().st_size
            started = time.perf_counter()
            load_router(path)
            load_s = time.perf_counter() - started
            config = parse_config(
                {
                    "providers": {"p": {"type": "openai", "base_url": "http://127.0.0.1:9"}},
                    "models": {m: {"provider": "p"} for m in models},
                    "tiers": {t: [m] for t, m in zip(("cheap", "mid", "premium"), models, strict=True)},
                    "routing": {"classifier": {"type": "learned", "artifact": str(path), "threshold": 0.8}},
                }
            )
            engine = Engine(config, {})
        requests = [to_request(r) for r in test]
        for request in requests[:50]:  # warm-up
            engine.route(request, RequestContext(request_id="w", endpoint="bench"))
        times = []
        for request in requests:
            ctx = RequestContext(request_id="x", endpoint="bench")
            t0 = time.perf_counter()
            engine.route(request, ctx)
            times.append((time.perf_counter() - t0) * 1e6)
        q = statistics.quantiles(times, n=100)
        results[name] = {
            "prompts": len(times),
            "mean_prompt_chars": round(statistics.mean(len(r.all_text()) for r in requests)),
            "p50_us": round(statistics.median(times), 1),
            "p99_us": round(q[98], 1),
            "artifact_bytes": size,
            "artifact_load_s": round(load_s, 3),
        }
        print(name, results[name], flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
