"""The model folder a run leaves: ONNX (checked against torch), INT8, class map, metadata."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service.imaging import sha256_file
from service.modelspec import MODEL_FORMAT, load_artifact
from training import export
from training.backbones import Backbone
from training.data import DatasetFolder, SafeImageFolder, eval_loader, eval_transform
from training.reports import summarise
from training.runtime import jsonable

log = logging.getLogger("training")


def export_model_folder(
    args: argparse.Namespace,
    backbone: Backbone,
    data: DatasetFolder,
    datasets: dict[str, SafeImageFolder],
    report: dict[str, Any],
    history: list[dict[str, Any]],
) -> Path:
    """Write OUT/model (ONNX, optional INT8, class_map.json, metadata.json) and validate it."""
    folder = args.out / "model"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in ("model.int8.onnx", "metadata.json"):
        (folder / stale).unlink(missing_ok=True)
    model, spec = backbone.model.cpu().eval(), backbone.spec
    export.export_onnx(model, spec.size, folder / "model.onnx")
    val_inputs = _stack(datasets["val"], len(datasets["val"]))
    val_labels = np.asarray(datasets["val"].targets)
    parity = export.check_parity(folder / "model.onnx", model, val_inputs[: args.parity_images])
    log.info("ONNX parity: %s", parity)
    int8: dict[str, Any] = {"requested": bool(args.int8)}
    if args.int8 and report.get(
        "refit"
    ):  # checked on images it was trained on, the rule would pass
        int8 |= {"kept": False, "reason": "not built: a refit leaves no held-out images"}
    elif args.int8:
        int8.update(build_int8(args, folder, data, backbone, val_inputs, val_labels))
    class_map = {str(i): name for i, name in enumerate(data.classes)}
    (folder / "class_map.json").write_text(json.dumps(class_map, indent=2, ensure_ascii=False))
    files = ["model.onnx", "model.int8.onnx", "class_map.json"]
    metadata = {
        "format": MODEL_FORMAT,
        "name": args.name or args.out.name,
        "input": spec.to_dict(),
        "temperature": report["calibration"]["temperature"],
        "backbone": backbone.name,
        "weights": backbone.weights,
        "num_classes": len(data.classes),
        "training": {
            "data": data.provenance,
            "val_source": data.val_source,
            "images": {k: len(v) for k, v in datasets.items()},
            "skipped": {k: [[str(p), r] for p, r in v.skipped] for k, v in datasets.items()},
            "seed": args.seed,
            "epochs_run": {s: sum(1 for h in history if h["stage"] == s) for s in (1, 2)},
            "args": jsonable(vars(args)),
        },
        "metrics": summarise(report),
        "refit": report.get("refit"),
        "selection": report.get("selection"),
        "parity": parity,
        "int8": int8,
        "files_sha256": {n: sha256_file(folder / n) for n in files if (folder / n).is_file()},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False))
    load_artifact(folder)
    return folder


def build_int8(
    args: argparse.Namespace,
    folder: Path,
    data: DatasetFolder,
    backbone: Backbone,
    val_inputs: np.ndarray,
    val_labels: np.ndarray,
) -> dict[str, Any]:
    """Quantise on training images; keep model.int8.onnx only if it passes the accuracy rule."""
    rng = np.random.default_rng(args.seed)
    train = data.splits["train"]
    chosen = sorted(rng.choice(len(train), min(args.calibration_images, len(train)), replace=False))
    calibration_set = SafeImageFolder(
        [train[i] for i in chosen],
        data.classes,
        eval_loader(backbone.spec),
        eval_transform(backbone.spec),
        name="int8 calibration",
    )
    int8_path = folder / "model.int8.onnx"
    export.quantize_int8(
        folder / "model.onnx", int8_path, _stack(calibration_set, len(calibration_set))
    )
    decision = export.int8_decision(
        export.ort_logits(folder / "model.onnx", val_inputs),
        export.ort_logits(int8_path, val_inputs),
        val_labels,
    )
    decision["calibration_images"] = len(calibration_set)
    decision["size_bytes"] = {
        "fp32": (folder / "model.onnx").stat().st_size,
        "int8": int8_path.stat().st_size,
    }
    if not decision["kept"]:
        int8_path.unlink()
    log.info("INT8: %s", decision)
    return decision


def _stack(dataset: SafeImageFolder, limit: int) -> np.ndarray:
    return np.stack([dataset[i][0].numpy() for i in range(min(limit, len(dataset)))])
