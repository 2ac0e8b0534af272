"""Suspect labels: K-fold probabilities never see their own sample; cleanlab ranks the flips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.label_errors import out_of_sample_probs, rank_suspects

CLASSES = 4


def _blobs(per_class: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Well separated Gaussian clusters in 16 dimensions, one per class."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (CLASSES, 16))
    labels = np.repeat(np.arange(CLASSES), per_class)
    x = centres[labels] + rng.normal(0, 1, (len(labels), 16))
    return torch.as_tensor(x, dtype=torch.float32), labels


def test_flipped_labels_come_first_in_the_suspect_list() -> None:
    x, clean = _blobs(60, seed=0)
    val_x, val_y = _blobs(15, seed=1)
    rng = np.random.default_rng(2)
    flipped = rng.choice(len(clean), size=12, replace=False)
    noisy = clean.copy()
    noisy[flipped] = (clean[flipped] + rng.integers(1, CLASSES, size=12)) % CLASSES

    probs = out_of_sample_probs(x, noisy, CLASSES, (val_x, torch.as_tensor(val_y)), folds=4)
    assert probs.shape == (len(noisy), CLASSES)
    assert np.allclose(probs.sum(1), 1.0)
    suspects = rank_suspects(noisy, probs)
    found = {s.index for s in suspects}
    assert found <= set(flipped.tolist())  # every suspect is a flipped label here
    # cleanlab keeps as many as it estimates the noise to be: not always every flip.
    assert len(found) >= 10
    first = suspects[0]
    assert first.given == noisy[first.index] and first.predicted == clean[first.index]
    assert [s.self_confidence for s in suspects] == sorted(s.self_confidence for s in suspects)


def test_out_of_sample_probs_needs_two_folds() -> None:
    x, y = _blobs(5, seed=0)
    with pytest.raises(ValueError):
        out_of_sample_probs(x, y, CLASSES, (x, torch.as_tensor(y)), folds=1)
