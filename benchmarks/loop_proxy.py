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
winner with `loop_sim.py run`. `--refit` refits each probe on train + val with the L2 it
chose (the loop's recipe since `--refit` works with `--stage1 probe`); `--reference` also
prints the probe on every pool label. Orders named in EXPERIMENTAL_PREFIXES are tried
here only; the feature-space orders of `loop_diversity.py` (DIVERSITY_ORDERS, alone or
`...-then-balanced`) also see the pool's features. `--merge` summarises stored --out files;
`--reference-top1` adds each order's share of the reference at the last round within
`--label-cap` labels (the target: 95 % within 40 % of the pool).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from statistics import mean, stdev
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loop_diversity import DIVERSITY_ORDERS, diversity_order, unit_rows  # noqa: E402
from benchmarks.loop_sim import seed_labels  # noqa: E402
from service.promotion import (  # noqa: E402
    CORRECTIONS,
    classification_scores,
    decide_promotion,
    recall_changes,
)
from service.routing import QUEUE_ORDERS, QueueCandidate, queue_order  # noqa: E402
from training.head import L2_GRID  # noqa: E402

ORDERS = ("random", "confidence", "margin", "balanced", "stratified", "mixed", "adaptive")


# ---------------------------------------------------------------- orders tried on the stand-in
# Orders the product could compute when a job finishes from what it stores (each item's
# top-k labels and probabilities, the labels already given); the ones worth it move to
# service.routing.queue_order.


def _entropy(probs: list[float]) -> float:
    rest = max(0.0, 1.0 - sum(probs))  # the mass outside the stored top-k, as one bucket
    return -sum(p * math.log(p) for p in [*probs, rest] if p > 0)


def _turns(groups: dict[Any, list[int]], score: dict[int, float]) -> list[int]:
    """Every group's first key, then every group's second, ...; within a layer by score."""
    served: list[int] = []
    lists = [groups[g] for g in sorted(groups, key=str)]
    for rank in range(max((len(v) for v in lists), default=0)):
        served += sorted((v[rank] for v in lists if rank < len(v)), key=lambda k: (score[k], k))
    return served


def experimental_order(
    cands: list[QueueCandidate], second: dict[int, str], known: dict[str, int], name: str, seed: int
) -> list[int]:
    rng = random.Random(seed)
    margin = {c.key: c.margin for c in cands}
    neg_entropy = {c.key: -_entropy(list(c.probs)) for c in cands}
    if name == "entropy":
        return sorted(margin, key=lambda k: (neg_entropy[k], k))
    by_label: dict[str, list[int]] = defaultdict(list)
    for c in sorted(cands, key=lambda c: (c.margin, c.key)):
        by_label[c.label].append(c.key)
    if name == "balanced-entropy":
        groups = {
            lab: sorted(keys, key=lambda k: (neg_entropy[k], k)) for lab, keys in by_label.items()
        }
        return _turns(groups, neg_entropy)
    if name == "mixed-rf":  # mixed, starting each label with a random item
        groups = {}
        for lab, keys in by_label.items():
            left, out, take_random = list(keys), [], True
            while left:
                out.append(left.pop(rng.randrange(len(left)) if take_random else 0))
                take_random = not take_random
            groups[lab] = out
        return _turns(groups, margin)
    if name == "pairs":  # turns across the confused pairs (top-1, top-2 labels)
        pairs: dict[Any, list[int]] = defaultdict(list)
        for c in sorted(cands, key=lambda c: (c.margin, c.key)):
            pairs[tuple(sorted((c.label, second[c.key])))].append(c.key)
        return _turns(pairs, margin)
    if name == "need":  # the predicted label with the fewest labels (given + served) next
        count = {lab: known.get(lab, 0) for lab in by_label}
        queues = {lab: list(keys) for lab, keys in by_label.items()}
        served = []
        while queues:
            lab = min(queues, key=lambda lab: (count[lab], margin[queues[lab][0]], lab))
            served.append(queues[lab].pop(0))
            count[lab] += 1
            if not queues[lab]:
                del queues[lab]
        return served
    if name.startswith("coverage"):  # each label's K smallest margins, then random
        k = int(name.removeprefix("coverage") or 2)
        head = _turns({lab: keys[:k] for lab, keys in by_label.items()}, margin)
        rest = sorted(set(margin) - set(head))
        rng.shuffle(rest)
        return head + rest
    if name.startswith("band"):  # turns across labels, each label's margins from its median
        groups = {}
        for lab, keys in by_label.items():
            mid = len(keys) // 2
            groups[lab] = sorted(keys, key=lambda k: (abs(keys.index(k) - mid), k))
        return _turns(groups, margin)
    if name.startswith("lowq"):  # random among the margins below the P-th percentile, then the rest
        cut = sorted(margin.values())[len(margin) * int(name.removeprefix("lowq")) // 100]
        low = sorted(k for k in margin if margin[k] <= cut)
        rest = sorted(set(margin) - set(low))
        rng.shuffle(low)
        rng.shuffle(rest)
        return low + rest
    if name == "typical":  # turns across labels, each label's most confident first
        return _turns({lab: keys[::-1] for lab, keys in by_label.items()}, margin)
    if name == "randctl":  # random with another draw: the noise between two random runs
        keys = sorted(margin)
        rng.shuffle(keys)
        return keys
    if name.startswith("adapt"):  # per label: few labels (given + served) -> random, else margin
        spec = name.removeprefix("adapt")
        pick, threshold = spec[0], int(spec[1:])  # r: a random item, c: the most confident
        groups = {}
        for lab, keys in by_label.items():
            left, out, given = list(keys), [], known.get(lab, 0)
            while left:
                if given < threshold:
                    index = rng.randrange(len(left)) if pick == "r" else len(left) - 1
                else:
                    index = 0
                out.append(left.pop(index))
                given += 1
            groups[lab] = out
        return _turns(groups, margin)
    if name.startswith("switch"):  # switch<FIRST>-<T>[-<THEN>]: the job's least-taught
        # predicted label has fewer than T human labels -> FIRST, else THEN (balanced)
        first, least, *then = name.removeprefix("switch").split("-")
        taught = min(known.get(lab, 0) for lab in by_label)
        use = first if taught < int(least) else (then[0] if then else "balanced")
        if use in QUEUE_ORDERS:
            return queue_order(cands, use, seed=seed)
        return experimental_order(cands, second, known, use, seed)
    raise ValueError(name)


EXPERIMENTAL = ("entropy", "balanced-entropy", "mixed-rf", "pairs", "need", "coverage2", "band")
EXPERIMENTAL_PREFIXES = (
    *EXPERIMENTAL,
    "coverage",
    "band",
    "lowq",
    "typical",
    "randctl",
    "adapt",
    "switch",
)


def features(work: Path) -> dict[str, Any]:
    """Lite0 features of every pool and test photo (cached in work/proxy-features.pt)."""
    cache = work / "proxy-features.pt"
    if cache.is_file():
        return dict(torch.load(cache))
    from training.backbones import build_backbone
    from training.data import eval_loader, eval_transform
    from training.head import extract_features

    summary = json.loads((work / "photos.json").read_text())
    backbone = build_backbone("efficientnet_lite0", 14, "default", 224, "squash")
    load, transform = eval_loader(backbone.spec), eval_transform(backbone.spec)
    out: dict[str, Any] = {}
    for split, folder in (("pool", "survey/pool"), ("test", "evalset")):
        rows = summary["items"][split]
        paths = [work / "photos" / folder / r["path"] for r in rows]
        inputs = [transform(load(p)) for p in paths]
        out[split] = {
            "x": extract_features(backbone.model, backbone.head, _batches(inputs)),
            "labels": [r["label"] for r in rows],
            "paths": [r["path"] for r in rows],
        }
        if split == "pool":  # the probe's --mirror training views; a squash resize is
            # symmetric, so flipping the input tensor is flipping the photo
            flipped = _batches([t.flip(2) for t in inputs])
            out[split]["x_flip"] = extract_features(backbone.model, backbone.head, flipped)
    torch.save(out, cache)
    return out


def _batches(inputs: list[torch.Tensor], size: int = 32) -> Iterator[torch.Tensor]:
    return (torch.stack(inputs[i : i + size]) for i in range(0, len(inputs), size))


_FITS: dict[tuple[tuple[int, ...], int, bool, tuple[float, ...], bool], Any] = {}
REFIT = False  # --refit: after choosing L2 on val, fit again on train + val with it
STICKY = False  # --sticky: keep the last order while the gate refuses, as the product does
GRID: tuple[float, ...] = L2_GRID  # --grid: the L2 strengths tried
CORRECTION = "holm"  # --correction: how the gate's per-class recall tests share alpha


def fit(x: torch.Tensor, labels: list[str], rows: list[int], classes: list[str], seed: int) -> Any:
    """The loop's probe on these labelled rows: stratified 15 % val, L2 chosen on it."""
    key = (tuple(sorted(rows)), seed, REFIT, GRID, X_FLIP is not None)
    if key not in _FITS:
        _FITS[key] = _fit(x, labels, rows, classes, seed)
    return _FITS[key]


def _views(x: torch.Tensor, rows: list[int], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The training rows' features, and with --mirror their mirror images' after them."""
    if X_FLIP is None:
        return x[rows], y
    return torch.cat([x[rows], X_FLIP[rows]]), torch.cat([y, y])


# --mirror: the pool's mirror-image features, which the probe also trains on (None: not)
X_FLIP: torch.Tensor | None = None


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
    # The L2 path stops after two rises of the val loss: the product's choice whenever
    # the loss along the grid has one minimum (it always had here), in half the time.
    chosen = fit_head(_views(x, train, ty), (x[val], vy), len(classes), weights, 0.1, GRID, 300, 2)
    if not REFIT:
        return chosen
    everything = train + val
    ay = torch.tensor([index[labels[r]] for r in everything])
    weights = class_weights(ay.tolist(), len(classes))
    return fit_head(
        _views(x, everything, ay), (x[val], vy), len(classes), weights, 0.1, (chosen.l2,)
    )


def predict(head: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x @ head.weight.T + head.bias, dim=1)


def queue_candidates(
    probs: torch.Tensor, classes: list[str], taken: set[int]
) -> list[QueueCandidate]:
    """The unlabelled pool rows as the queue sees them: top-1 label and top-5 probabilities
    (what the product stores of a prediction)."""
    return [
        QueueCandidate(i, classes[int(p.argmax())], sorted(p.tolist(), reverse=True)[:5])
        for i, p in enumerate(probs)
        if i not in taken
    ]


def taught(labels: list[str], rows: list[int]) -> dict[str, int]:
    """Human labels per species among these rows (the queue's `taught` counts)."""
    known: dict[str, int] = defaultdict(int)
    for r in rows:
        known[labels[r]] += 1
    return known


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
    unit = unit_rows(pool["x"])

    def scores(head: Any) -> tuple[dict[str, Any], list[str]]:
        predicted = [classes[i] for i in predict(head, test["x"]).argmax(1).tolist()]
        return classification_scores(test["labels"], predicted), predicted

    active = fit(pool["x"], pool["labels"], labelled, classes, seed)
    active_scores, active_pred = scores(active)
    out = [{"round": 0, "labels": len(labelled), "top1": active_scores["accuracy"]}]
    queue: tuple[Any, list[int]] | None = None  # (the model it was ranked with, the order)
    for number in range(1, rounds + 1):
        probs = predict(active, pool["x"])
        taken = set(labelled)
        candidates = queue_candidates(probs, classes, taken)
        second = {c.key: classes[int(probs[c.key].topk(2).indices[1])] for c in candidates}
        known = taught(pool["labels"], labelled)
        if order == "random":
            chosen = rng.sample([c.key for c in candidates], per_round)
        elif STICKY and queue and queue[0] is active:
            # The product ranks a job's queue once and scores the pool again only after a
            # promotion: while the gate refuses, the last job's order goes on.
            chosen = [k for k in queue[1] if k not in taken][:per_round]
        elif order.startswith(DIVERSITY_ORDERS):
            ranked = diversity_order(candidates, known, unit, labelled, order, seed * 100 + number)
            queue, chosen = (active, ranked), ranked[:per_round]
        elif order not in QUEUE_ORDERS and order.startswith(EXPERIMENTAL_PREFIXES):
            ranked = experimental_order(candidates, second, known, order, seed * 100 + number)
            queue, chosen = (active, ranked), ranked[:per_round]
        else:
            ranked = queue_order(candidates, order, seed=seed * 100 + number, taught=known)
            queue, chosen = (active, ranked), ranked[:per_round]
        labelled += chosen
        head = fit(pool["x"], pool["labels"], labelled, classes, seed)
        cand_scores, cand_pred = scores(head)
        ok, _ = decide_promotion(
            cand_scores,
            active_scores,
            margin,
            changes=recall_changes(test["labels"], active_pred, cand_pred),
            correction=CORRECTION,
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
    parser.add_argument(
        "--refit", action="store_true", help="refit the probe on train + val with the chosen L2"
    )
    parser.add_argument(
        "--reference", action="store_true", help="also print the probe on every pool label"
    )
    parser.add_argument(
        "--mirror", action="store_true", help="the probe also trains on the mirror images"
    )
    parser.add_argument(
        "--correction",
        choices=CORRECTIONS,
        default="holm",
        help="the gate's per-class recall tests: holm (the product's default) or none "
        "(each class at alpha, the gate before; the stored runs before 7 December)",
    )
    parser.add_argument(
        "--grid", type=float, nargs="+", default=list(L2_GRID), help="L2 strengths, largest first"
    )
    parser.add_argument(
        "--sticky",
        action="store_true",
        help="while the gate refuses, serve the rest of the last order (as the product "
        "does: a job's queue is ranked once, the pool scored again after a promotion)",
    )
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="summarise these --out files instead of running"
    )
    parser.add_argument(
        "--reference-top1",
        type=float,
        help="the reference's top-1 (0-1), for the share each order reaches (--merge)",
    )
    parser.add_argument(
        "--label-cap", type=int, default=471, help="the target's labels (40 %% of the pool)"
    )
    args = parser.parse_args()
    if args.merge:
        runs = merged(args.merge)
        orders = list(dict.fromkeys(o for o, _ in runs))
        orders = [o for o in args.orders if o in orders] if args.orders != list(ORDERS) else orders
        seeds = [s for s in args.seeds if all((o, s) in runs for o in orders)]
        rounds = min(len(runs[(o, s)]) for o in orders for s in seeds) - 1
        target = (args.reference_top1, args.label_cap) if args.reference_top1 else None
        summarise(runs, orders, seeds, min(rounds, args.rounds), target)
        return
    global REFIT, GRID, STICKY, X_FLIP, CORRECTION
    REFIT, GRID, STICKY = args.refit, tuple(args.grid), args.sticky
    CORRECTION = args.correction
    torch.set_num_threads(1)
    data = features(args.work)
    if args.mirror:
        if "x_flip" not in data["pool"]:
            parser.error(f"{args.work}/proxy-features.pt predates --mirror: delete it")
        X_FLIP = data["pool"]["x_flip"]
    top1 = reference(data) if args.reference else args.reference_top1
    run_all(args, data, (top1, args.label_cap) if top1 else None)


def reference(data: dict[str, Any]) -> float:
    """The probe on every pool label (the target's 100 %), printed and returned."""
    pool, test = data["pool"], data["test"]
    classes = sorted(set(pool["labels"]))
    ref = fit(pool["x"], pool["labels"], list(range(len(pool["labels"]))), classes, 0)
    predicted = predict(ref, test["x"]).argmax(1).tolist()
    hits = [classes[i] == t for i, t in zip(predicted, test["labels"], strict=True)]
    print(f"reference (all {len(pool['labels'])} pool labels, refit={REFIT}): {mean(hits):.4f}")
    return mean(hits)


def run_all(
    args: argparse.Namespace, data: dict[str, Any], target: tuple[float, int] | None
) -> None:
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
            if args.out:  # after every run: a long sweep stopped early keeps what it did
                save(args.out, runs)
    summarise(runs, args.orders, args.seeds, args.rounds, target)


def summarise(
    runs: dict[tuple[str, int], list[dict[str, Any]]],
    orders: list[str],
    seeds: list[int],
    rounds: int,
    target: tuple[float, int] | None = None,
) -> None:
    """Mean top-1 per round, the difference from random, and (target: the reference's
    top-1 and a label cap) the share of the reference within the cap."""
    print(f"mean over seeds {seeds}: active top-1 (candidate top-1) per round")
    for order in orders:
        cells = []
        for r in range(rounds + 1):
            rows = [runs[(order, s)][r] for s in seeds]
            act = mean(x["top1"] for x in rows)
            cand = mean(x.get("candidate_top1", x["top1"]) for x in rows)
            cells.append(f"{act:.3f} ({cand:.3f})")
        print(f"{order:>12}: " + " | ".join(cells))
    for key in ("top1", "candidate_top1") if "random" in orders else ():
        print(f"difference from random, {key} points: mean ±se (seeds ahead / level / behind)")
        for order in [o for o in orders if o != "random"]:
            cells, total = [], []
            for r in range(1, rounds + 1):
                d = [100 * (runs[(order, s)][r][key] - runs[("random", s)][r][key]) for s in seeds]
                total.append(mean(d))
                ahead = sum(x > 1e-9 for x in d)
                behind = sum(x < -1e-9 for x in d)
                level = len(d) - ahead - behind
                se = stdev(d) / math.sqrt(len(d)) if len(d) > 1 else 0.0
                cells.append(f"{mean(d):+.1f} ±{se:.1f} ({ahead}/{level}/{behind})")
            print(f"{order:>16}: " + " | ".join(cells) + f" | mean {mean(total):+.2f}")
    if target:
        print_target(runs, orders, seeds, rounds, *target)


def print_target(
    runs: dict[tuple[str, int], list[dict[str, Any]]],
    orders: list[str],
    seeds: list[int],
    rounds: int,
    top1: float,
    cap: int,
) -> None:
    """Each order's mean top-1 at its last round within `cap` labels, as a share of top1."""
    print(f"share of the reference {top1:.4f} at the last round within {cap} labels (target 95 %)")
    for order in orders:
        within = [r for r in range(rounds + 1) if runs[(order, seeds[0])][r]["labels"] <= cap]
        r = within[-1]
        act = mean(runs[(order, s)][r]["top1"] for s in seeds)
        cand = mean(runs[(order, s)][r].get("candidate_top1", 0.0) for s in seeds)
        reached = sum(runs[(order, s)][r]["top1"] >= 0.95 * top1 for s in seeds)
        print(
            f"{order:>16}: round {r} ({runs[(order, seeds[0])][r]['labels']} labels) "
            f"active {100 * act:.1f} % = {100 * act / top1:.1f} % "
            f"(candidate {100 * cand:.1f} % = {100 * cand / top1:.1f} %), "
            f"{reached}/{len(seeds)} seeds reach 95 %"
        )


def merged(paths: list[Path]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """The runs of several --out files (one process per order or per seed range)."""
    runs = {}
    for path in paths:
        data = json.loads(path.read_text())
        for name, rounds in data.get("runs", data).items():
            order, _, seed = name.rpartition("-seed")
            runs[(order, int(seed))] = rounds
    return runs


def save(path: Path, runs: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
    path.write_text(json.dumps({f"{o}-seed{s}": v for (o, s), v in runs.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
