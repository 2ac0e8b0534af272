"""Likely label errors among verified labels, ranked by cleanlab's confident learning.

Torch-free (numpy and cleanlab): the service ranks a training run's out-of-sample
probabilities with it (service/suspects.py) and the benchmark ranks its K-fold ones.
cleanlab is part of the `train` extra, so it is imported where a ranking is made.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

# What `python -m training fit --label-errors MODE` writes into its run folder.
LABEL_PROBS_FILE = "label_probs.json"


@dataclass(frozen=True)
class Suspect:
    """One verified label the model disagrees with, most suspect first."""

    index: int  # into the labels given
    given: int
    predicted: int
    self_confidence: float  # the out-of-sample probability of the given label
    predicted_probability: float


def rank_suspects(labels: np.ndarray, pred_probs: np.ndarray) -> list[Suspect]:
    """The labels cleanlab's confident learning flags (`find_label_issues`, pruned by noise
    rate), most suspect (lowest self-confidence) first. `pred_probs` must be out-of-sample:
    each row from a model that never trained on that label (held-out or K-fold)."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(pred_probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"{len(labels)} labels but pred_probs of shape {probs.shape}")
    if len(labels) == 0 or len(np.unique(labels)) < 2:
        return []  # confident learning compares classes: one class gives nothing to rank
    probs = probs / probs.sum(axis=1, keepdims=True)  # float noise: cleanlab checks sums
    from cleanlab.filter import find_label_issues

    with warnings.catch_warnings():
        # "May not flag all label issues in class X, it has too few examples": expected on
        # small exports, and the list says no more than it found.
        warnings.simplefilter("ignore", UserWarning)
        ranked = find_label_issues(
            labels=labels, pred_probs=probs, return_indices_ranked_by="self_confidence"
        )
    return [
        Suspect(
            index=int(i),
            given=int(labels[i]),
            predicted=int(probs[i].argmax()),
            self_confidence=float(probs[i, labels[i]]),
            predicted_probability=float(probs[i].max()),
        )
        for i in ranked
    ]
