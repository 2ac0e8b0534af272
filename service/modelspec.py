"""The model artifact contract: what a model folder must hold, and the check that it does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.errors import InvalidModel
from service.imaging import InputSpec, sha256_file

MODEL_FORMAT = "herpscore-model/1"
REQUIRED_FILES = ("model.onnx", "class_map.json", "metadata.json")
OPTIONAL_FILES = ("model.int8.onnx",)


@dataclass(frozen=True)
class ModelArtifact:
    """A validated model folder: its labels in output order, its input spec, its temperature."""

    path: Path
    labels: list[str]
    spec: InputSpec
    temperature: float
    metadata: dict[str, Any]
    files_sha256: dict[str, str]

    @property
    def class_map(self) -> dict[str, str]:
        return {str(i): label for i, label in enumerate(self.labels)}


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidModel(f"{path.name} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"{path.name} is not valid JSON: {exc}") from None


def parse_class_map(raw: Any) -> list[str]:
    """class_map.json -> labels by output index; keys must be exactly 0..n-1."""
    if not isinstance(raw, dict) or not raw:
        raise InvalidModel("class_map.json must be a non-empty object {index: label}")
    try:
        indexed = {int(k): v for k, v in raw.items()}
    except ValueError:
        raise InvalidModel("class_map.json keys must be integers 0..n-1") from None
    if sorted(indexed) != list(range(len(indexed))):
        raise InvalidModel("class_map.json keys must be exactly 0..n-1 with no gaps")
    labels = [indexed[i] for i in range(len(indexed))]
    if not all(isinstance(v, str) and v.strip() for v in labels):
        raise InvalidModel("class_map.json labels must be non-empty strings")
    if len(set(labels)) != len(labels):
        raise InvalidModel("class_map.json has duplicate labels")
    return labels


def load_artifact(folder: str | Path, check_onnx: bool = True) -> ModelArtifact:
    """Read and validate a model folder against the contract; InvalidModel says what is wrong."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise InvalidModel(f"model folder {path} does not exist or is not a folder")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise InvalidModel(f"model folder lacks {', '.join(missing)}", {"missing": missing})
    labels = parse_class_map(read_json(path / "class_map.json"))
    metadata = read_json(path / "metadata.json")
    if not isinstance(metadata, dict):
        raise InvalidModel("metadata.json must be an object")
    if metadata.get("format") != MODEL_FORMAT:
        raise InvalidModel(f"metadata.json format must be {MODEL_FORMAT!r}")
    try:
        spec = InputSpec.from_metadata(metadata)
    except (ValueError, TypeError) as exc:
        raise InvalidModel(f"metadata.json input block is invalid: {exc}") from None
    temperature = metadata.get("temperature", 1.0)
    if not isinstance(temperature, int | float) or not 0.01 <= float(temperature) <= 100:
        raise InvalidModel("metadata.json temperature must be a number in [0.01, 100]")
    if check_onnx:
        check_onnx_io(path / "model.onnx", spec.size, len(labels))
        if (path / "model.int8.onnx").is_file():
            check_onnx_io(path / "model.int8.onnx", spec.size, len(labels))
    present = [n for n in REQUIRED_FILES + OPTIONAL_FILES if (path / n).is_file()]
    return ModelArtifact(
        path=path,
        labels=labels,
        spec=spec,
        temperature=float(temperature),
        metadata=metadata,
        files_sha256={name: sha256_file(path / name) for name in present},
    )


def check_onnx_io(onnx_path: Path, size: int, num_classes: int) -> None:
    """Open the model in ONNX Runtime, check its input/output shapes and run a batch of 2."""
    import onnxruntime as ort

    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises many types for a bad file
        raise InvalidModel(f"{onnx_path.name} cannot be loaded by ONNX Runtime: {exc}") from None
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise InvalidModel(f"{onnx_path.name} must have one input, has {len(inputs)}")
    shape = list(inputs[0].shape)
    if len(shape) != 4 or shape[1] not in (3, "3") or inputs[0].type != "tensor(float)":
        raise InvalidModel(
            f"{onnx_path.name} input must be float32 (N, 3, H, W), is {inputs[0].type} {shape}"
        )
    for dim in shape[2:]:
        if isinstance(dim, int) and dim != size:
            raise InvalidModel(f"{onnx_path.name} input is {shape}, metadata says size {size}")
    if isinstance(shape[0], int) and shape[0] != -1:
        raise InvalidModel(f"{onnx_path.name} needs a dynamic batch axis, input is {shape}")
    dummy = np.zeros((2, 3, size, size), dtype=np.float32)
    try:
        logits = session.run([outputs[0].name], {inputs[0].name: dummy})[0]
    except Exception as exc:  # noqa: BLE001 - any failure means the model is unusable
        raise InvalidModel(f"{onnx_path.name} fails on a batch of 2: {exc}") from None
    if logits.shape != (2, num_classes):
        raise InvalidModel(
            f"{onnx_path.name} outputs {tuple(logits.shape)} for a batch of 2; "
            f"class_map.json has {num_classes} classes, so (2, {num_classes}) was expected",
            {"output_shape": list(logits.shape), "classes": num_classes},
        )
