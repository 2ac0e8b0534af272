"""The linear-probe baseline and the choice, on validation, between it and the fine-tune."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training import evaluate, head
from training.backbones import Backbone
from training.checkpoint import load_checkpoint, save_checkpoint
from training.data import SafeImageFolder

log = logging.getLogger("training")

PROBE = "probe"
FINE_TUNE = "fine-tune"


@dataclass
class Baseline:
    """The probe model's weights (trunk as pretrained, head fitted) and how it was chosen."""

    state: dict[str, torch.Tensor]
    l2: float


def fit_baseline(
    args: argparse.Namespace,
    backbone: Backbone,
    datasets: dict[str, SafeImageFolder],
    run_dir: Path,
    class_weights: torch.Tensor | None,
) -> tuple[Baseline, head.HeadFit | None]:
    """Fit the probe on the model as built (before any training) and keep it in
    OUT/run/probe.pth; a resumed run reads it back. The model's head is left as it was.

    Returns the baseline and, when it was fitted now, the fit (stage 1 `probe` reuses it)."""
    path = run_dir / "probe.pth"
    if args.resume and path.is_file():
        saved = load_checkpoint(path)
        log.info("probe baseline read back from %s", path)
        return Baseline(saved["model"], float(saved["l2"])), None
    fresh_head = {k: v.detach().clone() for k, v in backbone.head.state_dict().items()}
    fit = head.fit_probe(
        backbone,
        datasets,
        args.batch_size,
        args.workers,
        class_weights,
        args.label_smoothing,
    )
    head.install(backbone.head, fit)
    state = {k: v.detach().cpu().clone() for k, v in backbone.model.state_dict().items()}
    backbone.head.load_state_dict(fresh_head)
    save_checkpoint({"model": state, "l2": fit.l2}, path)
    return Baseline(state, fit.l2), fit


def val_scores(model: torch.nn.Module, dataset: SafeImageFolder, batch_size: int) -> dict[str, Any]:
    """What the choice compares: top-1, macro-F1 and NLL (uncalibrated) on validation."""
    logits, labels = evaluate.predict(model, dataset, batch_size)
    metrics = evaluate.classification_metrics(logits, labels, dataset.classes, dataset.paths, 0)
    return {
        "n": metrics["n"],
        "top1": metrics["top1"],
        "macro_f1": metrics["macro"]["f1"],
        "nll": metrics["nll"],
    }


def better(fine_tune: dict[str, Any], probe: dict[str, Any]) -> str:
    """The rule: higher validation top-1 wins, then lower NLL; a full tie keeps the fine-tune."""
    if (probe["top1"], -probe["nll"]) > (fine_tune["top1"], -fine_tune["nll"]):
        return PROBE
    return FINE_TUNE


def choose(
    backbone: Backbone, baseline: Baseline, dataset: SafeImageFolder, batch_size: int
) -> dict[str, Any]:
    """Leave the better of the fine-tuned weights and the probe in `backbone.model`;
    returns the record of both for metrics.json and metadata.json."""
    model = backbone.model
    tuned = {k: v.detach().clone() for k, v in model.state_dict().items()}
    scores = {FINE_TUNE: val_scores(model, dataset, batch_size)}
    model.load_state_dict(baseline.state)
    scores[PROBE] = val_scores(model, dataset, batch_size)
    published = better(scores[FINE_TUNE], scores[PROBE])
    if published == FINE_TUNE:
        model.load_state_dict(tuned)
    log.info(
        "published the %s: val top-1 fine-tune %.3f, probe %.3f (NLL %.4f, %.4f)",
        published,
        scores[FINE_TUNE]["top1"],
        scores[PROBE]["top1"],
        scores[FINE_TUNE]["nll"],
        scores[PROBE]["nll"],
    )
    return {
        "published": published,
        "rule": "higher validation top-1, then lower validation NLL; a tie keeps the fine-tune",
        "val": scores,
        "probe_l2": baseline.l2,
    }
