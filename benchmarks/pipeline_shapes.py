"""Does the scoring pipeline's shape cost CPU? Variants of decode + inference on the same photos.

`bench_scoring.py` puts c (a whole job) beside L (decode and inference measured apart).
A job is not run the way c_pipe is: its chunks are small and uneven (8, 8, 16, 32, ... 1
for 120 photos), each decode thread also cuts a thumbnail, and the scan hashes every file
in a third process at the same time. Each variant below runs in 2 spawned processes over
the same photos, one at a time, in alternating order, and reports images/s and the CPU
milliseconds per photo of the two processes (os.times, every thread):

- decode: `load_rgb` + `to_array` alone (b's work); infer: ORT on batches of 8 (a's work);
- pipe64: `score_paths` in chunks of 64 (c_pipe's work);
- chunks: `score_paths` over the chunks the job was cut into (`--chunks`), shared out
  as the two scoring processes take them, thumbnails cut from the decode (the worker's);
- chunks-1thread: the same with one decode thread per process instead of two;
- in-turn: the same chunks decoded and scored in turn in one thread (no overlap at all);
- chunks+hash: `chunks` while a third process sha256es every photo, as the scan does;
- chunks-pinned: `chunks` with each process (and its threads) held on a core of its own;
- chunks-0thread: `chunks` decoded in turn with inference (`decode_threads=0`), as the
  scoring worker does on the CPU with a process per core (workers.tasks.decode_threads).

    PYTHONPATH=$PWD python benchmarks/pipeline_shapes.py --size 4000x3000 --count 120
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.bench_scoring import _timed  # noqa: E402
from benchmarks.scoring_inputs import CTX, build_model, make_photos  # noqa: E402
from benchmarks.scoring_report import machine_info  # noqa: E402

VARIANTS = (
    "decode",
    "infer",
    "pipe64",
    "chunks",
    "chunks-1thread",
    "in-turn",
    "chunks+hash",
    "chunks-pinned",
    "chunks-0thread",
)
MAX_PIXELS, MAX_BYTES = 120_000_000, 256 * 2**20


# How the scan cut the benchmark's 120-photo 12 MP job (docs/performance.md): the first
# chunks small so scoring starts early, then doubling, then halving so both processes end
# together. The scan plans them as it hashes, so they are given, not recomputed here.
JOB_CHUNKS = (8, 8, 16, 32, 28, 14, 7, 4, 2, 1)


def _work(
    variant: str, share: int, files: list[str], model_dir: str, sizes: list[int]
) -> Callable[[], int]:
    """Set up one process's part of `variant` (model warmed, one pass done) and return it."""
    from service.thumbnails import THUMBNAIL_SIDE
    from workers.engine import get_engine
    from workers.pipeline import ScoreStats, _decode_into, _predict, score_paths

    if variant.endswith("-pinned"):  # this process and the threads it starts stay on one core
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[share % len(cores)]})
    engine = get_engine(Path(model_dir), 1)
    engine.warmup(range(1, 9))
    mine = files[share::2]
    chunks, start = [], 0
    for n, size in enumerate(sizes):
        if n % 2 == share:  # the two pool processes take the chunks in turn
            chunks.append(files[start : start + size])
        start += size

    def decode() -> int:
        from service.imaging import load_rgb, to_array

        out = np.empty(engine.input_shape, np.float32)
        for path in mine:
            to_array(load_rgb(path, engine.spec, MAX_PIXELS, MAX_BYTES), engine.spec, out=out)
        return len(mine)

    def infer() -> int:
        batch = np.random.default_rng(0).standard_normal((8, *engine.input_shape))
        batch = batch.astype(np.float32)
        batches = -(-len(mine) // 8)
        for _ in range(batches):
            engine.probabilities(batch)
        return 8 * batches

    def pipe64() -> int:
        for i in range(0, len(mine), 64):
            score_paths(
                engine, mine[i : i + 64], batch_size=8, max_pixels=MAX_PIXELS, max_bytes=MAX_BYTES
            )
        return len(mine)

    def in_chunks(threads: int) -> int:
        for part in chunks:
            score_paths(
                engine, part, batch_size=8, decode_threads=threads,
                thumbnail_side=THUMBNAIL_SIDE, max_pixels=MAX_PIXELS, max_bytes=MAX_BYTES,
            )  # fmt: skip
        return sum(map(len, chunks))

    def in_turn() -> int:
        buf = np.empty((8, *engine.input_shape), np.float32)
        for part in chunks:
            for i in range(0, len(part), 8):
                decoded = [
                    _decode_into(path, engine.spec, buf[j], (MAX_PIXELS, MAX_BYTES, None),
                                 THUMBNAIL_SIDE)
                    for j, path in enumerate(part[i : i + 8])
                ]  # fmt: skip
                failures = [d.failure for d in decoded]
                _predict(engine, buf, i, failures, (5, None), ScoreStats())
        return sum(map(len, chunks))

    work: Callable[[], int] = {
        "decode": decode,
        "infer": infer,
        "pipe64": pipe64,
        "chunks": lambda: in_chunks(2),
        "chunks+hash": lambda: in_chunks(2),
        "chunks-1thread": lambda: in_chunks(1),
        "chunks-pinned": lambda: in_chunks(2),
        "chunks-0thread": lambda: in_chunks(0),
        "in-turn": in_turn,
    }[variant]
    work()  # first-time costs (imports, allocations) are not what is measured
    return work


def _scorer(queue: Any, barrier: Any, variant: str, share: int, *job: Any) -> None:
    queue.put(("scoring", *_timed(barrier, _work(variant, share, *job), 1)[0]))


def _hasher(queue: Any, barrier: Any, files: list[str]) -> None:
    def hash_all() -> int:
        for path in files:
            with open(path, "rb") as fh:
                hashlib.file_digest(fh, "sha256")
        return len(files)

    queue.put(("hash", *_timed(barrier, hash_all, 1)[0]))


def measure(variant: str, files: list[str], model: str, sizes: list[int]) -> dict[str, float]:
    """One run of `variant`: images/s, scoring processes' CPU ms per photo, hashing's."""
    hashing = variant.endswith("+hash")
    queue, barrier = CTX.Queue(), CTX.Barrier(3 if hashing else 2)
    procs = [CTX.Process(target=_scorer, args=(queue, barrier, variant, i, files, model, sizes))
             for i in range(2)]  # fmt: skip
    if hashing:
        procs.append(CTX.Process(target=_hasher, args=(queue, barrier, files)))
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=1800) for _ in procs]
    for proc in procs:
        proc.join()
    scoring = [r for r in results if r[0] == "scoring"]
    photos = sum(r[1] for r in scoring)
    wall = max(r[3] for r in scoring) - min(r[2] for r in scoring)
    return {
        "rate": photos / wall,
        "cpu_ms": 1e3 * sum(r[4] for r in scoring) / photos,
        "hash_ms": max(0.0, 1e3 * sum(r[4] for r in results if r[0] == "hash") / len(files)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="4000x3000", help="photo size WxH (default 4000x3000)")
    parser.add_argument("--count", type=int, default=120, help="photos (default 120)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every variant")
    parser.add_argument(
        "--chunks", type=int, nargs="+", default=list(JOB_CHUNKS),
        help="the job's chunk sizes, in the order they are cut (default: the 120-photo job's)",
    )  # fmt: skip
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    try:
        width, height = (int(v) for v in args.size.split("x"))
    except ValueError:
        parser.error(f"--size must look like 4000x3000, not {args.size!r}")
    if args.count < 2 or args.rounds < 1:
        parser.error("--count must be at least 2 and --rounds at least 1")
    if sum(args.chunks) != args.count or min(args.chunks) < 1:
        parser.error(f"--chunks must be positive and add up to --count ({args.count})")
    model = str(build_model("efficientnet_lite0", args.work))
    folder = args.work / f"photos-{width}x{height}-{args.count}"
    files = make_photos(folder, (width, height), args.count)
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
    for r in range(args.rounds):
        order = args.variants if r % 2 == 0 else args.variants[::-1]
        for variant in order:
            runs[variant].append(measure(variant, files, model, args.chunks))
            print(f"round {r + 1} {variant}: {runs[variant][-1]}", flush=True)
    summary = {
        v: {key: round(statistics.median(run[key] for run in rs), 2) for key in rs[0]}
        for v, rs in runs.items()
    }
    result = {
        "machine": machine_info(),
        "photos": f"{args.count} x {args.size}",
        "chunks": args.chunks,
        "rounds": args.rounds,
        "median": summary,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"pipeline_shapes-{args.size}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    lines = [
        f"# Pipeline shapes: {args.count} photos of {args.size}, EfficientNet-Lite0, 2 processes",
        "",
        f"`benchmarks/pipeline_shapes.py`, {args.rounds} rounds, medians; the job's chunks: "
        f"{result['chunks']}.",
        "",
        "| variant | images/s | CPU ms per photo (scoring) | rounds (img/s / ms) |",
        "|---|---|---|---|",
    ]
    for v, rs in runs.items():
        each = " ".join(f"{run['rate']:.1f}/{run['cpu_ms']:.1f}" for run in rs)
        lines.append(f"| {v} | {summary[v]['rate']} | {summary[v]['cpu_ms']} | {each} |")
    if "chunks+hash" in summary:
        lines += ["", f"The hashing process: {summary['chunks+hash']['hash_ms']} ms per photo."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
