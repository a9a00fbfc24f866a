"""How long `tierwise eval` takes on 100k prompts, through the real engine.

    .venv/bin/python bench/eval_speed.py [--prompts 100000] [--data ../shared/data/routerbench-train.jsonl]

The set is the given routing eval set repeated until it holds --prompts prompts, each copy's prompt made
unique (a suffix on the last message) so that every one is replayed by exact match, as a real set's would be.
Times loading from disk, replay through the engine, and the per-class summary.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tierwise.evals.dataset import load_records
from tierwise.evals.replay import config_for_tiers, replay, summarize

TIERS = ["mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=100_000)
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).parents[2] / "shared" / "data" / "routerbench-train.jsonl"
    )
    parser.add_argument("--tiers", default=",".join(TIERS))
    args = parser.parse_args()

    lines = args.data.read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.jsonl"
        with path.open("w") as out:
            for i in range(args.prompts):
                row = json.loads(lines[i % len(lines)])
                row["id"] = f"{row['id']}#{i}"
                row["messages"][-1]["content"] += f"\n#{i}"
                out.write(json.dumps(row) + "\n")
        started = time.perf_counter()
        records = load_records(path)
        loaded = time.perf_counter()
        result = replay(config_for_tiers(args.tiers.split(",")), records)
        replayed = time.perf_counter()
        summarize(result)
        done = time.perf_counter()
    print(
        json.dumps(
            {
                "prompts": len(records),
                "load_s": round(loaded - started, 2),
                "replay_s": round(replayed - loaded, 2),
                "summary_s": round(done - replayed, 2),
                "total_s": round(done - started, 2),
                "us_per_prompt": round((done - started) / len(records) * 1e6, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
