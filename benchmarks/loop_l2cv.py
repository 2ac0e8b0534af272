"""How much does the probe's L2 choice cost at the loop's small label counts?

    nice -n 19 .venv/bin/python benchmarks/loop_l2cv.py --work /tmp/herpscore-bench/loop-sim \
        --seeds 0 1 2 --orders random adaptive --out /tmp/l2cv.json

On the labelled sets `loop_proxy.py --refit --sticky` reaches round by round (the
val-chosen recipe's own trajectory), the refit probe (all labels, one L2) is scored on the
test photos three ways: with the L2 the 15 % val split chose (the product), with the L2 a
stratified k-fold cross-validation chose (lowest pooled NLL over the folds), and with the
L2 of the best test top-1 (an oracle: the bound on what any L2 choice can give). The
candidates are compared on identical label sets, so the difference is the L2 choice alone.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import loop_proxy  # noqa: E402
from training.data import class_weights  # noqa: E402
from training.head import L2_GRID, fit_head  # noqa: E402

VARIANTS = ("val", "val_ext", "cv", "cv_ext", "oracle", "oracle_ext")
# Stronger strengths than the product's grid: its strongest, 0.1, was chosen at 70 labels.
EXTENDED = (3.0, 1.0, 0.3, *L2_GRID)


def stratified_folds(labels: list[int], k: int, seed: int) -> list[int]:
    """A fold number per row: each class shuffled and dealt round the folds in turn,
    continuing where the previous class stopped, so fold sizes differ by at most one."""
    rng = random.Random(seed)
    fold = [0] * len(labels)
    by: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by[y].append(i)
    turn = 0
    for y in sorted(by):
        rows = by[y]
        rng.shuffle(rows)
        for i in rows:
            fold[i] = turn % k
            turn += 1
    return fold


def cv_losses(
    x: torch.Tensor, y: torch.Tensor, classes: int, k: int, seed: int, grid: tuple[float, ...]
) -> dict[float, float]:
    """Pooled validation NLL per L2 over the k held-out folds (each fold's path stops after
    two rises, as the product's; only strengths every fold tried are compared)."""
    fold = torch.tensor(stratified_folds(y.tolist(), k, seed))
    total: dict[float, float] = defaultdict(float)
    seen: dict[float, int] = defaultdict(int)
    for f in range(k):
        held = fold == f
        tx, ty = x[~held], y[~held]
        weights = class_weights(ty.tolist(), classes)
        fit = fit_head((tx, ty), (x[held], y[held]), classes, weights, 0.1, grid, 300, 2)
        for l2, loss in fit.tried.items():
            total[l2] += loss * int(held.sum())
            seen[l2] += 1
    return {l2: v / len(y) for l2, v in total.items() if seen[l2] == k}


def evaluate(
    x: torch.Tensor,
    labels: list[str],
    rows: list[int],
    classes: list[str],
    test: dict[str, Any],
    seed: int,
    k: int,
) -> dict[str, Any]:
    index = {c: i for i, c in enumerate(classes)}
    ty_test = torch.tensor([index[t] for t in test["labels"]])
    val_head = loop_proxy.fit(x, labels, rows, classes, seed)  # the product's (refit)
    loop_proxy.GRID = EXTENDED  # the same val split, choosing on the extended grid
    try:
        val_ext_l2 = loop_proxy.fit(x, labels, rows, classes, seed).l2
    finally:
        loop_proxy.GRID = L2_GRID
    ay = torch.tensor([index[labels[r]] for r in rows])
    weights = class_weights(ay.tolist(), len(classes))
    path = {}
    for l2 in EXTENDED:  # the refit at every strength, from zero as the product's refit
        head = fit_head((x[rows], ay), (x[rows[:1]], ay[:1]), len(classes), weights, 0.1, (l2,))
        logits = test["x"] @ head.weight.T + head.bias
        path[l2] = {
            "top1": float((logits.argmax(1) == ty_test).double().mean()),
            "nll": float(F.cross_entropy(logits, ty_test)),
        }
    cv = cv_losses(x[rows], ay, len(classes), k, seed, EXTENDED)
    cv_ext_l2 = min(cv, key=lambda l2: cv[l2])
    cv_l2 = min((l2 for l2 in cv if l2 in L2_GRID), key=lambda l2: cv[l2])

    def oracle(grid: tuple[float, ...]) -> float:
        return max(grid, key=lambda l2: (path[l2]["top1"], -path[l2]["nll"]))

    val_logits = test["x"] @ val_head.weight.T + val_head.bias
    chosen = {
        "val": val_head.l2,
        "val_ext": val_ext_l2,
        "cv": cv_l2,
        "cv_ext": cv_ext_l2,
        "oracle": oracle(L2_GRID),
        "oracle_ext": oracle(EXTENDED),
    }
    result: dict[str, Any] = {"labels": len(rows)}
    for name, l2 in chosen.items():
        result[f"{name}_l2"] = l2
        result[f"{name}_top1"] = path[l2]["top1"]
    result["val_top1"] = float((val_logits.argmax(1) == ty_test).double().mean())
    result["path"] = {str(k_): v for k_, v in path.items()}
    result["cv_losses"] = {str(k_): v for k_, v in cv.items()}
    return result


def label_sets(data: dict[str, Any], order: str, seed: int, rounds: int) -> list[list[int]]:
    """The labelled rows of every round of loop_proxy's simulation (its own trajectory)."""
    seen: list[list[int]] = []
    real = loop_proxy.fit

    def spy(
        x: torch.Tensor, labels: list[str], rows: list[int], classes: list[str], seed: int
    ) -> Any:
        seen.append(list(rows))
        return real(x, labels, rows, classes, seed)

    loop_proxy.fit = spy
    try:
        loop_proxy.simulate(data, order, seed, rounds, 100, 0.05)
    finally:
        loop_proxy.fit = real
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/herpscore-bench/loop-sim"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--orders", nargs="+", default=["random", "adaptive"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--reference", action="store_true", help="also all pool labels")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summary", action="store_true", help="summarise --out, run nothing")
    args = parser.parse_args()
    if args.summary:
        summarise(json.loads(args.out.read_text()))
        return
    loop_proxy.REFIT, loop_proxy.STICKY = True, True
    torch.set_num_threads(1)
    data = loop_proxy.features(args.work)
    pool, test = data["pool"], data["test"]
    classes = sorted(set(pool["labels"]))
    out: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.reference:
        rows = list(range(len(pool["labels"])))
        out["reference"] = evaluate(pool["x"], pool["labels"], rows, classes, test, 0, args.folds)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    for seed in args.seeds:
        for order in args.orders:
            name = f"{order}-seed{seed}"
            if name in out:
                continue
            sets = label_sets(data, order, seed, args.rounds)
            # Round r's candidate is sets[r] (round 0: the seed labels).
            out[name] = [
                evaluate(pool["x"], pool["labels"], rows, classes, test, seed, args.folds)
                for rows in sets
            ]
            cells = ["/".join(f"{r[f'{v}_top1']:.3f}" for v in VARIANTS) for r in out[name]]
            print(f"{name} {'/'.join(VARIANTS)}: " + " | ".join(cells), flush=True)
            args.out.write_text(json.dumps(out, indent=1) + "\n")
    summarise(out)


def summarise(out: dict[str, Any]) -> None:
    """Per order and round: the val-chosen candidate's top-1, every other choice minus it
    (points, mean ± se over seeds), the fixed strengths above the grid, how often each
    choice sits on the grid's strongest end, and the share of the reference."""
    # A results file keeps the runs under "runs" beside its provenance; a raw --out does not.
    runs = out.get("runs", {k: v for k, v in out.items() if k != "reference"})
    orders = sorted({k.rpartition("-seed")[0] for k in runs})
    ref = out.get("reference")

    def se(d: list[float]) -> float:
        return stdev(d) / math.sqrt(len(d)) if len(d) > 1 else 0.0

    def cell(d: list[float]) -> str:
        return f"{mean(d):+.2f} ±{se(d):.2f}"

    for order in orders:
        mine = [v for k, v in runs.items() if k.rpartition("-seed")[0] == order]
        rounds = min(len(v) for v in mine)
        print(f"{order}: {len(mine)} seeds; candidate top-1 with the val L2, others minus it")
        for r in range(rounds):
            val = [100 * v[r]["val_top1"] for v in mine]
            cells = [
                f"{name} " + cell([100 * (v[r][f"{name}_top1"] - v[r]["val_top1"]) for v in mine])
                for name in VARIANTS[1:]
            ]
            cells += [
                f"L2={c:g} "
                + cell([100 * (v[r]["path"][str(c)]["top1"] - v[r]["val_top1"]) for v in mine])
                for c in (0.3, 1.0)
            ]
            edge = {n: sum(v[r][f"{n}_l2"] == L2_GRID[0] for v in mine) for n in ("val", "cv")}
            above = {n: sum(v[r][f"{n}_ext_l2"] > L2_GRID[0] for v in mine) for n in ("val", "cv")}
            share = f" | share {100 * mean(val) / (100 * ref['val_top1']):.1f} %" if ref else ""
            print(
                f"  round {r} ({mine[0][r]['labels']}): val {mean(val):.1f} | "
                + " | ".join(cells)
                + f" | L2 0.1 chosen: val {edge['val']}, cv {edge['cv']}"
                + f" | above 0.1: val_ext {above['val']}, cv_ext {above['cv']}"
                + share
            )
    if ref:
        print(
            "reference: "
            + ", ".join(f"{v} {ref[f'{v}_top1']:.4f} (L2 {ref[f'{v}_l2']})" for v in VARIANTS)
            + "; fixed: "
            + ", ".join(f"{k} {v['top1']:.4f}" for k, v in ref["path"].items())
        )


if __name__ == "__main__":
    main()
