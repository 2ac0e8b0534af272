"""The scoring hot path: decoding runs a batch ahead of inference, in threads or in turn."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import numpy as np
from PIL import Image

from service import thumbnails
from service.bursts import perceptual_hash
from service.imaging import ImageError, InputSpec, load_rgb, to_array
from service.monitoring import BATCH_SECONDS
from workers.engine import InferenceEngine, top_k

# What Pillow's parsers raise on hostile or broken files besides ImageError (fuzzing finds
# all of these): each fails that file alone. Anything else (an ORT error, a bug in our code)
# is a real failure and propagates to the task.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    IndexError,
    ZeroDivisionError,
)


@dataclass
class FileResult:
    """The outcome for one input path: either a prediction or a failure, never both."""

    index: int
    label_index: int | None = None
    label: str | None = None
    confidence: float | None = None
    topk: list[tuple[str, float]] | None = None
    failure_reason: str | None = None
    failure_detail: str | None = None
    phash: str | None = None  # of the image as decoded for the model (service/bursts.py)
    thumbnail: bytes | None = None  # JPEG, from the same decode (service/thumbnails.py)


@dataclass
class ScoreStats:
    """Where the time went: decode is summed over threads, inference and waits are wall time."""

    files: int = 0
    failed: int = 0
    batches: int = 0
    decode_seconds: float = 0.0
    inference_seconds: float = 0.0
    decode_wait_seconds: float = 0.0
    wall_seconds: float = 0.0


_Failure = tuple[str, str]


@dataclass
class _Decoded:
    seconds: float
    failure: _Failure | None = None
    phash: str | None = None
    thumbnail: bytes | None = None


NOT_FINITE = "the model's output for this image holds NaN or infinity; it was not scored"


P = ParamSpec("P")
T = TypeVar("T")


class _InTurn(Executor):
    """An executor that runs each call at once, in the calling thread: decoding in turn
    with inference (`decode_threads=0`)."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        future.set_result(fn(*args, **kwargs))  # an error propagates now, as a bug should
        return future


# Decode threads beside inference where they have cores to run on (a GPU, or a process
# that is alone on several cores).
DECODE_THREADS = 2


def score_paths(
    engine: InferenceEngine,
    paths: Sequence[str],
    *,
    batch_size: int = 8,
    decode_threads: int = DECODE_THREADS,
    max_pixels: int,
    max_bytes: int,
    max_decoded: int | None = None,
    k: int = 5,
    keep_above: float | None = None,
    thumbnail_side: int | None = None,
    stats: ScoreStats | None = None,
) -> list[FileResult]:
    """Score files in input order, one FileResult per path; unusable files fail alone.

    Decoding runs one batch ahead of inference, into two preallocated (batch, 3, S, S)
    buffers used in turn: batch b+1 is decoded into one while ORT reads batch b from the
    other. With `decode_threads` threads (Pillow, numpy and ORT release the GIL) the two
    overlap; with 0 the calling thread decodes, in turn with inference.
    With `thumbnail_side`, each decode also makes the photo's thumbnail (JPEG bytes in
    FileResult.thumbnail) from the image it decoded for the model.
    """
    if batch_size < 1 or decode_threads < 0:
        raise ValueError("batch_size must be at least 1 and decode_threads at least 0")
    stats = stats if stats is not None else ScoreStats()
    started = time.perf_counter()
    spec = engine.spec
    starts = range(0, len(paths), batch_size)
    buffers = [np.empty((batch_size, *engine.input_shape), dtype=np.float32) for _ in range(2)]
    results: list[FileResult] = []

    pool = ThreadPoolExecutor(decode_threads, "decode") if decode_threads else _InTurn()
    with pool:

        def submit(b: int) -> list[Future[_Decoded]]:
            buf, start = buffers[b % 2], starts[b]
            stop = min(start + batch_size, len(paths))
            return [
                pool.submit(
                    _decode_into,
                    paths[i],
                    spec,
                    buf[i - start],
                    (max_pixels, max_bytes, max_decoded),
                    thumbnail_side,
                )
                for i in range(start, stop)
            ]

        ahead = submit(0) if starts else []
        for b, start in enumerate(starts):
            current = ahead
            # Batch b-1 has left ORT, so its buffer is free: queue batch b+1 now and the
            # pool decodes it while ORT runs batch b. One batch of look-ahead keeps memory flat.
            ahead = submit(b + 1) if b + 1 < len(starts) else []
            waited = time.perf_counter()
            outcomes = [future.result() for future in current]
            stats.decode_wait_seconds += time.perf_counter() - waited
            stats.decode_seconds += sum(outcome.seconds for outcome in outcomes)
            failures = [outcome.failure for outcome in outcomes]
            predicted = _predict(engine, buffers[b % 2], start, failures, (k, keep_above), stats)
            for result, outcome in zip(predicted, outcomes, strict=True):
                if result.failure_reason is None:
                    result.phash, result.thumbnail = outcome.phash, outcome.thumbnail
            results += predicted

    stats.files += len(paths)
    stats.failed += sum(r.failure_reason is not None for r in results)
    stats.wall_seconds += time.perf_counter() - started
    return results


def _predict(
    engine: InferenceEngine,
    buf: np.ndarray,
    start: int,
    failures: list[_Failure | None],
    keep: tuple[int, float | None],
    stats: ScoreStats,
) -> list[FileResult]:
    """Score the decoded rows of one batch; failed rows are left out, not scored."""
    ok = [slot for slot, failure in enumerate(failures) if failure is None]
    ranked: list[list[tuple[int, float]]] = []
    if ok:
        if ok != list(range(len(ok))):
            buf[: len(ok)] = buf[ok]  # fancy indexing copies first, so overlap is safe
        # A partial batch runs at its own size, not padded to batch_size: a new shape is
        # cheap in ORT and padding is not (docs/performance.md).
        began = time.perf_counter()
        probs = engine.probabilities(buf[: len(ok)])
        elapsed = time.perf_counter() - began
        stats.inference_seconds += elapsed
        BATCH_SECONDS.observe(elapsed)
        stats.batches += 1
        finite = np.isfinite(probs).all(axis=1)
        if not finite.all():  # a broken model or an overflow: never store NaN as a score
            failures = list(failures)
            for slot, good in zip(ok, finite, strict=True):
                if not good:
                    failures[slot] = ("model_output_not_finite", NOT_FINITE)
            probs = probs[finite]
        ranked = top_k(probs, *keep)
    labels, predictions = engine.labels, iter(ranked)
    results = []
    for slot, failure in enumerate(failures):
        if failure is not None:
            reason, detail = failure
            results.append(FileResult(start + slot, failure_reason=reason, failure_detail=detail))
            continue
        best = next(predictions)
        results.append(
            FileResult(
                start + slot,
                label_index=best[0][0],
                label=labels[best[0][0]],
                confidence=best[0][1],
                topk=[(labels[i], p) for i, p in best],
            )
        )
    return results


def _decode_into(
    path: str,
    spec: InputSpec,
    out: np.ndarray,
    limits: tuple[int, int, int | None],
    thumbnail_side: int | None,
) -> _Decoded:
    """Decode one file into its buffer row, with its perceptual hash and thumbnail."""
    began = time.perf_counter()
    decoded = _Decoded(0.0)
    try:
        image = _decode(path, spec, limits, thumbnail_side, decoded)
        to_array(image, spec, out=out)
        decoded.phash = perceptual_hash(image)  # from the same decode: the file is read once
    except ImageError as exc:
        decoded.failure = (exc.reason, exc.message)
    except MemoryError:
        decoded.failure = ("too_many_pixels", "not enough memory to decode and resize this image")
    except _DECODE_ERRORS as exc:
        decoded.failure = ("corrupt", f"{type(exc).__name__}: {exc}")
    decoded.seconds = time.perf_counter() - began
    return decoded


# Thumbnails are cut from decodes up to this size only (every camera JPEG: libjpeg decodes a
# 12 MP one at 1/8 scale for the model). Cutting one from a 94 MP PNG's decode took that
# process from 932 to 1,314 MB peak (benchmarks/memory_bound.py): the freed image stayed
# resident behind the thumbnail's small allocations while the other decode thread began.
# Such files are rendered from the file afterwards, one at a time.
THUMBNAIL_FROM_DECODE_PIXELS = 4_000_000


def _small(img: Image.Image) -> bool:
    return img.width * img.height <= THUMBNAIL_FROM_DECODE_PIXELS


def _decode(
    path: str,
    spec: InputSpec,
    limits: tuple[int, int, int | None],
    thumbnail_side: int | None,
    decoded: _Decoded,
) -> Image.Image:
    """The model's input image, and on the way the thumbnail.

    The thumbnail is cut from the upright image before the model's resize, at the draft
    scale the model asked for (the same pixels: predictions do not change). An image that
    decoded smaller than the thumbnail (a model input under 256 px) or bigger than
    THUMBNAIL_FROM_DECODE_PIXELS gets none here; the worker renders it from the file
    (thumbnails.store_thumbnails).
    """

    def cut_thumbnail(img: Image.Image) -> None:
        if thumbnail_side and thumbnail_side <= max(img.size) and _small(img):
            decoded.thumbnail = thumbnails.encode_jpeg(thumbnails.shrink(img, thumbnail_side))

    return load_rgb(path, spec, *limits, on_upright=cut_thumbnail)
