"""Routing quality on the shared routing eval sets: `tierwise bench` on each, split in halves by id.

    .venv/bin/python bench/routing_quality.py [--data-dir ../shared/data]
        [--json bench/results/routing_quality.json] [--readme bench/README.md]

For each set, prompts whose id hashes even train the router and the rest test it; the tiers are the ones the
data README suggests. With --readme, the table between the routing-quality markers in that file is replaced.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from tierwise.evals.bench import ROUTERS, run_bench
from tierwise.evals.dataset import EvalRecord, load_records

SETS = {
    "routerbench-train": ["mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"],
    "arena-bench-v1": ["Mistral-7B-Instruct-v0.1", "Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"],
    "llmrouter-train": ["gemma-2-9b-it", "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct"],
}
START, END = "<!-- routing-quality:start -->", "<!-- routing-quality:end -->"


def split_by_id(records: list[EvalRecord]) -> tuple[list[EvalRecord], list[EvalRecord]]:
    train, test = [], []
    for r in records:
        (train if hashlib.sha256(r.id.encode()).digest()[0] % 2 == 0 else test).append(r)
    return train, test


def pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def table(rows: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| set | train / test | router | APGR | CPT(50%) | saving @ Q95 | saving @ Q100 "
        "| routing acc. @ Q95 | calibrated Q95: saving | calibrated Q95: quality vs premium "
        "| oracle saving | oracle quality vs premium |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        d = r["policies"]["direct"]
        base = r["baselines"]
        cal = d["calibrated_q95"]
        lines.append(
            f"| {name} | {r['n_train']} / {r['n_test']} | {d['router']} | {d['apgr']:.3f} "
            f"| {pct(d['cpt50'])} "
            f"| {pct(d['saving_at_q95'])} | {pct(d['saving_at_q100'])} | {pct(d['routing_accuracy_at_q95'])} "
            f"| {pct(cal['saving'])} | {pct(cal['quality_vs_premium'])} | {pct(base['oracle']['saving'])} "
            f"| {pct(base['oracle']['quality'] / base['premium']['quality'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parents[2] / "shared" / "data")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "routing_quality.json"
    )
    parser.add_argument("--readme", type=Path, default=None)
    args = parser.parse_args()

    rows: dict[str, dict[str, Any]] = {}
    for name, tiers in SETS.items():
        path = args.data_dir / f"{name}.jsonl"
        train, test = split_by_id(load_records(path))
        for router in ("rules", "learned"):
            started = time.perf_counter()
            result, _ = run_bench(train, test, tiers, make_scorer=ROUTERS[router])
            result["seconds"] = round(time.perf_counter() - started, 2)
            result["policies"]["direct"].pop("curve")
            rows[f"{name} ({router})"] = result
            print(f"{name} ({router}): done in {result['seconds']} s", flush=True)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2) + "\n")
    text = table(rows)
    print(text)
    if args.readme:
        readme = args.readme.read_text()
        head, _, rest = readme.partition(START)
        _, _, tail = rest.partition(END)
        args.readme.write_text(f"{head}{START}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main()
