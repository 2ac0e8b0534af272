"""`training fit`'s recipe: scan, fine-tune in two stages, choose, report, export, publish."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import label_errors
from training.artifacts import export_model_folder
from training.backbones import Backbone, build_backbone, fit_size
from training.data import (
    DatasetFolder,
    SafeImageFolder,
    decode_for_training,
    eval_loader,
    eval_transform,
    scan_dataset,
    train_transform,
)
from training.options import get_args_parser
from training.reports import evaluate_and_calibrate
from training.runtime import build_device, build_run_dir, run_log, seed_everything, tune_malloc
from training.selection import PROBE, choose, fit_baseline
from training.trainer import Trainer, kept_epochs, probe_l2

__all__ = ["build_datasets", "build_model", "get_args_parser", "main", "refit"]

log = logging.getLogger("training")


def main(args: argparse.Namespace) -> Path:
    """Run the whole pipeline; returns the model folder (OUT/model)."""
    run_dir = build_run_dir(args)
    with run_log(run_dir):
        seed_everything(args.seed)
        tune_malloc()
        device = build_device(args)
        data = scan_dataset(args.data, args.val_fraction, args.seed, args.min_per_class)
        backbone = build_model(args, data)
        datasets = build_datasets(data, backbone, args.min_scale, args.jitter, args.augment)
        trainer = Trainer(args, backbone, datasets, device, run_dir)
        baseline = None
        if args.baseline == "probe":
            baseline, trainer.probe_fit = fit_baseline(
                args, backbone, datasets, run_dir, trainer.class_weights()
            )
        trainer.fit()
        extra = {}
        if baseline is not None:
            extra["selection"] = choose(backbone, baseline, datasets["val"], args.batch_size)
        held_out: dict[str, np.ndarray] = {}
        report = evaluate_and_calibrate(
            backbone, datasets, data.classes, args.out, extra=extra, probs_out=held_out
        )
        write_out_of_sample(args, data, datasets, held_out)
        if args.refit and report.get("selection", {}).get("published") == PROBE:
            log.info("no refit: the probe baseline beat the fine-tune on validation")
        elif args.refit:
            backbone, datasets, trainer, report = refit(
                args, data, device, run_dir, trainer, report
            )
        folder = export_model_folder(args, backbone, data, datasets, report, trainer.history)
        if args.publish:
            from training.publish import publish

            version = publish(folder, args.name or args.out.name, f"training:{run_dir}", report)
            log.info("published as candidate model version %d", version)
        log.info("model folder: %s", folder)
    return folder


def write_out_of_sample(
    args: argparse.Namespace,
    data: DatasetFolder,
    datasets: dict[str, SafeImageFolder],
    held_out: dict[str, np.ndarray],
) -> None:
    """OUT/label_probs.json for the suspect-label list (training/label_errors.py): the
    selection run's val/test probabilities, plus K-fold ones for train with `kfold`."""
    if args.label_errors == "off":
        (args.out / label_errors.LABEL_PROBS_FILE).unlink(missing_ok=True)
        return
    rows = label_errors.held_out_rows(data.root, datasets, held_out)
    if args.label_errors == "kfold":
        pretrained = build_model(args, data)  # frozen features that never saw these labels
        rows += label_errors.kfold_rows(args, pretrained, datasets, data.root)
    label_errors.write_label_probs(args.out, data.classes, args.label_errors, rows)


def refit(
    args: argparse.Namespace,
    data: DatasetFolder,
    device: torch.device,
    run_dir: Path,
    selection: Trainer,
    selection_report: dict[str, Any],
) -> tuple[Backbone, dict[str, SafeImageFolder], Trainer, dict[str, Any]]:
    """Train a fresh model on train + val, stopping each stage where the selection run kept
    its weights (same schedule, same seed), and calibrate it with the selection run's
    temperature. Val has been trained on, so its metrics stay those of the selection run
    (metrics_selection.json keeps that run's whole report); test is measured afresh."""
    epochs = kept_epochs(selection.history, (1, 2))
    (args.out / "metrics_selection.json").write_text(json.dumps(selection_report, indent=2) + "\n")
    log.info("refit on train + val: epochs per stage %s (kept by the selection run)", epochs)
    seed_everything(args.seed)
    backbone = build_model(args, data)
    merged = DatasetFolder(
        data.root,
        data.classes,
        {**data.splits, "train": data.splits["train"] + data.splits["val"]},
        data.val_source,
        data.provenance,
    )
    datasets = build_datasets(merged, backbone, args.min_scale, args.jitter, args.augment)
    refit_dir = run_dir / "refit"
    refit_dir.mkdir(exist_ok=True)
    resume = "auto" if args.resume and (refit_dir / "last.pth").is_file() else None
    trainer = Trainer(
        argparse.Namespace(**{**vars(args), "resume": resume}),
        backbone,
        datasets,
        device,
        refit_dir,
        stop_after=epochs,
    )
    if args.stage1 == "probe":  # the same L2 strength, fitted on train + val
        trainer.probe_l2 = probe_l2(selection.history)
    trainer.fit()
    temperature = selection_report["calibration"]["temperature"]
    kept = {"selection": selection_report["selection"]} if "selection" in selection_report else {}
    report = evaluate_and_calibrate(
        backbone,
        datasets,
        data.classes,
        args.out,
        temperature=temperature,
        splits=("test",),
        extra=kept,
    )
    report["val"] = selection_report["val"]
    report["refit"] = {
        "epochs": epochs,
        "train_images": len(datasets["train"]),
        "val": "trained on; its metrics and the temperature are the selection run's",
        "selection_test": selection_report.get("test", {}).get("top1"),
    }
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return backbone, datasets, trainer, report


def build_model(args: argparse.Namespace, data: DatasetFolder) -> Backbone:
    """The backbone of --backbone with a new head for the data's classes."""
    size = fit_size(args.backbone) if args.size is None else args.size
    return build_backbone(
        args.backbone, len(data.classes), args.weights, size, args.resize, args.dropout
    )


def build_datasets(
    data: DatasetFolder,
    backbone: Backbone,
    min_scale: float = 0.35,
    jitter: float = 0.2,
    augment: str = "jitter",
) -> dict[str, SafeImageFolder]:
    """Augmented train set; val/test (and INT8 calibration) through the served preprocessing."""
    spec = backbone.spec
    short_side = round(spec.size * 1.25)
    datasets = {
        "train": SafeImageFolder(
            data.splits["train"],
            data.classes,
            lambda path: decode_for_training(path, short_side),
            train_transform(spec, min_scale, jitter, augment),
            name="train",
        )
    }
    for split in ("val", "test"):
        if split in data.splits:
            datasets[split] = SafeImageFolder(
                data.splits[split],
                data.classes,
                eval_loader(spec),
                eval_transform(spec),
                name=split,
            )
    return datasets
