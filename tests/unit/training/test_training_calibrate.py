"""Temperature scaling: an over-confident model gets T > 1 and a lower NLL and ECE."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibrate import fit_temperature, nll, reliability, softmax

pytestmark = pytest.mark.torch


def _overconfident(n: int = 600, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits that are right 70 % of the time but claim ~100 % confidence."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    predicted = np.where(rng.random(n) < 0.7, labels, (labels + 1) % classes)
    logits = rng.normal(0, 0.5, (n, classes))
    logits[np.arange(n), predicted] += 3.0
    return (logits * 4).astype(np.float32), labels


def test_temperature_lowers_nll_and_ece_on_an_overconfident_model() -> None:
    logits, labels = _overconfident()
    temperature = fit_temperature(logits, labels)
    assert temperature > 1.5
    assert nll(logits, labels, temperature) < nll(logits, labels) - 0.1
    ece_before, _ = reliability(softmax(logits), labels)
    ece_after, bins = reliability(softmax(logits, temperature), labels)
    assert ece_after < ece_before / 2
    assert sum(b["fraction"] for b in bins) == pytest.approx(1.0)


def test_temperature_is_bounded_on_a_perfectly_separated_set() -> None:
    labels = np.arange(20) % 2
    sign = labels * 2.0 - 1.0
    logits = np.stack([-5.0 * sign, 5.0 * sign], axis=1).astype(np.float32)
    assert 0.2 <= fit_temperature(logits, labels) <= 10.0
