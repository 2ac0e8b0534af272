"""The suspect-label ranking (cleanlab's confident learning) on generated probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from service.label_issues import rank_suspects


def noisy_dataset(
    n: int = 300, classes: int = 4, flips: int = 12, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-sample probabilities of a decent model (right about the true class, with
    varied confidence) and labels of which `flips` were moved to another class."""
    rng = np.random.default_rng(seed)
    truth = np.arange(n) % classes
    probs = rng.dirichlet(np.ones(classes), size=n) * 0.2
    probs[np.arange(n), truth] += rng.uniform(0.6, 0.9, size=n)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = truth.copy()
    flipped = rng.choice(n, size=flips, replace=False)
    labels[flipped] = (truth[flipped] + rng.integers(1, classes, size=flips)) % classes
    return labels, probs, flipped


def test_flipped_labels_come_first_most_suspect_first() -> None:
    labels, probs, flipped = noisy_dataset(seed=2)
    suspects = rank_suspects(labels, probs)
    assert {s.index for s in suspects} == set(flipped.tolist())
    # Ordered by the given label's out-of-sample probability, lowest first.
    confidences = [s.self_confidence for s in suspects]
    assert confidences == sorted(confidences)
    for s in suspects:
        assert s.given == labels[s.index]
        assert s.self_confidence == pytest.approx(probs[s.index, labels[s.index]])
        assert s.predicted == probs[s.index].argmax()
        assert s.predicted_probability == pytest.approx(probs[s.index].max())


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_the_list_holds_flipped_labels_only(seed: int) -> None:
    """Confident learning may miss a few (it prunes as many as it estimates per pair of
    classes), but on a decent model's probabilities everything it lists was flipped."""
    labels, probs, flipped = noisy_dataset(seed=seed)
    listed = {s.index for s in rank_suspects(labels, probs)}
    assert listed <= set(flipped.tolist())
    assert len(listed) >= 0.75 * len(flipped)


def test_clean_labels_give_no_suspects() -> None:
    labels, probs, _ = noisy_dataset(flips=0)
    assert rank_suspects(labels, probs) == []


def test_one_class_or_nothing_gives_no_suspects() -> None:
    assert rank_suspects(np.zeros(5, dtype=int), np.full((5, 2), 0.5)) == []
    assert rank_suspects(np.zeros(0, dtype=int), np.zeros((0, 3))) == []


def test_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match="3 labels"):
        rank_suspects(np.array([0, 1, 0]), np.full((2, 2), 0.5))
