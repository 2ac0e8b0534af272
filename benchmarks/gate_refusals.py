"""How often the promotion gate refuses a candidate for a chance recall drop, per correction.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/gate_refusals.py \
        --work /tmp/herpscore-bench/loop-sim --trials 100

The gate tests every class's recall drop with an exact sign test. Tested one by one at
alpha (`--correction none` in the product, the gate before), the chance that *some* class
shows a "significant" drop grows with the number of classes; Holm's correction (`holm`,
the default) holds it at alpha for the whole family. This measures both on ph-snakes (14
species, 15 test photos each) with the loop's probe (`loop_proxy.py`'s cached Lite0
features, refit recipe), in the two situations the gate meets:

- `equal`: the candidate and the active model are probes on two independent label sets of
  the same size (5 seed labels a species plus random photos): equally good in expectation,
  so every refusal by the recall rule is a false one;
- `more labels`: the candidate is the active model's labels plus 100 random photos, as in
  one round of the loop with random review: better in expectation;
- `adaptive`: the active model's labels plus the first 100 photos of the review queue's
  `adaptive` order over the rest of the pool, ranked by the active model, as in one round
  of the loop with the queue: the labels go where the model hesitates.

For each, the share of trials refused by macro-F1 (the same for both corrections), by the
recall rule with each correction, and the share promoted with each, with the mean top-1
gain of the candidates the recall rule alone refused. Writes
benchmarks/results/gate_refusals.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from statistics import mean
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import loop_proxy  # noqa: E402
from service.promotion import (  # noqa: E402
    CORRECTIONS,
    RECALL_BLOCKS,
    classification_scores,
    decide_promotion,
    recall_changes,
)
from service.routing import queue_order  # noqa: E402

KINDS = ("equal", "more labels", "adaptive")

MARGIN, ALPHA = 0.05, 0.05  # the product's defaults


def label_set(labels: list[str], size: int, seed: int, base: list[int] | None = None) -> list[int]:
    """`base` (or 5 random photos of every species) plus random pool rows up to `size`."""
    rng = random.Random(seed)
    if base is None:
        by: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            by.setdefault(label, []).append(i)
        base = [i for label in sorted(by) for i in rng.sample(by[label], 5)]
    rest = sorted(set(range(len(labels))) - set(base))
    return [*base, *rng.sample(rest, size - len(base))]


def predictions(data: dict[str, Any], rows: list[int], classes: list[str], seed: int) -> list[str]:
    pool, test = data["pool"], data["test"]
    head = loop_proxy.fit(pool["x"], pool["labels"], rows, classes, seed)
    return [classes[i] for i in loop_proxy.predict(head, test["x"]).argmax(1).tolist()]


def queue_pick(
    data: dict[str, Any], rows: list[int], classes: list[str], seed: int, count: int = 100
) -> list[int]:
    """`rows` plus the first `count` unlabelled pool photos of the `adaptive` queue, ranked
    by the probe on `rows` (its top-5 probabilities, as the product stores them)."""
    pool = data["pool"]
    head = loop_proxy.fit(pool["x"], pool["labels"], rows, classes, seed)
    candidates = loop_proxy.queue_candidates(
        loop_proxy.predict(head, pool["x"]), classes, set(rows)
    )
    known = loop_proxy.taught(pool["labels"], rows)
    return [*rows, *queue_order(candidates, "adaptive", seed=seed, taught=known)[:count]]


def decide(truth: list[str], active: list[str], candidate: list[str]) -> dict[str, Any]:
    old, new = classification_scores(truth, active), classification_scores(truth, candidate)
    changes = recall_changes(truth, active, candidate)
    out: dict[str, Any] = {
        "gain": new["accuracy"] - old["accuracy"],
        "f1_lower": new["macro_f1"] + 1e-9 < old["macro_f1"],
    }
    for correction in CORRECTIONS:
        ok, reasons = decide_promotion(
            new, old, MARGIN, changes=changes, alpha=ALPHA, correction=correction
        )
        out[correction] = {
            "promoted": ok,
            "recall_blocks": any(r.startswith(RECALL_BLOCKS) for r in reasons),
        }
    return out


def run(
    data: dict[str, Any], sizes: list[int], trials: int, kinds: list[str]
) -> dict[str, list[dict[str, Any]]]:
    labels = data["pool"]["labels"]
    classes, truth = sorted(set(labels)), data["test"]["labels"]
    results: dict[str, list[dict[str, Any]]] = {}
    for size in sizes:
        for kind in kinds:
            rows = []
            for t in range(trials):
                first = label_set(labels, size, 10_000 + t)
                if kind == "equal":
                    second = label_set(labels, size, 20_000 + t)
                elif kind == "more labels":
                    second = label_set(labels, size + 100, 20_000 + t, base=first)
                else:
                    second = queue_pick(data, first, classes, t)
                active = predictions(data, first, classes, t)
                candidate = predictions(data, second, classes, t)
                rows.append(decide(truth, active, candidate))
            results[f"{kind} @ {size}"] = rows
            print(f"{kind} @ {size}: {summary(rows)}", flush=True)
    return results


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "trials": len(rows),
        "mean_gain": round(100 * mean(r["gain"] for r in rows), 2),
        "f1_refused": round(mean(r["f1_lower"] for r in rows), 3),
    }
    for c in CORRECTIONS:
        out[f"recall_refused_{c}"] = round(mean(r[c]["recall_blocks"] for r in rows), 3)
        out[f"promoted_{c}"] = round(mean(r[c]["promoted"] for r in rows), 3)
        alone = [r["gain"] for r in rows if r[c]["recall_blocks"] and not r["f1_lower"]]
        out[f"recall_alone_{c}"] = len(alone)
        out[f"gain_refused_by_recall_alone_{c}"] = round(100 * mean(alone), 2) if alone else None
    return out


def write(results: dict[str, list[dict[str, Any]]], out: Path, args: argparse.Namespace) -> None:
    table = {k: summary(v) for k, v in results.items()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate_refusals.json").write_text(
        json.dumps({"args": vars(args) | {"work": str(args.work), "out": str(args.out)},
                    "summary": table, "trials": results}, indent=1) + "\n"
    )  # fmt: skip
    lines = [
        "# The promotion gate's refusals: each class on its own against Holm's correction",
        "",
        f"`benchmarks/gate_refusals.py --trials {args.trials}`: ph-snakes (14 species, 210 "
        "test photos), the loop's probe on cached Lite0 features (refit recipe), recall "
        f"margin {MARGIN}, alpha {ALPHA}. `equal`: two independent label sets of the same "
        "size; `more labels`: the active model's labels plus 100 random photos; `adaptive`: "
        "plus the first 100 photos of the queue's `adaptive` order. Shares of "
        "trials; 'recall alone' counts the trials refused by the recall rule while macro-F1 "
        "passed, with the mean top-1 gain (points) of those candidates.",
        "",
        "| situation | trials | mean top-1 gain | refused by macro-F1 | refused by recall, "
        "none | refused by recall, holm | promoted, none | promoted, holm | recall alone, "
        "none (gain) | recall alone, holm (gain) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in table.items():
        lines.append(
            f"| {name} | {s['trials']} | {s['mean_gain']:+.2f} | {s['f1_refused']:.3f} | "
            f"{s['recall_refused_none']:.3f} | {s['recall_refused_holm']:.3f} | "
            f"{s['promoted_none']:.3f} | {s['promoted_holm']:.3f} | "
            f"{s['recall_alone_none']} ({s['gain_refused_by_recall_alone_none']}) | "
            f"{s['recall_alone_holm']} ({s['gain_refused_by_recall_alone_holm']}) |"
        )
    (out / "gate_refusals.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/herpscore-bench/loop-sim"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[170, 270, 470])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    torch.set_num_threads(1)
    loop_proxy.REFIT = True  # the loop's recipe
    data = loop_proxy.features(args.work)
    write(run(data, args.sizes, args.trials, args.kinds), args.out, args)


if __name__ == "__main__":
    main()
