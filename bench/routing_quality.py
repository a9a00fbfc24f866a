"""Routing quality on the shared routing eval sets: `tierwise bench` per router, in distribution and across
categories.

    .venv/bin/python bench/routing_quality.py [--data-dir ../shared/data]
        [--json bench/results/routing_quality.json] [--readme bench/README.md] [--ablation] [--latency]
        [--halves N]

In distribution: for each set, prompts whose id hashes even train the router and the rest test it. Across
categories: a set's categories, ordered by a hash of their names, are dealt alternately into two groups; the
router trains on one group and is tested on the other, both ways round (sets with one category are skipped).
The tiers are the ones the data README suggests. The routers: the rules, a plain TF-IDF + logistic regression
(text only, probabilities), and each family of the learned router (tierwise.classify.learned) with its
defaults; --ablation adds each family without cost-aware scoring. With --readme, the tables between the
routing-quality markers in that file are replaced. --latency only times the default router instead: trained on
all of routerbench-train, saved, loaded, and asked for 500 of its prompts one at a time, as the proxy asks.
--halves N only compares the default router with the plain baseline over N half splits (the id split and
N - 1 more by a salted hash of the id): how much one split's figures move.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tierwise.classify.learned import LearnedRouter
from tierwise.config import RouterConfig
from tierwise.evals.bench import ScorerFactory, rules_scorer, run_bench
from tierwise.evals.dataset import EvalRecord, load_records
from tierwise.evals.sweep import TierScorer

SETS = {
    "routerbench-train": ["mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview"],
    "arena-bench-v1": ["Mistral-7B-Instruct-v0.1", "Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"],
    "llmrouter-train": ["gemma-2-9b-it", "qwen2.5-7b-instruct", "llama-3.1-nemotron-51b-instruct"],
}
START, END = "<!-- routing-quality:start -->", "<!-- routing-quality:end -->"
DEFAULT_FAMILY = LearnedRouter().family


def learned(**hyper: Any) -> ScorerFactory:
    def make(config: RouterConfig) -> TierScorer:
        return LearnedRouter(**hyper)

    return make


def routers(ablation: bool) -> dict[str, ScorerFactory]:
    out: dict[str, ScorerFactory] = {
        "rules": rules_scorer,
        "plain tfidf+logreg": learned(family="logreg", text_only=True, cost_aware=False),
    }
    for family in ("logreg", "knn", "gbdt", "blend"):
        name = f"{family} (default)" if family == DEFAULT_FAMILY else family
        out[name] = learned(family=family)
        if ablation:
            out[f"{family}, probabilities"] = learned(family=family, cost_aware=False)
    return out


def split_by_id(records: list[EvalRecord], salt: str = "") -> tuple[list[EvalRecord], list[EvalRecord]]:
    """Halves by a hash of each prompt id (with ``salt`` before it: another random half split)."""
    train: list[EvalRecord] = []
    test: list[EvalRecord] = []
    for r in records:
        (train if hashlib.sha256((salt + r.id).encode()).digest()[0] % 2 == 0 else test).append(r)
    return train, test


def halves(data_dir: Path, n: int, log: Callable[[str], None]) -> tuple[str, dict[str, Any]]:
    """The default router and the plain baseline over n half splits of each set: the id split, then n - 1
    splits by a salted hash of the id (salts "1", "2", ...). One split is noisy; this shows how much."""
    makers = {k: v for k, v in routers(False).items() if k == "plain tfidf+logreg" or "default" in k}
    out: dict[str, Any] = {}
    lines = [
        "| set | router | " + " | ".join(["id split", *(f"halves {i}" for i in range(1, n))]) + " | mean |",
        "|---|---|" + "---|" * (n + 1),
    ]
    for name in SETS:
        records = load_records(data_dir / f"{name}.jsonl")
        splits = [(name, "by id" if i == 0 else f"halves {i}", *split_by_id(records, str(i) if i else ""))
                  for i in range(n)]  # fmt: skip
        rows = bench_all(splits, makers, log)
        for router in makers:
            got = [r["policies"]["direct"] for r in rows if r["router"] == router]
            cells = [f"{d['apgr']:.3f} / {pct(d['saving_at_q95'])}" for d in got]
            mean_apgr = sum(d["apgr"] for d in got) / n
            mean_q95 = sum(d["saving_at_q95"] for d in got) / n
            lines.append(f"| {name} | {router} | {' | '.join(cells)} | {mean_apgr:.3f} / {pct(mean_q95)} |")
            out[f"{name} / {router}"] = {
                "apgr": [d["apgr"] for d in got], "saving_at_q95": [d["saving_at_q95"] for d in got],
                "mean_apgr": mean_apgr, "mean_saving_at_q95": mean_q95,
            }  # fmt: skip
    return "\n".join(lines), out


def category_groups(records: list[EvalRecord]) -> tuple[list[str], list[str]]:
    """The set's categories dealt alternately into two groups, in the order of a hash of their names."""
    names = sorted({r.category for r in records}, key=lambda c: hashlib.sha256(c.encode()).hexdigest())
    return sorted(names[0::2]), sorted(names[1::2])


def pct(x: float) -> str:
    return f"{x * 100:.1f}%"


HEADER = (
    "| set | split | train / test | router | APGR | CPT(50%) | saving @ Q95 | saving @ Q100 "
    "| routing acc. @ Q95 | calibrated Q95: saving | calibrated Q95: quality vs premium "
    "| oracle saving | oracle quality vs premium |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [HEADER]
    for r in rows:
        d = r["policies"]["direct"]
        base = r["baselines"]
        cal = d["calibrated_q95"]
        lines.append(
            f"| {r['set']} | {r['split']} | {r['n_train']} / {r['n_test']} | {r['router']} | {d['apgr']:.3f} "
            f"| {pct(d['cpt50'])} "
            f"| {pct(d['saving_at_q95'])} | {pct(d['saving_at_q100'])} | {pct(d['routing_accuracy_at_q95'])} "
            f"| {pct(cal['saving'])} | {pct(cal['quality_vs_premium'])} | {pct(base['oracle']['saving'])} "
            f"| {pct(base['oracle']['quality'] / base['premium']['quality'])} |"
        )
    return "\n".join(lines)


def policy_table(rows: list[dict[str, Any]]) -> str:
    """Direct against cascade, auto and parallel voting, for the default router, where answers were kept."""
    lines = [
        "| set | router | policy | APGR | saving @ Q95 | saving @ Q100 | calibrated Q95: saving "
        "| calibrated Q95: quality vs premium | cost vs cascade at calibrated Q95 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if len(r["policies"]) < 2 or "default" not in r["router"]:
            continue
        for name, d in r["policies"].items():
            cal = d["calibrated_q95"]
            ratio = d.get("cost_vs_cascade_at_q95")
            lines.append(
                f"| {r['set']} | {r['router']} | {name} | {d['apgr']:.3f} | {pct(d['saving_at_q95'])} "
                f"| {pct(d['saving_at_q100'])} | {pct(cal['saving'])} | {pct(cal['quality_vs_premium'])} "
                f"| {f'{ratio:.2f}×' if ratio else ''} |"
            )
    return "\n".join(lines)


def bench_all(
    splits: list[tuple[str, str, list[EvalRecord], list[EvalRecord]]],
    makers: dict[str, ScorerFactory],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    rows = []
    for name, split, train, test in splits:
        for router, make in makers.items():
            started = time.perf_counter()
            result, _ = run_bench(train, test, SETS[name], make_scorer=make)
            for policy in result["policies"].values():
                policy.pop("curve")
            result |= {"set": name, "split": split, "router": router}
            result["seconds"] = round(time.perf_counter() - started, 2)
            rows.append(result)
            log(f"{name} / {split} / {router}: done in {result['seconds']} s")
    return rows


def latency(data_dir: Path, prompts: int = 500) -> dict[str, Any]:
    """Artifact size and load time, and predict_request's p50/p99 with the request's features given (as the
    engine passes them) and without, for the default router trained on all of routerbench-train."""
    import statistics
    import tempfile

    from tierwise.classify.artifact import load_router, save_router
    from tierwise.classify.learned import record_request, request_features
    from tierwise.evals.metrics import OutcomeTable

    records = load_records(data_dir / "routerbench-train.jsonl")
    table = OutcomeTable.from_records(records, SETS["routerbench-train"])
    started = time.perf_counter()
    router = LearnedRouter().fit(records, table)
    fit_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        path = save_router(router, Path(tmp) / "router.tw")
        size = path.stat().st_size
        loads = []
        for _ in range(5):
            started = time.perf_counter()
            router, _ = load_router(path)
            loads.append(time.perf_counter() - started)
    requests = [record_request(r) for r in records[:prompts]]
    features = [request_features(r) for r in requests]

    def percentiles(call: Callable[[int], object]) -> dict[str, float]:
        for i in range(50):
            call(i)  # warm-up
        times = []
        for i in range(len(requests)):
            started = time.perf_counter()
            call(i)
            times.append((time.perf_counter() - started) * 1000)
        cuts = statistics.quantiles(times, n=100)
        return {"p50_ms": round(cuts[49], 3), "p99_ms": round(cuts[98], 3)}

    return {
        "family": router.family,
        "prompts": len(requests),
        "fit_s": round(fit_s, 2),
        "artifact_bytes": size,
        "load_s_median": round(statistics.median(loads), 3),
        "with_features": percentiles(lambda i: router.predict_request(requests[i], features[i])),
        "without_features": percentiles(lambda i: router.predict_request(requests[i])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parents[2] / "shared" / "data")
    parser.add_argument(
        "--json", type=Path, default=Path(__file__).parent / "results" / "routing_quality.json"
    )
    parser.add_argument("--readme", type=Path, default=None)
    parser.add_argument("--ablation", action="store_true", help="also each family without cost-aware scores")
    parser.add_argument("--latency", action="store_true", help="only time the default router's predictions")
    parser.add_argument(
        "--halves", type=int, default=0, metavar="N",
        help="only APGR / saving at Q95 of the default router and the plain baseline over N half splits",
    )  # fmt: skip
    args = parser.parse_args()
    if args.latency:
        print(json.dumps(latency(args.data_dir), indent=2))
        return
    if args.halves:
        text, numbers = halves(args.data_dir, args.halves, lambda line: print(line, flush=True))
        print(text)
        if args.json != parser.get_default("json"):
            args.json.write_text(json.dumps(numbers, indent=2) + "\n")
        return

    in_distribution, across = [], []
    groups: dict[str, tuple[list[str], list[str]]] = {}
    for name in SETS:
        records = load_records(args.data_dir / f"{name}.jsonl")
        in_distribution.append((name, "by id", *split_by_id(records)))
        a, b = category_groups(records)
        if a and b:
            groups[name] = (a, b)
            in_a = [r for r in records if r.category in a]
            in_b = [r for r in records if r.category not in a]
            across.append((name, f"A→B ({len(a)}→{len(b)} cat.)", in_a, in_b))
            across.append((name, f"B→A ({len(b)}→{len(a)} cat.)", in_b, in_a))

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    makers = routers(args.ablation)
    rows = bench_all(in_distribution, makers, log)
    category_rows = bench_all(across, {k: v for k, v in makers.items() if k != "rules"}, log)
    log(f"all done in {time.perf_counter() - started:.0f} s")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    payload = {"in_distribution": rows, "by_category": category_rows, "category_groups": groups}
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    legend = "; ".join(f"{name}: A = {', '.join(a)}; B = {', '.join(b)}" for name, (a, b) in groups.items())
    text = (
        "In distribution (each set split in halves by id):\n\n"
        f"{table(rows)}\n\n"
        "Policies, in distribution, where the set kept the models' answers (cascade, auto and voting use the "
        "learned answer gate trained on the training half):\n\n"
        f"{policy_table(rows)}\n\n"
        "Across categories (trained on one group of categories, tested on the other):\n\n"
        f"{table(category_rows)}\n\n"
        f"Category groups: {legend}."
    )
    print(text)
    if args.readme:
        readme = args.readme.read_text()
        head, _, rest = readme.partition(START)
        _, _, tail = rest.partition(END)
        args.readme.write_text(f"{head}{START}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main()
