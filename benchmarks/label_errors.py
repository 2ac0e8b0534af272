"""How well the suspect-label list finds label errors: ph-snakes with 5 % of labels flipped.

    [PH_SNAKES=DIR] PYTHONPATH=. python benchmarks/label_errors.py [--flip 0.05] [--seeds 0 1 2]

Frozen EfficientNet-Lite0 features (training's probe code, served preprocessing) of the
train and val photos, computed once; for each seed, a seeded 5 % of the training labels
flipped to another class at random; 5-fold out-of-sample probabilities from the linear
probe on the noisy labels (val chooses L2), as `HERPSCORE_LABEL_ERRORS=kfold` computes
them after a training run; cleanlab ranks the suspects (the ranking the suspect list
stores). Precision and recall of the list's top-N and top-2N (N = the number flipped)
against the flipped set. Writes benchmarks/results/label_errors.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.backbones import build_backbone
from training.data import SafeImageFolder, discover_classes, eval_loader, eval_transform, scan_split
from training.head import extract_features
from training.label_errors import out_of_sample_probs, rank_suspects

DATA = Path(os.environ.get("PH_SNAKES", "/work/shared/data/ph-snakes"))
RESULTS = Path(__file__).resolve().parent / "results"
EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def features_of(split: str, classes: list[str], backbone: Any) -> tuple[torch.Tensor, np.ndarray]:
    samples = scan_split(DATA / split, classes, EXTENSIONS)
    spec = backbone.spec
    data = SafeImageFolder(samples, classes, eval_loader(spec), eval_transform(spec), name=split)
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    feats = extract_features(backbone.model, backbone.head, (x for x, _ in loader))
    return feats, np.asarray(data.targets)


def one_seed(
    train: tuple[torch.Tensor, np.ndarray],
    val: tuple[torch.Tensor, np.ndarray],
    classes: int,
    share: float,
    folds: int,
    seed: int,
) -> dict[str, Any]:
    began = time.perf_counter()
    train_x, train_y = train
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(train_y), size=round(share * len(train_y)), replace=False)
    noisy = train_y.copy()
    for i in flipped:  # to another class, uniformly
        noisy[i] = rng.choice([c for c in range(classes) if c != train_y[i]])
    probs = out_of_sample_probs(
        train_x, noisy, classes, (val[0], torch.as_tensor(val[1])), folds, seed
    )
    ranked = [s.index for s in rank_suspects(noisy, probs)]
    truth = {int(i) for i in flipped}
    rows = []
    for label, n in (("N", len(truth)), ("2N", 2 * len(truth)), ("whole list", len(ranked))):
        top = ranked[:n]
        hits = len(truth.intersection(top))
        rows.append(
            {
                "top": label,
                "n": n,
                "listed": len(top),
                "found": hits,
                "precision": hits / max(len(top), 1),
                "recall": hits / len(truth),
            }
        )
    return {
        "seed": seed,
        "flipped": len(truth),
        "listed": len(ranked),
        "oof_accuracy_vs_noisy": float((probs.argmax(1) == noisy).mean()),
        "oof_accuracy_vs_true": float((probs.argmax(1) == train_y).mean()),
        "rows": rows,
        "seconds": round(time.perf_counter() - began, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    classes = discover_classes(DATA)
    backbone = build_backbone("efficientnet_lite0", len(classes))
    train = features_of("train", classes, backbone)
    val = features_of("val", classes, backbone)
    featured = time.perf_counter() - began
    runs = [one_seed(train, val, len(classes), args.flip, args.folds, s) for s in args.seeds]
    command = (
        f"nice -n 10 PYTHONPATH=. python benchmarks/label_errors.py --flip {args.flip} "
        f"--seeds {' '.join(map(str, args.seeds))} --folds {args.folds} --threads {args.threads}"
    )
    result = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "train_photos": len(train[1]),
        "val_photos": len(val[1]),
        "classes": len(classes),
        "flip": args.flip,
        "folds": args.folds,
        "torch_threads": args.threads,
        "feature_seconds": round(featured, 1),
        "runs": runs,
    }

    def mean(top: str, key: str) -> float:
        return float(np.mean([r[key] for run in runs for r in run["rows"] if r["top"] == top]))

    lines = [
        "# Suspect labels on ph-snakes: precision and recall against flipped labels",
        "",
        f"`{command}` ({result['date']}, 2 cores shared with other agents, {args.threads} "
        "torch thread: times are rough).",
        "",
        f"- Training photos: {len(train[1])} in {len(classes)} classes; {args.flip:.0%} of their "
        f"labels flipped to another class at random (seeds {', '.join(map(str, args.seeds))}). "
        f"Validation photos (they choose the probe's L2): {len(val[1])}.",
        "- Model: frozen EfficientNet-Lite0 (ImageNet) features, linear probe "
        f"(training/head.py), {args.folds}-fold out-of-sample probabilities on the noisy labels "
        "(what `HERPSCORE_LABEL_ERRORS=kfold` computes for a run's training split).",
        "- Ranking: cleanlab `find_label_issues` (prune by noise rate), ranked by "
        "self-confidence (the given label's out-of-sample probability), lowest first.",
        f"- Time: features {featured:.0f} s once; folds and ranking per seed "
        f"{', '.join(str(r['seconds']) for r in runs)} s.",
        "",
        "| seed | flipped | listed | top-N precision | top-N recall | top-2N precision "
        "| top-2N recall | whole list precision | whole list recall |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        by = {r["top"]: r for r in run["rows"]}
        lines.append(
            f"| {run['seed']} | {run['flipped']} | {run['listed']} "
            f"| {by['N']['precision']:.2f} | {by['N']['recall']:.2f} "
            f"| {by['2N']['precision']:.2f} | {by['2N']['recall']:.2f} "
            f"| {by['whole list']['precision']:.2f} | {by['whole list']['recall']:.2f} |"
        )
    lines += [
        f"| mean | | | {mean('N', 'precision'):.2f} | {mean('N', 'recall'):.2f} "
        f"| {mean('2N', 'precision'):.2f} | {mean('2N', 'recall'):.2f} "
        f"| {mean('whole list', 'precision'):.2f} | {mean('whole list', 'recall'):.2f} |",
        "",
        "Out-of-sample accuracy of the probe against the noisy labels: "
        + ", ".join(f"{r['oof_accuracy_vs_noisy']:.3f}" for r in runs)
        + "; against the true labels: "
        + ", ".join(f"{r['oof_accuracy_vs_true']:.3f}" for r in runs)
        + ".",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "label_errors.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "label_errors.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
