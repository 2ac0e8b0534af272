"""Evaluation: logits on a dataset, accuracy/precision/recall/F1, confusion matrix, hard cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset[tuple[torch.Tensor, int]], batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) float32 and labels (N,) for a dataset, in dataset order."""
    model.eval()
    device = next(model.parameters()).device
    logits, labels = [], []
    for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits.append(model(images.to(device)).float().cpu())
        labels.append(targets)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def classification_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    paths: list[Path],
    hardest: int = 10,
) -> dict[str, Any]:
    """Top-1/top-3, macro and weighted P/R/F1, per-class scores, confusion and hard examples."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    predicted = logits.argmax(axis=1)
    ids = list(range(len(classes)))
    result: dict[str, Any] = {
        "n": len(labels),
        "top1": float((predicted == labels).mean()),
        "top3": topk_accuracy(logits, labels, 3),
        "nll": float(-log_softmax(logits)[np.arange(len(labels)), labels].mean()),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            labels, predicted, labels=ids, average=average, zero_division=0
        )
        result[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    p, r, f, support = precision_recall_fscore_support(
        labels, predicted, labels=ids, average=None, zero_division=0
    )
    result["per_class"] = {
        name: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    result["confusion_matrix"] = confusion_matrix(labels, predicted, labels=ids).tolist()
    result["hardest"] = hardest_examples(logits, labels, classes, paths, hardest)
    return result


def hardest_examples(
    logits: np.ndarray, labels: np.ndarray, classes: list[str], paths: list[Path], limit: int
) -> list[dict[str, Any]]:
    """The misclassified images with the highest loss, worst first."""
    logp = log_softmax(logits)
    loss = -logp[np.arange(len(labels)), labels]
    predicted = logits.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    order = wrong[np.argsort(-loss[wrong])][:limit]
    return [
        {
            "path": str(paths[i]),
            "label": classes[labels[i]],
            "predicted": classes[predicted[i]],
            "confidence": float(np.exp(logp[i, predicted[i]])),
            "loss": float(loss[i]),
        }
        for i in order
    ]


def plot_confusion(matrix: list[list[int]], classes: list[str], path: Path, title: str) -> None:
    """Write a confusion-matrix PNG (rows: true label, columns: prediction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.asarray(matrix)
    side = max(5.0, 0.45 * len(classes) + 3)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(classes)), [_short(c) for c in classes], rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), [_short(c) for c in classes], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = data.max() if data.size else 0
    for (row, col), value in np.ndenumerate(data):
        if value:
            colour = "white" if value > top / 2 else "black"
            ax.text(col, row, str(value), ha="center", va="center", fontsize=6, color=colour)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(label: str, width: int = 28) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"
