"""Likely label errors: out-of-sample probabilities for verified labels, ranked by cleanlab."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from cleanlab.filter import find_label_issues

from training.head import fit_head

# L2 strengths for the K-fold probes: fewer than the full grid, K fits each (2 cores).
KFOLD_L2_GRID = (1e-2, 1e-3)


@dataclass(frozen=True)
class Suspect:
    """One verified label the model disagrees with, most suspect first."""

    index: int  # into the labels given
    given: int
    predicted: int
    self_confidence: float  # the out-of-sample probability of the given label


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
        fit = fit_head((features[~held], targets[~held]), val, num_classes, grid=KFOLD_L2_GRID)
        logits = features[held] @ fit.weight.T + fit.bias
        probs[held.numpy()] = torch.softmax(logits.double(), dim=1).numpy()
    return probs


def rank_suspects(labels: np.ndarray, pred_probs: np.ndarray) -> list[Suspect]:
    """The labels cleanlab's confident learning flags, most suspect (lowest self-confidence)
    first. `pred_probs` must be out-of-sample (validation/test predictions or K-fold)."""
    ranked = find_label_issues(
        labels=labels, pred_probs=pred_probs, return_indices_ranked_by="self_confidence"
    )
    return [
        Suspect(
            index=int(i),
            given=int(labels[i]),
            predicted=int(pred_probs[i].argmax()),
            self_confidence=float(pred_probs[i, labels[i]]),
        )
        for i in ranked
    ]
