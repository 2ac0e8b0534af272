"""Build tiny, deterministic ONNX classifiers that meet the herpscore model contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_model_folder(
    folder: Path,
    labels: list[str] | None = None,
    size: int = 32,
    resize: str = "shorter_side",
    temperature: float = 1.0,
    seed: int = 0,
    scale: float = 4.0,
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write model.onnx, class_map.json and metadata.json for a channel-mean linear classifier.

    logits = scale * W @ mean_rgb(x) + b: colour decides the class, so tests can make
    images that the model labels predictably (red, green, blue, ... dominant).
    """
    labels = labels or ["Naja_philippinensis", "Ptyas_carinata", "Boiga_dendrophila"]
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = len(labels)
    weight = np.zeros((3, classes), dtype=np.float32)
    for i in range(classes):
        weight[i % 3, i] = 1.0
    weight += rng.normal(0, 0.01, size=weight.shape).astype(np.float32)
    weight *= scale
    bias = np.zeros((classes,), dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    (folder / "class_map.json").write_text(
        json.dumps({str(i): label for i, label in enumerate(labels)}), encoding="utf-8"
    )
    metadata: dict[str, Any] = {
        "format": "herpscore-model/1",
        "name": folder.name,
        "backbone": "tiny-channel-mean",
        "input": {
            "size": size,
            "resize": resize,
            "crop_pct": 0.875,
            "interpolation": "bilinear",
            "mean": [0.5, 0.5, 0.5],
            "std": [0.5, 0.5, 0.5],
        },
        "temperature": temperature,
        "seed": seed,
    }
    metadata.update(extra_metadata or {})
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    return folder
