"""The inference engine: one ONNX Runtime session per model folder, no database, no Celery."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.errors import InvalidModel
from service.imaging import InputSpec
from service.modelspec import ModelArtifact, load_artifact

log = logging.getLogger(__name__)
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
INT8_FILE = "model.int8.onnx"
DEVICES = ("auto", "cpu")


def choose_providers(available: Sequence[str], device: str = "auto") -> list[str]:
    """ORT execution providers, best first: CUDA when this build has it and `device` allows
    it, always ending with CPU (ORT runs there whatever CUDA cannot, or all of it when the
    CUDA libraries fail to load)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    return [CUDA, CPU] if device == "auto" and CUDA in available else [CPU]


@cache
def load_cuda_libraries() -> None:
    """Load CUDA and cuDNN before the first CUDA session: onnxruntime-gpu[cuda,cudnn]
    installs them as pip packages, outside the dynamic loader's search path."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:
        preload()


def int8_refusal(artifact: ModelArtifact, providers: Sequence[str]) -> str | None:
    """Why this model's INT8 file cannot be served here, or None when it can."""
    if not (artifact.path / INT8_FILE).is_file():
        return f"the model has no {INT8_FILE}"
    gate = artifact.metadata.get("int8")
    if not isinstance(gate, dict) or gate.get("kept") is not True:
        return "its accuracy gate did not pass (metadata.json int8.kept is not true)"
    hashes = artifact.metadata.get("files_sha256")
    recorded = hashes.get(INT8_FILE) if isinstance(hashes, dict) else None
    if recorded is not None and recorded != artifact.files_sha256.get(INT8_FILE):
        return f"{INT8_FILE} is not the file its gate checked (sha256 differs)"
    if providers[0] != CPU:
        # The quantised graph is a CPU optimisation: ORT's CUDA provider runs its
        # Quantize/DequantizeLinear pairs around float kernels, slower than FP32.
        return f"INT8 is served on the CPU only, and this worker uses {providers[0]}"
    return None


def choose_model_file(artifact: ModelArtifact, want_int8: bool, providers: Sequence[str]) -> Path:
    """model.int8.onnx when asked for and servable (int8_refusal), else model.onnx."""
    if want_int8:
        refusal = int8_refusal(artifact, providers)
        if refusal is None:
            return artifact.path / INT8_FILE
        log.warning("serving %s/model.onnx, not INT8: %s", artifact.path, refusal)
    return artifact.path / "model.onnx"


class InferenceEngine:
    """An ONNX Runtime session with the labels, input spec and temperature of its model folder."""

    def __init__(
        self, model_dir: Path, threads: int = 1, prefer_int8: bool = False, device: str = "auto"
    ) -> None:
        self.artifact: ModelArtifact = load_artifact(model_dir, check_onnx=False)
        providers = choose_providers(ort.get_available_providers(), device)
        if CUDA in providers:
            load_cuda_libraries()
        self.onnx_path = choose_model_file(self.artifact, prefer_int8, providers)
        self.threads = threads
        opts = ort.SessionOptions()
        # Threads are set on purpose: one process owns `threads` cores, and inter-op
        # parallelism only adds contention for a single-branch CNN.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.onnx_path), opts, providers=providers)
        # What ORT really uses: a CUDA build without its libraries falls back to the CPU.
        self.providers: list[str] = self.session.get_providers()
        if providers[0] != self.providers[0]:
            log.warning("%s is unavailable here: scoring on %s", providers[0], self.providers[0])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise InvalidModel(f"{self.onnx_path.name} must have one input and an output")
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        shape = list(inputs[0].shape)
        size = self.spec.size
        # Symbolic dims (batch, sometimes H/W) come back as strings: metadata decides them.
        dims = [d if isinstance(d, int) else size for d in shape[1:]]
        if dims != [3, size, size]:
            raise InvalidModel(f"{self.onnx_path.name} input {shape} is not (N, 3, {size}, {size})")
        self.input_shape: tuple[int, int, int] = (3, size, size)
        self.warmed_batch_sizes: set[int] = set()

    @property
    def spec(self) -> InputSpec:
        return self.artifact.spec

    @property
    def labels(self) -> list[str]:
        return self.artifact.labels

    @property
    def temperature(self) -> float:
        return self.artifact.temperature

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output (N, classes) for a float32 (N, 3, size, size) batch."""
        if batch.ndim != 4 or batch.shape[1:] != self.input_shape:
            raise ValueError(f"batch shape {batch.shape} != (N, {self.input_shape})")
        feed = np.ascontiguousarray(batch, dtype=np.float32)
        out: np.ndarray = self.session.run([self.output_name], {self.input_name: feed})[0]
        return out

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities: softmax(logits / temperature)."""
        return softmax(self.logits(batch), self.temperature)

    def warmup(self, batch_sizes: Iterable[int] = (8,)) -> None:
        """Run each batch shape once: ORT pays a first-run cost per new input shape."""
        for n in batch_sizes:
            self.logits(np.zeros((n, *self.input_shape), dtype=np.float32))
            self.warmed_batch_sizes.add(n)


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, stable for large logits."""
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    np.exp(scaled, out=scaled)
    scaled /= scaled.sum(axis=-1, keepdims=True)
    return scaled


def top_k(
    probs: np.ndarray, k: int, keep_above: float | None = None
) -> list[list[tuple[int, float]]]:
    """The k most probable (class index, probability) pairs per row, best first, and past
    the k-th every class at or above `keep_above`: routing must see a venomous species at
    the alert level wherever it ranks (at most 1 / keep_above of them)."""
    order = np.argsort(-probs, axis=-1, kind="stable")
    ranked = []
    for row, idx in zip(probs, order, strict=True):
        n = k if keep_above is None else max(k, int(np.count_nonzero(row >= keep_above)))
        ranked.append([(int(i), float(row[i])) for i in idx[:n]])
    return ranked


_ENGINES: dict[tuple[Path, int, bool, str], InferenceEngine] = {}
_ENGINES_LOCK = threading.Lock()
# A session must never cross a fork (ORT threads and arenas do not survive it): a child
# process starts with an empty cache and builds its own engine on first use.
os.register_at_fork(after_in_child=_ENGINES.clear)


def get_engine(
    model_dir: Path, threads: int = 1, prefer_int8: bool = False, device: str = "auto"
) -> InferenceEngine:
    """This process's engine for a model folder, created lazily on first use and cached.

    Call it from inside the worker process (a task), never at import time or in the
    Celery parent before it forks the pool, so each pool process opens its own session.
    """
    key = (Path(model_dir).expanduser().resolve(), threads, prefer_int8, device)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = InferenceEngine(*key)
        return engine
