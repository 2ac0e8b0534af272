"""The inference engine on a tiny ONNX model, softmax with temperature, top-k, the cache."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from service.errors import InvalidModel
from tests.support.models import make_model_folder
from workers import engine as engine_module
from workers.engine import InferenceEngine, get_engine, softmax, top_k


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


def test_int8_only_when_preferred_and_present(model_dir: Path) -> None:
    assert InferenceEngine(model_dir, prefer_int8=True).onnx_path.name == "model.onnx"
    shutil.copy(model_dir / "model.onnx", model_dir / "model.int8.onnx")

    assert InferenceEngine(model_dir).onnx_path.name == "model.onnx"
    assert InferenceEngine(model_dir, prefer_int8=True).onnx_path.name == "model.int8.onnx"


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


def test_get_engine_caches_per_resolved_folder_and_threads(model_dir: Path) -> None:
    engine_module._ENGINES.clear()
    link = model_dir.parent / "alias"
    link.symlink_to(model_dir)

    first = get_engine(model_dir, 1)

    assert get_engine(link, 1) is first
    assert get_engine(model_dir, 2) is not first
    assert get_engine(model_dir, 2).threads == 2
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
