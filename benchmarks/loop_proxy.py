"""A fast stand-in for the loop simulation, to choose which queue orders are worth a real run.

    nice -n 10 .venv/bin/python benchmarks/loop_proxy.py --work /tmp/herpscore-bench/loop-sim \
        --seeds 0 1 2 3 4 5 6 7 --orders confidence random balanced mixed

`loop_sim.py` plays every round through herpscore (worker, review API, export, training
run, gate) and takes 10 to 20 minutes a run on the shared machine. This replays the same
rounds on features computed once: the frozen ImageNet EfficientNet-Lite0 features at 224 px
(squash) of the pool and test photos `loop_sim.py prepare` copied, the same linear probe
(`training.head.fit_head`: balanced class weights, label smoothing 0.1, L2 chosen on a 15 %
stratified val split), the same seed labels, and the gate's own `decide_promotion`. The
queue orders are `service.routing.queue_order`'s (the production code) plus `random`.
It skips the calibration temperature and the ONNX export, so its numbers are close to,
not equal to, the real loop's: use it to rank orders over many seeds, then confirm the
winner with `loop_sim.py run`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loop_sim import seed_labels  # noqa: E402
from service.promotion import classification_scores, decide_promotion, recall_changes  # noqa: E402
from service.routing import QueueCandidate, queue_order  # noqa: E402

ORDERS = ("random", "confidence", "margin", "balanced", "stratified", "mixed")


def features(work: Path) -> dict[str, Any]:
    """Lite0 features of every pool and test photo (cached in work/proxy-features.pt)."""
    cache = work / "proxy-features.pt"
    if cache.is_file():
        return dict(torch.load(cache))
    from training.backbones import build_backbone
    from training.data import eval_loader, eval_transform
    from training.head import extract_features

    torch.set_num_threads(1)
    summary = json.loads((work / "photos.json").read_text())
    backbone = build_backbone("efficientnet_lite0", 14, "default", 224, "squash")
    load, transform = eval_loader(backbone.spec), eval_transform(backbone.spec)
    out: dict[str, Any] = {}
    for split, folder in (("pool", "survey/pool"), ("test", "evalset")):
        rows = summary["items"][split]
        paths = [work / "photos" / folder / r["path"] for r in rows]
        batches = (
            torch.stack([transform(load(p)) for p in paths[i : i + 32]])
            for i in range(0, len(paths), 32)
        )
        out[split] = {
            "x": extract_features(backbone.model, backbone.head, batches),
            "labels": [r["label"] for r in rows],
            "paths": [r["path"] for r in rows],
        }
    torch.save(out, cache)
    return out


_FITS: dict[tuple[tuple[int, ...], int], Any] = {}


def fit(x: torch.Tensor, labels: list[str], rows: list[int], classes: list[str], seed: int) -> Any:
    """The loop's probe on these labelled rows: stratified 15 % val, L2 chosen on it."""
    key = (tuple(sorted(rows)), seed)
    if key not in _FITS:
        _FITS[key] = _fit(x, labels, rows, classes, seed)
    return _FITS[key]


def _fit(x: torch.Tensor, labels: list[str], rows: list[int], classes: list[str], seed: int) -> Any:
    from training.data import class_weights
    from training.head import fit_head

    rng = random.Random(seed)
    by: dict[str, list[int]] = defaultdict(list)
    for r in rows:
        by[labels[r]].append(r)
    train, val = [], []
    for group in by.values():
        group = sorted(group)
        rng.shuffle(group)
        n_val = round(0.15 * len(group)) if len(group) > 2 else 0
        val += group[:n_val]
        train += group[n_val:]
    val = val or train[:1]
    index = {c: i for i, c in enumerate(classes)}
    ty = torch.tensor([index[labels[r]] for r in train])
    vy = torch.tensor([index[labels[r]] for r in val])
    weights = class_weights(ty.tolist(), len(classes))
    return fit_head((x[train], ty), (x[val], vy), len(classes), weights, 0.1)


def predict(head: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x @ head.weight.T + head.bias, dim=1)


def simulate(
    data: dict[str, Any], order: str, seed: int, rounds: int, per_round: int, margin: float
) -> list[dict[str, Any]]:
    pool, test = data["pool"], data["test"]
    classes = sorted(set(pool["labels"]))
    rows_of_path = {p: i for i, p in enumerate(pool["paths"])}
    pool_rows = [
        {"path": p, "label": lab} for p, lab in zip(pool["paths"], pool["labels"], strict=True)
    ]
    labelled = [rows_of_path[r["path"]] for r in seed_labels(pool_rows, 5, seed)]
    rng = random.Random(1000 + seed)

    def scores(head: Any) -> tuple[dict[str, Any], list[str]]:
        predicted = [classes[i] for i in predict(head, test["x"]).argmax(1).tolist()]
        return classification_scores(test["labels"], predicted), predicted

    active = fit(pool["x"], pool["labels"], labelled, classes, seed)
    active_scores, active_pred = scores(active)
    out = [{"round": 0, "labels": len(labelled), "top1": active_scores["accuracy"]}]
    for number in range(1, rounds + 1):
        probs = predict(active, pool["x"])
        taken = set(labelled)
        candidates = [
            QueueCandidate(i, classes[int(p.argmax())], sorted(p.tolist(), reverse=True)[:5])
            for i, p in enumerate(probs)
            if i not in taken
        ]
        if order == "random":
            chosen = rng.sample([c.key for c in candidates], per_round)
        else:
            chosen = queue_order(candidates, order, seed=seed * 100 + number)[:per_round]
        labelled += chosen
        head = fit(pool["x"], pool["labels"], labelled, classes, seed)
        cand_scores, cand_pred = scores(head)
        ok, _ = decide_promotion(
            cand_scores,
            active_scores,
            margin,
            changes=recall_changes(test["labels"], active_pred, cand_pred),
        )
        if ok:
            active, active_scores, active_pred = head, cand_scores, cand_pred
        out.append(
            {
                "round": number,
                "labels": len(labelled),
                "top1": active_scores["accuracy"],
                "candidate_top1": cand_scores["accuracy"],
                "promoted": ok,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/herpscore-bench/loop-sim"))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--orders", nargs="+", default=list(ORDERS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--out", type=Path, help="JSON of every run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = features(args.work)
    runs = {}
    for seed in args.seeds:
        for order in args.orders:
            runs[(order, seed)] = simulate(
                data, order, seed, args.rounds, args.per_round, args.margin
            )
            cells = [
                f"{x['top1']:.3f} ({x.get('candidate_top1', x['top1']):.3f})"
                for x in runs[(order, seed)]
            ]
            print(f"seed {seed} {order:>12}: " + " | ".join(cells), flush=True)
    print(f"mean over seeds {args.seeds}: active top-1 (candidate top-1) per round")
    for order in args.orders:
        cells = []
        for r in range(args.rounds + 1):
            rows = [runs[(order, s)][r] for s in args.seeds]
            act = mean(x["top1"] for x in rows)
            cand = mean(x.get("candidate_top1", x["top1"]) for x in rows)
            cells.append(f"{act:.3f} ({cand:.3f})")
        print(f"{order:>12}: " + " | ".join(cells))
    if args.out:
        args.out.write_text(
            json.dumps({f"{o}-seed{s}": v for (o, s), v in runs.items()}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
