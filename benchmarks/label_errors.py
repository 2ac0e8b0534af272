"""How well the suspect-label list finds label errors: ph-snakes with 5 % of labels flipped.

    [PH_SNAKES=DIR] PYTHONPATH=. python benchmarks/label_errors.py [--flip 0.05] [--seed 0]

Frozen EfficientNet-Lite0 features (training's probe code, served preprocessing) of the
train and val photos; a seeded 5 % of the training labels flipped to another class at
random; 5-fold out-of-sample probabilities from the linear probe on the noisy labels
(val chooses L2); cleanlab ranks the suspects. Precision and recall of the list's top-N
against the flipped set. Writes benchmarks/results/label_errors.md.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from training.backbones import build_backbone
from training.data import SafeImageFolder, discover_classes, eval_loader, eval_transform, scan_split
from training.head import extract_features
from training.label_errors import out_of_sample_probs, rank_suspects

DATA = Path(os.environ.get("PH_SNAKES", "/work/shared/data/ph-snakes"))
RESULTS = Path(__file__).resolve().parent / "results"
EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def features_of(split: str, classes: list[str], backbone) -> tuple[torch.Tensor, np.ndarray]:  # type: ignore[no-untyped-def]
    samples = scan_split(DATA / split, classes, EXTENSIONS)
    spec = backbone.spec
    data = SafeImageFolder(samples, classes, eval_loader(spec), eval_transform(spec), name=split)
    loader = torch.utils.data.DataLoader(data, batch_size=32)
    feats = extract_features(backbone.model, backbone.head, (x for x, _ in loader))
    return feats, np.asarray(data.targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    began = time.perf_counter()
    classes = discover_classes(DATA)
    backbone = build_backbone("efficientnet_lite0", len(classes))
    train_x, train_y = features_of("train", classes, backbone)
    val_x, val_y = features_of("val", classes, backbone)
    featured = time.perf_counter()

    rng = np.random.default_rng(args.seed)
    flipped = rng.choice(len(train_y), size=round(args.flip * len(train_y)), replace=False)
    noisy = train_y.copy()
    for i in flipped:  # to another class, uniformly
        noisy[i] = rng.choice([c for c in range(len(classes)) if c != train_y[i]])
    probs = out_of_sample_probs(
        train_x, noisy, len(classes), (val_x, torch.as_tensor(val_y)), args.folds, args.seed
    )
    suspects = rank_suspects(noisy, probs)
    ranked = [s.index for s in suspects]
    truth = set(int(i) for i in flipped)
    rows = []
    for n in sorted({len(truth), 2 * len(truth), len(ranked)}):
        top = ranked[:n]
        hits = len(truth.intersection(top))
        rows.append((n, hits, hits / max(len(top), 1), hits / len(truth)))
    oof_acc = float((probs.argmax(1) == noisy).mean())
    lines = [
        "# Suspect labels on ph-snakes: precision and recall against flipped labels",
        "",
        f"`PYTHONPATH=. python benchmarks/label_errors.py --flip {args.flip} --seed "
        f"{args.seed} --folds {args.folds}` ({time.strftime('%Y-%m-%d')}, 2 shared cores, "
        "other helpers running: times are rough).",
        "",
        f"- Training photos: {len(train_y)} in {len(classes)} classes; flipped at random "
        f"(seed {args.seed}): {len(truth)}. Validation photos (choose the probe's L2): "
        f"{len(val_y)}.",
        "- Model: frozen EfficientNet-Lite0 (ImageNet) features, linear probe "
        f"(training/head.py), {args.folds}-fold out-of-sample probabilities on the noisy labels "
        f"(their accuracy against the noisy labels: {oof_acc:.3f}).",
        "- Ranking: cleanlab `find_label_issues`, ranked by self-confidence; the list holds "
        f"{len(ranked)} photos.",
        f"- Time: features {featured - began:.0f} s, folds and ranking "
        f"{time.perf_counter() - featured:.0f} s.",
        "",
        "| top-N | flipped found | precision | recall |",
        "|---:|---:|---:|---:|",
        *[f"| {n} | {hits} | {p:.2f} | {r:.2f} |" for n, hits, p, r in rows],
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "label_errors.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
