"""ONNX export, the ONNX Runtime vs torch parity check, and static INT8 (QDQ) quantisation."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "logits"


class ExportError(RuntimeError):
    """The exported model does not do what the torch model does."""


@contextmanager
def quiet_converters() -> Iterator[None]:
    """The exporter and the quantiser log hundreds of INFO lines (some on the root logger)."""
    names = ["", "onnxscript", "onnx_ir", "torch.onnx", "onnxruntime"]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def export_onnx(model: nn.Module, size: int, path: Path) -> None:
    """Export FP32 ONNX: input "input" (N, 3, size, size), output "logits", dynamic batch."""
    model = model.eval().cpu()
    example = torch.zeros(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with quiet_converters():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            verbose=False,
            report=False,
        )


def ort_session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_logits(
    path: Path, inputs: np.ndarray, batch_size: int = 32, threads: int = 1
) -> np.ndarray:
    """Run an ONNX model over preprocessed inputs (N, 3, S, S) in batches."""
    session = ort_session(path, threads)
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: inputs[i : i + batch_size]})[0]
        for i in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(outs).astype(np.float32)


def check_parity(
    onnx_path: Path, model: nn.Module, inputs: np.ndarray, rtol: float = 1e-3, atol: float = 1e-3
) -> dict[str, Any]:
    """Raise ExportError unless ORT and torch give the same logits and top-1 on `inputs`."""
    with torch.no_grad():
        expected = model.eval().cpu()(torch.from_numpy(inputs)).numpy()
    actual = ort_logits(onnx_path, inputs)
    diff = float(np.abs(actual - expected).max())
    same_top1 = float((actual.argmax(1) == expected.argmax(1)).mean())
    report = {"images": len(inputs), "max_abs_diff": diff, "top1_agreement": same_top1}
    if not np.allclose(actual, expected, rtol=rtol, atol=atol) or same_top1 < 1.0:
        raise ExportError(f"ONNX Runtime and torch disagree on validation images: {report}")
    return report


def quantize_int8(fp32_path: Path, int8_path: Path, calibration: np.ndarray) -> None:
    """Static per-channel QDQ quantisation calibrated on real (training) images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Calibration(CalibrationDataReader):
        def __init__(self, inputs: np.ndarray, batch_size: int = 8) -> None:
            self._batches: Iterator[np.ndarray] = (
                inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    prepared = int8_path.with_name(int8_path.stem + ".prep.onnx")
    try:
        with quiet_converters():
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(int8_path),
                calibration_data_reader=Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
            )
    finally:
        prepared.unlink(missing_ok=True)


def int8_decision(
    fp32_logits: np.ndarray,
    int8_logits: np.ndarray,
    labels: np.ndarray,
    min_agreement: float = 0.99,
    max_drop: float = 0.01,
) -> dict[str, Any]:
    """Keep INT8 only if it agrees with FP32 on >= 99 % of top-1s and loses <= 1 point."""
    agreement = float((fp32_logits.argmax(1) == int8_logits.argmax(1)).mean())
    acc_fp32 = float((fp32_logits.argmax(1) == labels).mean())
    acc_int8 = float((int8_logits.argmax(1) == labels).mean())
    keep = agreement >= min_agreement and acc_fp32 - acc_int8 <= max_drop + 1e-9
    return {
        "kept": keep,
        "top1_agreement": agreement,
        "accuracy_fp32": acc_fp32,
        "accuracy_int8": acc_int8,
        "rule": f"agreement >= {min_agreement:.0%} and accuracy drop <= {max_drop * 100:.0f} point",
    }
