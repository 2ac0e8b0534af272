"""Evaluation and calibration reports: metrics.json, confusion and reliability plots."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from training import calibrate, evaluate
from training.backbones import Backbone
from training.data import SafeImageFolder

log = logging.getLogger("training")


def evaluate_and_calibrate(
    backbone: Backbone,
    datasets: dict[str, SafeImageFolder],
    classes: list[str],
    out: Path,
    temperature: float | None = None,
    splits: tuple[str, ...] = ("val", "test"),
    extra: dict[str, Any] | None = None,
    probs_out: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """metrics.json: val/test metrics, confusion PNGs, temperature, ECE and reliability PNG.

    The temperature is fitted on val unless given (a refit reuses its selection run's).
    `probs_out`, if given, receives each evaluated split's calibrated probabilities."""
    model = backbone.model.cpu().eval()
    logits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    report: dict[str, Any] = {}
    for split in splits:
        if split not in datasets:
            continue
        logits[split] = evaluate.predict(model, datasets[split])
        report[split] = evaluate.classification_metrics(
            *logits[split], classes, datasets[split].paths
        )
        evaluate.plot_confusion(
            report[split]["confusion_matrix"],
            classes,
            out / f"confusion_{split}.png",
            f"{split}: top-1 {report[split]['top1']:.1%}",
        )
    fitted_on = "val" if temperature is None else "val, by the selection run"
    if temperature is None:
        temperature = calibrate.fit_temperature(*logits["val"])
    calibration: dict[str, Any] = {"temperature": temperature, "fitted_on": fitted_on}
    for split, (split_logits, labels) in logits.items():
        ece_before, bins_before = calibrate.reliability(calibrate.softmax(split_logits), labels)
        ece_after, bins_after = calibrate.reliability(
            calibrate.softmax(split_logits, temperature), labels
        )
        if probs_out is not None:
            probs_out[split] = calibrate.softmax(split_logits, temperature)
        calibration[split] = {
            "ece_before": ece_before,
            "ece_after": ece_after,
            "nll_before": calibrate.nll(split_logits, labels),
            "nll_after": calibrate.nll(split_logits, labels, temperature),
        }
        if split == "val":
            calibrate.plot_reliability(
                bins_before,
                bins_after,
                out / "reliability_val.png",
                f"val ECE {ece_before:.3f} -> {ece_after:.3f} (T = {temperature:.2f})",
            )
    report["calibration"] = calibration
    report.update(extra or {})
    log.info("temperature %.3f; %s", temperature, calibration)
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers for metadata.json and the registry."""
    summary: dict[str, Any] = {}
    for split in ("val", "test"):
        if split in report:
            r = report[split]
            summary[split] = {
                "n": r["n"],
                "top1": r["top1"],
                "top3": r["top3"],
                "macro_f1": r["macro"]["f1"],
                "weighted_f1": r["weighted"]["f1"],
            }
            if split in report["calibration"]:
                summary[split]["ece_before"] = report["calibration"][split]["ece_before"]
                summary[split]["ece_after"] = report["calibration"][split]["ece_after"]
    summary["temperature"] = report["calibration"]["temperature"]
    return summary
