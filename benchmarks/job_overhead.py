"""The CPU budget of a small job, piece by piece: what the job path adds to the model's work.

`bench_scoring.py` measures c/L and, from /proc, the CPU each group of processes used
during a job. This script times the pieces one at a time in this process, so each can be
compared with the model's own cost per photo (decode + inference, the "ideal" 2 / L):

- decode: `load_rgb` + `to_array` (b's work); inference: ORT on batches of 8 (a's work);
- thumbnail (from the upright decode) and perceptual hash (of the model's input): what a
  scoring decode thread adds to the decode;
- sha256 and probe: the scan's per-file reads; scan: `run_scan` of the whole folder
  (walk, hash, probe, rows, chunks) against an empty database, broker calls left out;
- bookkeeping: `score_chunk` for every chunk of that scan with the model replaced by
  stored outcomes (claim, byte twins, routing, writes, thumbnail files, finishing the job).

    PYTHONPATH=$PWD python benchmarks/job_overhead.py --backends sqlite postgres

CPU time (time.process_time) of this process only: PostgreSQL's own CPU is not in it (the
job benchmark reads it from /proc). The pipeline's pieces are the best of --repeats passes
(other work on the machine only ever adds CPU time); a job's scan and bookkeeping, which
run once per fresh database, the median of --repeats jobs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.job_path import fresh_pg_database  # noqa: E402
from benchmarks.scoring_inputs import build_model, make_photos  # noqa: E402
from benchmarks.scoring_report import machine_info  # noqa: E402

SETS = {"4000x3000": ((4000, 3000), 120), "1024x768": ((1024, 768), 400)}
MAX_PIXELS, MAX_BYTES = 120_000_000, 256 * 2**20


def cpu_ms_per_photo(fn: Callable[[], object], photos: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.process_time()
        fn()
        best = min(best, time.process_time() - began)
    return round(1e3 * best / photos, 3)


def pipeline_pieces(paths: list[str], model_dir: Path, repeats: int) -> dict[str, float]:
    from service import thumbnails
    from service.bursts import perceptual_hash
    from service.imaging import decode_upright, load_rgb, probe, sha256_file, to_array
    from workers.engine import InferenceEngine

    engine = InferenceEngine(model_dir)
    spec, batch = engine.spec, np.zeros((8, *engine.input_shape), np.float32)
    engine.warmup([8])

    def decode() -> None:
        for p in paths:
            to_array(load_rgb(p, spec, MAX_PIXELS, MAX_BYTES), spec, out=batch[0])

    uprights = [decode_upright(p, MAX_PIXELS, MAX_BYTES, at_least=spec.draft_side) for p in paths]
    inputs = [load_rgb(p, spec, MAX_PIXELS, MAX_BYTES) for p in paths]

    def thumbnail() -> None:  # cut from the upright decode, as the decode threads do
        for img in uprights:
            thumbnails.encode_jpeg(thumbnails.shrink(img, thumbnails.THUMBNAIL_SIDE))

    def phash() -> None:  # of the model's input image, as the decode threads do
        for img in inputs:
            perceptual_hash(img)

    def inference() -> None:
        for _ in range(len(paths) // 8):
            engine.probabilities(batch)

    n = len(paths)
    pieces = {
        "decode": cpu_ms_per_photo(decode, n, repeats),
        "thumbnail": cpu_ms_per_photo(thumbnail, n, repeats),
        "phash": cpu_ms_per_photo(phash, n, repeats),
        "inference": cpu_ms_per_photo(inference, 8 * (n // 8), repeats),
        "sha256": cpu_ms_per_photo(lambda: [sha256_file(p) for p in paths], n, repeats),
        "probe": cpu_ms_per_photo(
            lambda: [probe(p, MAX_PIXELS, MAX_BYTES) for p in paths], n, repeats
        ),
    }
    return pieces


@contextmanager
def empty_database(backend: str) -> Iterator[str | None]:
    """None (the embedded SQLite file) or the URL of a fresh PostgreSQL database."""
    if backend == "sqlite":
        yield None
        return
    with fresh_pg_database("herpscore_overhead") as url:
        yield url


def job_pieces(
    folder: Path, model_dir: Path, backend: str, thumbnail: bytes, labels: Sequence[str]
) -> dict[str, float]:
    """CPU ms per photo of one job's scan and of its chunks' bookkeeping, on a fresh database."""
    from sqlalchemy import select

    from service.db import session_scope
    from service.jobs import create_job
    from service.migrate import upgrade
    from service.models import Chunk
    from service.registry import add_model
    from service.scanning import run_scan
    from service.scoring import _Known as Outcome  # a stored outcome, as the worker replays
    from service.scoring import score_chunk
    from service.settings import Settings

    rng = np.random.default_rng(0)

    def fake_model(_model: Any, paths: Sequence[str]) -> list[Outcome]:
        outcomes = []
        for _ in paths:
            probs = np.sort(rng.dirichlet(np.ones(5)))[::-1]
            top = [(labels[i], float(p)) for i, p in enumerate(probs)]
            phash = f"{int(rng.integers(2**62)):016x}"
            outcomes.append(Outcome(0, labels[0], top[0][1], top, phash=phash, thumbnail=thumbnail))
        return outcomes

    photos = len(list(folder.glob("*.jpg")))
    with (
        tempfile.TemporaryDirectory(prefix="job-overhead-") as data,
        empty_database(backend) as url,
    ):
        settings = Settings(
            data_dir=Path(data), database_url=url, broker_url=None,
            allowed_roots=[folder.parent], display_copies_when_scoring=False,
        )  # fmt: skip
        settings.ensure_dirs()
        upgrade(settings.db_url)
        with session_scope(settings.db_url) as session:
            add_model(session, settings, model_dir, activate=True)
        with session_scope(settings.db_url) as session:
            job_id = create_job(session, settings, str(folder)).id
        began = time.process_time()
        run_scan(settings, job_id, lambda _ids: None)
        scanned = time.process_time()
        with session_scope(settings.db_url) as session:
            chunks = list(
                session.scalars(select(Chunk.id).where(Chunk.job_id == job_id).order_by(Chunk.id))
            )
        for chunk_id in chunks:
            score_chunk(settings, chunk_id, fake_model)
        done = time.process_time()
    return {
        "chunks": len(chunks),
        "scan": round(1e3 * (scanned - began) / photos, 3),
        "bookkeeping": round(1e3 * (done - scanned) / photos, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgres"],
                        default=["sqlite", "postgres"])  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    from PIL import Image

    model_dir = build_model("efficientnet_lite0", args.work)
    labels = list(json.loads((model_dir / "class_map.json").read_text()))
    thumb = Image.new("RGB", (250, 188), (90, 120, 60))
    from service.thumbnails import encode_jpeg

    thumbnail = encode_jpeg(thumb)
    rows = []
    for name in args.sets:
        size, count = SETS[name]
        folder = args.work / f"photos-{name}-small"
        paths = make_photos(folder, size, count)
        row: dict[str, Any] = {
            "photos": f"{name} n={count}",
            **pipeline_pieces(paths, model_dir, args.repeats),
        }
        row["ideal"] = round(row["decode"] + row["inference"], 3)
        for backend in args.backends:
            runs = [
                job_pieces(folder / "survey", model_dir, backend, thumbnail, labels)
                for _ in range(args.repeats)
            ]
            row[backend] = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        rows.append(row)
        print(json.dumps(row))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "job_overhead.json").write_text(
        json.dumps({"machine": machine_info(), "repeats": args.repeats, "rows": rows}, indent=1)
    )
    lines = [
        "# The CPU budget of a small job (ms of CPU per photo, this process only)",
        "",
        f"`benchmarks/job_overhead.py`: pipeline pieces best of {args.repeats} passes, scan and"
        f" bookkeeping medians of {args.repeats} jobs. 'ideal' is decode"
        " + inference (the model's own work, 2 / L in the job benchmark); the other columns"
        " are what the job path adds. Scan and bookkeeping: SQLite / PostgreSQL (PostgreSQL's"
        " server CPU not included).",
        "",
        "| photos | decode | inference | ideal | thumbnail | phash | sha256 | probe | scan |"
        " bookkeeping | chunks | added / ideal |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        backends = [row[b] for b in args.backends]
        added = [row["thumbnail"] + row["phash"] + b["scan"] + b["bookkeeping"] for b in backends]

        def each(values: list[float], fmt: str = ".2f") -> str:
            return " / ".join(format(v, fmt) for v in values)

        lines.append(
            f"| {row['photos']} | {row['decode']:.2f} | {row['inference']:.2f} |"
            f" {row['ideal']:.2f} | {row['thumbnail']:.2f} | {row['phash']:.2f} |"
            f" {row['sha256']:.2f} |"
            f" {row['probe']:.2f} | {each([b['scan'] for b in backends])} |"
            f" {each([b['bookkeeping'] for b in backends])} |"
            f" {each([int(b['chunks']) for b in backends], 'd')} |"
            f" {each([a / row['ideal'] for a in added], '.3f')} |"
        )
    (args.out / "job_overhead.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
