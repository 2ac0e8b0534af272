"""The inference engine on a tiny ONNX model, softmax with temperature, top-k, the cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.errors import InvalidModel
from service.imaging import sha256_file
from service.modelspec import load_artifact
from tests.support.models import make_model_folder
from workers import engine as engine_module
from workers.engine import (
    InferenceEngine,
    choose_model_file,
    choose_providers,
    get_engine,
    int8_refusal,
    softmax,
    top_k,
)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return make_model_folder(tmp_path / "tiny", size=16, temperature=2.0)


def _colour_batch(*colours: tuple[float, float, float]) -> np.ndarray:
    """Uniform images in model space ([-1, 1] after mean/std 0.5)."""
    return np.stack([np.broadcast_to(np.reshape(c, (3, 1, 1)), (3, 16, 16)) for c in colours])


def test_engine_reads_io_from_the_session(model_dir: Path) -> None:
    engine = InferenceEngine(model_dir)

    assert (engine.input_name, engine.output_name) == ("input", "logits")
    assert engine.input_shape == (3, 16, 16)
    assert engine.labels == ["Naja_philippinensis", "Ptyas_carinata", "Boiga_dendrophila"]
    assert engine.temperature == 2.0
    assert engine.onnx_path.name == "model.onnx"


def test_dominant_colour_decides_the_class(model_dir: Path) -> None:
    engine = InferenceEngine(model_dir)
    batch = _colour_batch((1, -1, -1), (-1, 1, -1), (-1, -1, 1)).astype(np.float32)

    logits = engine.logits(batch)
    probs = engine.probabilities(batch)

    assert logits.shape == (3, 3)
    assert list(logits.argmax(axis=1)) == [0, 1, 2]
    np.testing.assert_allclose(probs, softmax(logits, 2.0), rtol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # Temperature 2 is calibration, not decoration: it flattens what T=1 would say.
    assert (probs.max(axis=1) < softmax(logits, 1.0).max(axis=1)).all()


def test_rows_are_independent_of_batch_size(model_dir: Path) -> None:
    engine = InferenceEngine(model_dir)
    batch = np.random.default_rng(0).uniform(-1, 1, (5, 3, 16, 16)).astype(np.float32)

    np.testing.assert_allclose(engine.logits(batch)[2:3], engine.logits(batch[2:3]), rtol=1e-5)


def test_wrong_shape_is_refused(model_dir: Path) -> None:
    engine = InferenceEngine(model_dir)

    with pytest.raises(ValueError, match="batch shape"):
        engine.logits(np.zeros((1, 3, 32, 32), dtype=np.float32))


def test_model_that_disagrees_with_its_metadata_is_refused(model_dir: Path) -> None:
    metadata = json.loads((model_dir / "metadata.json").read_text(encoding="utf-8"))
    metadata["input"]["size"] = 32
    (model_dir / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")

    with pytest.raises(InvalidModel, match="not"):
        InferenceEngine(model_dir)


def test_warmup_records_batch_sizes(model_dir: Path) -> None:
    engine = InferenceEngine(model_dir)

    engine.warmup([1, 4, 8])

    assert engine.warmed_batch_sizes == {1, 4, 8}


def _add_int8(model_dir: Path, gate: dict[str, object] | None, record_hash: bool = True) -> None:
    """A stand-in INT8 file (a model with another scale, so its logits differ) and its gate."""
    other = make_model_folder(model_dir.parent / "other", size=16, scale=1.0)
    shutil.copy(other / "model.onnx", model_dir / "model.int8.onnx")
    metadata = json.loads((model_dir / "metadata.json").read_text(encoding="utf-8"))
    if gate is not None:
        metadata["int8"] = gate
    if record_hash:
        metadata["files_sha256"] = {"model.int8.onnx": sha256_file(model_dir / "model.int8.onnx")}
    (model_dir / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")


def test_providers_put_cuda_first_when_the_build_has_it() -> None:
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    assert choose_providers(gpu_build) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(gpu_build, "cpu") == ["CPUExecutionProvider"]
    assert choose_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]
    with pytest.raises(ValueError, match="device"):
        choose_providers(gpu_build, "gpu")


def test_engine_runs_on_what_this_onnxruntime_offers(model_dir: Path) -> None:
    engine = InferenceEngine(model_dir)
    expected = choose_providers(ort.get_available_providers())

    assert engine.session.get_providers()[0] == expected[0] == engine.providers[0]
    assert InferenceEngine(model_dir, device="cpu").providers == ["CPUExecutionProvider"]


def test_int8_is_served_when_its_gate_passed_and_asked_for(model_dir: Path) -> None:
    _add_int8(model_dir, {"requested": True, "kept": True, "top1_agreement": 1.0})
    batch = _colour_batch((1, -1, -1)).astype(np.float32)

    fp32 = InferenceEngine(model_dir, device="cpu")
    int8 = InferenceEngine(model_dir, prefer_int8=True, device="cpu")

    assert fp32.onnx_path.name == "model.onnx"
    assert int8.onnx_path.name == "model.int8.onnx"
    assert not np.allclose(fp32.logits(batch), int8.logits(batch))  # the other file really runs


@pytest.mark.parametrize(
    ("gate", "record_hash", "why"),
    [
        (None, True, "gate did not pass"),  # an imported model with an unchecked INT8 file
        ({"requested": True, "kept": False}, True, "gate did not pass"),
        ({"kept": "yes"}, True, "gate did not pass"),
        ({"kept": True}, False, None),  # no recorded hash: the gate's word is enough
    ],
)
def test_int8_without_a_passed_gate_is_not_served(
    model_dir: Path, gate: dict[str, object] | None, record_hash: bool, why: str | None
) -> None:
    _add_int8(model_dir, gate, record_hash)
    artifact = load_artifact(model_dir, check_onnx=False)

    refusal = int8_refusal(artifact, ["CPUExecutionProvider"])
    engine = InferenceEngine(model_dir, prefer_int8=True, device="cpu")

    if why is None:
        assert refusal is None and engine.onnx_path.name == "model.int8.onnx"
    else:
        assert refusal is not None and why in refusal
        assert engine.onnx_path.name == "model.onnx"


def test_int8_refused_when_the_file_is_not_the_one_gated(model_dir: Path) -> None:
    _add_int8(model_dir, {"kept": True})
    shutil.copy(model_dir / "model.onnx", model_dir / "model.int8.onnx")  # swapped afterwards

    refusal = int8_refusal(load_artifact(model_dir, False), ["CPUExecutionProvider"])

    assert refusal is not None and "sha256" in refusal
    assert InferenceEngine(model_dir, prefer_int8=True).onnx_path.name == "model.onnx"


def test_int8_is_a_cpu_file_and_fp32_goes_to_the_gpu(model_dir: Path) -> None:
    _add_int8(model_dir, {"kept": True})
    artifact = load_artifact(model_dir, check_onnx=False)
    gpu = choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"])

    assert choose_model_file(artifact, True, gpu).name == "model.onnx"
    assert choose_model_file(artifact, True, ["CPUExecutionProvider"]).name == "model.int8.onnx"
    assert choose_model_file(artifact, False, ["CPUExecutionProvider"]).name == "model.onnx"
    (model_dir / "model.int8.onnx").unlink()
    assert "no model.int8.onnx" in (int8_refusal(artifact, ["CPUExecutionProvider"]) or "")


def test_softmax_rows_sum_to_one_and_match_hand_values() -> None:
    probs = softmax(np.array([[0.0, np.log(3.0)], [2.0, 2.0]]))

    np.testing.assert_allclose(probs, [[0.25, 0.75], [0.5, 0.5]])


def test_softmax_temperature_flattens() -> None:
    logits = np.array([[3.0, 1.0, 0.0]])

    sharp, calibrated, flat = (softmax(logits, t)[0] for t in (0.5, 1.0, 4.0))

    assert sharp[0] > calibrated[0] > flat[0] > 1 / 3
    np.testing.assert_allclose(softmax(logits * 2, 2.0), softmax(logits, 1.0))


def test_softmax_is_stable_for_large_logits() -> None:
    probs = softmax(np.array([[1000.0, 1001.0, 999.0], [-1e4, -1e4, -1e4]]), 0.5)

    assert np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[1], 1 / 3)
    assert probs[0].argmax() == 1


def test_softmax_refuses_non_positive_temperature() -> None:
    with pytest.raises(ValueError):
        softmax(np.zeros((1, 2)), 0.0)


def test_top_k_is_ordered_best_first() -> None:
    probs = np.array([[0.1, 0.5, 0.15, 0.25], [0.4, 0.1, 0.4, 0.1]])

    assert top_k(probs, 3) == [[(1, 0.5), (3, 0.25), (2, 0.15)], [(0, 0.4), (2, 0.4), (1, 0.1)]]
    assert len(top_k(probs, 10)[0]) == 4  # k beyond the class count gives every class


def test_get_engine_caches_per_resolved_folder_threads_file_and_device(model_dir: Path) -> None:
    engine_module._ENGINES.clear()
    link = model_dir.parent / "alias"
    link.symlink_to(model_dir)

    first = get_engine(model_dir, 1)

    assert get_engine(link, 1) is first
    assert get_engine(model_dir, 2) is not first
    assert get_engine(model_dir, 2).threads == 2
    assert get_engine(model_dir, 1, prefer_int8=True) is not first
    assert get_engine(model_dir, 1, device="cpu") is not first
    engine_module._ENGINES.clear()


def test_forked_child_starts_with_an_empty_cache(model_dir: Path) -> None:
    engine_module._ENGINES.clear()
    get_engine(model_dir, 1)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the cache size and leave without running pytest's teardown
        try:
            os.write(write, str(len(engine_module._ENGINES)).encode())
        finally:
            os._exit(0)
    os.close(write)
    cached_in_child = os.read(read, 16).decode()
    os.close(read)
    os.waitpid(pid, 0)

    assert cached_in_child == "0"
    assert len(engine_module._ENGINES) == 1
    engine_module._ENGINES.clear()


def test_top_k_keeps_every_class_at_the_alert_level_past_the_kth() -> None:
    # Seven classes at 0.06 or more: with k=5 the sixth and seventh (one may be a cobra)
    # would be dropped, and routing could never see them.
    row = [0.3, 0.2, 0.15, 0.1, 0.08, 0.07, 0.06, 0.04]
    probs = np.array([row])

    assert [i for i, _ in top_k(probs, 5)[0]] == [0, 1, 2, 3, 4]
    kept = top_k(probs, 5, keep_above=0.05)[0]
    assert [i for i, _ in kept] == [0, 1, 2, 3, 4, 5, 6]  # ranked, nothing below 0.05 added
    assert [i for i, _ in top_k(probs, 2, keep_above=0.5)[0]] == [0, 1]  # k is a floor
