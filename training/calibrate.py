"""Temperature scaling on validation logits, expected calibration error, reliability diagram."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

# Bounds keep a perfectly separated (tiny or easy) validation set from driving T towards 0.
MIN_T, MAX_T = 0.2, 10.0


def fit_temperature(logits: np.ndarray, labels: np.ndarray, steps: int = 200) -> float:
    """The temperature T > 0 that minimises the NLL of softmax(logits / T) on these labels."""
    x = torch.as_tensor(logits, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.int64)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(np.clip(log_t.exp().item(), MIN_T, MAX_T))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the labels under softmax(logits / T)."""
    x = torch.as_tensor(logits, dtype=torch.float64) / temperature
    return float(F.cross_entropy(x, torch.as_tensor(labels, dtype=torch.int64)))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def reliability(
    probs: np.ndarray, labels: np.ndarray, bins: int = 15
) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error (equal-width confidence bins) and the per-bin table."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece, table = 0.0, []
    for low, high in pairwise(edges):
        inside = (confidence > low) & (confidence <= high)
        if not inside.any():
            continue
        acc, conf = float(correct[inside].mean()), float(confidence[inside].mean())
        weight = float(inside.mean())
        ece += weight * abs(acc - conf)
        table.append(
            {
                "low": float(low),
                "high": float(high),
                "accuracy": acc,
                "confidence": conf,
                "fraction": weight,
            }
        )
    return ece, table


def plot_reliability(
    before: list[dict[str, float]], after: list[dict[str, float]], path: Path, title: str
) -> None:
    """Reliability diagram: accuracy against confidence per bin, before and after scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    for table, name in ((before, "before"), (after, "after")):
        ax.plot(
            [b["confidence"] for b in table], [b["accuracy"] for b in table], marker="o", label=name
        )
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
