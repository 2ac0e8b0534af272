"""The scoring hot path: order, one result per path, failures alone, same answer as the engine."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from service.imaging import preprocess
from tests.support.models import make_model_folder
from workers import pipeline
from workers.engine import InferenceEngine
from workers.pipeline import FileResult, ScoreStats, score_paths

BIG = 10**9
COLOURS = [(220, 30, 30), (30, 220, 30), (30, 30, 220)]  # the tiny model's classes 0, 1, 2


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> InferenceEngine:
    return InferenceEngine(make_model_folder(tmp_path_factory.mktemp("model"), size=16))


def _photo(folder: Path, name: str, colour: tuple[int, int, int], seed: int) -> str:
    """A JPEG of a dominant colour with some texture, so each file has its own probabilities."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (30, 40, 3)), 0, 255).astype(np.uint8)
    path = folder / name
    Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=90)
    return str(path)


def _score(engine: InferenceEngine, paths: list[str], **kwargs: Any) -> list[FileResult]:
    return score_paths(engine, paths, max_pixels=BIG, max_bytes=BIG, **kwargs)


def _assert_same_as_engine(engine: InferenceEngine, result: FileResult, path: str) -> None:
    probs = engine.probabilities(preprocess(path, engine.spec)[None])[0]
    assert result.failure_reason is None and result.failure_detail is None
    assert result.label_index == int(probs.argmax())
    assert result.label == engine.labels[int(probs.argmax())]
    assert result.confidence == pytest.approx(float(probs.max()), rel=1e-5)
    assert result.topk is not None
    assert [label for label, _ in result.topk] == [
        engine.labels[i] for i in np.argsort(-probs, kind="stable")
    ]


@pytest.mark.parametrize(
    ("batch_size", "decode_threads"), [(8, 2), (2, 1), (3, 3), (1, 2), (8, 0), (3, 0), (1, 0)]
)
def test_corrupt_file_in_the_middle_fails_alone(
    engine: InferenceEngine, tmp_path: Path, batch_size: int, decode_threads: int
) -> None:
    paths = [_photo(tmp_path, f"p{i}.jpg", COLOURS[i % 3], seed=i) for i in range(11)]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(paths[0]).read_bytes()[:300])  # header, then nothing
    paths.insert(5, str(broken))

    results = _score(engine, paths, batch_size=batch_size, decode_threads=decode_threads)

    assert [r.index for r in results] == list(range(len(paths)))
    assert results[5].failure_reason == "corrupt"
    assert results[5].label is None and results[5].topk is None
    for result, path in zip(results, paths, strict=True):
        if path != str(broken):
            _assert_same_as_engine(engine, result, path)
    expected_colours = [i % 3 for i in range(11)]
    assert [r.label_index for r in results if r.index != 5] == expected_colours


def test_each_result_is_a_prediction_or_a_failure(engine: InferenceEngine, tmp_path: Path) -> None:
    empty, text = tmp_path / "empty.jpg", tmp_path / "notes.jpg"
    empty.write_bytes(b"")
    text.write_text("not a photo", encoding="utf-8")
    good = _photo(tmp_path, "good.jpg", COLOURS[2], seed=0)
    paths = [str(empty), good, str(text), str(tmp_path / "gone.jpg")]

    results = _score(engine, paths, batch_size=2, k=2)

    reasons = [r.failure_reason for r in results]
    assert reasons == ["empty_file", None, "not_an_image", "unreadable"]
    for r in results:
        assert (r.failure_reason is None) == (r.label is not None) == (r.topk is not None)
    assert results[1].label_index == 2 and results[1].topk is not None
    assert len(results[1].topk) == 2


def test_a_batch_of_only_failures(engine: InferenceEngine, tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        (tmp_path / f"e{i}.jpg").write_bytes(b"")
        paths.append(str(tmp_path / f"e{i}.jpg"))
    paths.append(_photo(tmp_path, "last.jpg", COLOURS[1], seed=3))
    stats = ScoreStats()

    results = _score(engine, paths, batch_size=3, stats=stats)

    assert [r.failure_reason for r in results] == ["empty_file"] * 3 + [None]
    assert results[3].label_index == 1
    assert (stats.files, stats.failed, stats.batches) == (4, 3, 1)


def test_stats_account_for_decode_and_inference(engine: InferenceEngine, tmp_path: Path) -> None:
    paths = [_photo(tmp_path, f"p{i}.jpg", COLOURS[0], seed=i) for i in range(5)]
    stats = ScoreStats()

    score_paths(engine, paths, batch_size=2, max_pixels=BIG, max_bytes=BIG, stats=stats)

    assert (stats.files, stats.failed, stats.batches) == (5, 0, 3)
    assert stats.decode_seconds > 0 and stats.inference_seconds > 0
    assert stats.wall_seconds >= stats.inference_seconds


def test_every_batch_is_one_sample_of_the_batch_latency_histogram(
    engine: InferenceEngine, tmp_path: Path
) -> None:
    from prometheus_client import REGISTRY

    def timed() -> float:
        return REGISTRY.get_sample_value("herpscore_batch_seconds_count") or 0.0

    paths = [_photo(tmp_path, f"p{i}.jpg", COLOURS[1], seed=i) for i in range(5)]
    before = timed()
    _score(engine, paths, batch_size=2)
    assert timed() - before == 3  # batches of 2, 2 and 1 photos


def test_limits_are_passed_to_decoding(engine: InferenceEngine, tmp_path: Path) -> None:
    path = _photo(tmp_path, "p.jpg", COLOURS[0], seed=0)

    results = score_paths(engine, [path], max_pixels=100, max_bytes=BIG)

    assert results[0].failure_reason == "too_many_pixels"


def test_no_paths_no_results(engine: InferenceEngine) -> None:
    assert _score(engine, []) == []


def test_bad_arguments(engine: InferenceEngine) -> None:
    with pytest.raises(ValueError):
        _score(engine, ["x.jpg"], batch_size=0)


def test_a_non_finite_model_output_fails_that_file_alone(
    engine: InferenceEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [_photo(tmp_path, f"p{i}.jpg", COLOURS[i % 3], seed=i) for i in range(5)]
    real = engine.probabilities

    def broken_row(batch: np.ndarray) -> np.ndarray:
        probs = real(batch)
        probs[1] = np.nan  # the second image of the batch overflows
        return probs

    monkeypatch.setattr(engine, "probabilities", broken_row)
    results = _score(engine, paths, batch_size=8)
    monkeypatch.undo()
    assert [r.failure_reason for r in results] == [None, "model_output_not_finite"] + [None] * 3
    assert results[1].confidence is None and results[1].topk is None
    for result, path in zip(results, paths, strict=True):
        if result.failure_reason is None:
            _assert_same_as_engine(engine, result, path)


def test_classes_at_the_alert_level_are_kept_past_k(
    engine: InferenceEngine, tmp_path: Path
) -> None:
    path = _photo(tmp_path, "p.jpg", COLOURS[0], seed=1)
    probs = engine.probabilities(preprocess(path, engine.spec)[None])[0]
    floor = float(np.sort(probs)[-2])  # the second-best class's probability

    (only,) = _score(engine, [path], k=1)
    (kept,) = _score(engine, [path], k=1, keep_above=floor)
    assert only.topk is not None and kept.topk is not None
    assert len(only.topk) == 1
    assert [label for label, _ in kept.topk] == [
        engine.labels[i] for i in np.argsort(-probs, kind="stable")[:2]
    ]


# ---------------------------------------------------------------- thumbnails from the same decode


@pytest.fixture(scope="module")
def engine224(tmp_path_factory: pytest.TempPathFactory) -> InferenceEngine:
    """A model with the input of real ones (224 px, decoded at 256 px or more)."""
    return InferenceEngine(make_model_folder(tmp_path_factory.mktemp("model224"), size=224))


def _big_photo(folder: Path, name: str, orientation: int | None = None) -> str:
    rng = np.random.default_rng(7)
    pixels = np.clip(rng.normal(120, 10, (600, 800, 3)), 0, 255).astype(np.uint8)
    pixels[:300, :400] = (200, 40, 40)  # a red quarter, top left as stored
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    path = folder / name
    Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=90, exif=exif.tobytes())
    return str(path)


def test_the_thumbnail_comes_from_the_decode_for_the_model(
    engine224: InferenceEngine, tmp_path: Path
) -> None:
    from service.thumbnails import render_thumbnail

    turned = _big_photo(tmp_path, "turned.jpg", orientation=6)  # shown rotated 90 degrees
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(turned).read_bytes()[:300])
    paths = [turned, str(broken)]

    with_thumbs = _score(engine224, paths, thumbnail_side=256)
    without = _score(engine224, paths)

    assert [r.thumbnail for r in without] == [None, None]
    assert with_thumbs[1].failure_reason == "corrupt" and with_thumbs[1].thumbnail is None
    assert (with_thumbs[0].label, with_thumbs[0].confidence) == (
        without[0].label,
        without[0].confidence,
    )  # the model's input did not change
    assert with_thumbs[0].thumbnail is not None
    with Image.open(io.BytesIO(with_thumbs[0].thumbnail)) as thumb:
        assert (thumb.format, thumb.mode, thumb.size) == ("JPEG", "RGB", (192, 256))
        rendered = render_thumbnail(Path(turned), 256, BIG, BIG)
        assert rendered.size == thumb.size  # what the web used to render from the file
        diff = np.abs(np.asarray(thumb, np.int16) - np.asarray(rendered, np.int16))
        assert diff.mean() < 6  # the same picture, turned the same way
        assert thumb.getpixel((150, 30))[0] > 150  # the red quarter is now top right


def test_no_thumbnail_when_the_model_decodes_smaller_than_it(
    engine: InferenceEngine, tmp_path: Path
) -> None:
    # A 16 px model lets libjpeg decode an 800 x 600 photo at 100 x 75: too small for a
    # 256 px thumbnail, which the worker then renders from the file.
    results = _score(engine, [_big_photo(tmp_path, "p.jpg")], thumbnail_side=256)
    assert results[0].failure_reason is None and results[0].thumbnail is None


def test_no_thumbnail_from_a_huge_decode(
    engine224: InferenceEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A big PNG is decoded at full size: its thumbnail is rendered from the file afterwards,
    # so the decode threads' freed images are not kept resident (workers/pipeline.py).
    import workers.pipeline

    monkeypatch.setattr(workers.pipeline, "THUMBNAIL_FROM_DECODE_PIXELS", 300 * 300)
    small, big = tmp_path / "small.png", tmp_path / "big.png"
    Image.new("RGB", (300, 300), (200, 40, 40)).save(small)
    Image.new("RGB", (301, 300), (200, 40, 40)).save(big)
    results = _score(engine224, [str(small), str(big)], thumbnail_side=256)
    assert results[0].thumbnail is not None
    assert results[1].failure_reason is None and results[1].thumbnail is None


@pytest.mark.parametrize(("decode_threads", "in_caller"), [(0, True), (2, False)])
def test_decode_threads_zero_decodes_in_the_calling_thread(
    engine: InferenceEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    decode_threads: int,
    in_caller: bool,
) -> None:
    paths = [_photo(tmp_path, f"p{i}.jpg", COLOURS[i % 3], seed=i) for i in range(5)]
    decoded_in: list[threading.Thread] = []
    real = pipeline._decode_into

    def spy(*args: Any) -> Any:
        decoded_in.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(pipeline, "_decode_into", spy)
    results = _score(engine, paths, batch_size=2, decode_threads=decode_threads)

    assert len(decoded_in) == len(paths)
    assert all((t is threading.current_thread()) == in_caller for t in decoded_in)
    for result, path in zip(results, paths, strict=True):
        _assert_same_as_engine(engine, result, path)


def test_negative_decode_threads_is_refused(engine: InferenceEngine, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="decode_threads"):
        _score(engine, [_photo(tmp_path, "p.jpg", COLOURS[0], seed=0)], decode_threads=-1)
