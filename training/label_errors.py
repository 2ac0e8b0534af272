"""Out-of-sample probabilities for verified labels, for the suspect-label list.

`python -m training fit --label-errors MODE` writes OUT/label_probs.json, one row per image
with its class probabilities from a model that never trained on its label:

- `holdout`: the val and test images, as the selection run's model (calibrated with its
  temperature) predicted them; a `--refit` does not change them (val's are the selection
  run's, as its metrics are).
- `kfold`: those, plus every training image by K-fold: linear probes on the pretrained
  backbone's frozen features (which never saw these labels), each fitted on the other
  folds, val choosing the L2 strength.

The service ranks them with cleanlab (service/label_issues.py) and stores the suspects.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from service.label_issues import LABEL_PROBS_FILE, Suspect, rank_suspects
from training.backbones import Backbone
from training.data import SafeImageFolder, served_transform
from training.head import extract_features, fit_head

__all__ = [
    "LABEL_PROBS_FILE",
    "MODES",
    "Suspect",
    "kfold_rows",
    "out_of_sample_probs",
    "rank_suspects",
    "write_label_probs",
]

log = logging.getLogger("training")

MODES = ("holdout", "kfold", "off")
# L2 strengths for the K-fold probes: fewer than the full grid, K fits each (2 cores).
KFOLD_L2_GRID = (1e-2, 1e-3)

Row = dict[str, Any]


def out_of_sample_probs(
    features: torch.Tensor,
    labels: np.ndarray,
    num_classes: int,
    val: tuple[torch.Tensor, torch.Tensor],
    folds: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Each sample's class probabilities from a linear probe that never saw it (K folds).

    `val` (features and labels of a held-out split) chooses the probe's L2 strength in each
    fold, as in training; the folds are stratified by a seeded shuffle within each class.
    """
    if folds < 2:
        raise ValueError("K-fold needs at least 2 folds")
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        fold_of[rng.permutation(members)] = np.arange(len(members)) % folds
    probs = np.zeros((len(labels), num_classes), dtype=np.float64)
    targets = torch.as_tensor(labels, dtype=torch.long)
    for k in range(folds):
        held = torch.as_tensor(fold_of == k)
        if not bool(held.any()):
            continue  # fewer samples than folds
        fit = fit_head((features[~held], targets[~held]), val, num_classes, grid=KFOLD_L2_GRID)
        logits = features[held] @ fit.weight.T + fit.bias
        probs[held.numpy()] = torch.softmax(logits.double(), dim=1).numpy()
    return probs


def held_out_rows(
    root: Path, datasets: dict[str, SafeImageFolder], probs: dict[str, np.ndarray]
) -> list[Row]:
    """The evaluated splits' images with their calibrated probabilities (method holdout)."""
    rows: list[Row] = []
    for split, split_probs in probs.items():
        rows += _rows(root, datasets[split], split, split_probs, "holdout")
    return rows


def kfold_rows(
    args: argparse.Namespace,
    pretrained: Backbone,
    datasets: dict[str, SafeImageFolder],
    root: Path,
    folds: int = 5,
) -> list[Row]:
    """Every training image's K-fold probabilities from probes on the pretrained features."""
    views = {
        "train": datasets["train"].with_transform(served_transform(pretrained.spec)),
        "val": datasets["val"],
    }
    features = {}
    for name, dataset in views.items():
        loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
        features[name] = extract_features(pretrained.model, pretrained.head, (x for x, _ in loader))
    labels = np.asarray(datasets["train"].targets)
    folds = max(2, min(folds, int(np.bincount(labels).max())))
    probs = out_of_sample_probs(
        features["train"],
        labels,
        len(datasets["train"].classes),
        (features["val"], torch.tensor(datasets["val"].targets)),
        folds,
        args.seed,
    )
    log.info("label errors: %d-fold probabilities for %d training images", folds, len(labels))
    return _rows(root, datasets["train"], "train", probs, "kfold")


def write_label_probs(out: Path, classes: list[str], mode: str, rows: list[Row]) -> Path:
    """OUT/label_probs.json: the classes (column order) and one row per image."""
    path = out / LABEL_PROBS_FILE
    data = {"mode": mode, "classes": classes, "rows": rows}
    path.write_text(json.dumps(data, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("label errors: out-of-sample probabilities of %d images in %s", len(rows), path)
    return path


def _rows(
    root: Path, dataset: SafeImageFolder, split: str, probs: np.ndarray, method: str
) -> list[Row]:
    if len(probs) != len(dataset):
        raise ValueError(f"{split}: {len(probs)} probability rows for {len(dataset)} images")
    return [
        {
            "path": _relative(path, root),
            "split": split,
            "label": int(label),
            "method": method,
            "probs": [round(float(p), 6) for p in row],
        }
        for path, label, row in zip(dataset.paths, dataset.targets, probs, strict=True)
    ]


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()
