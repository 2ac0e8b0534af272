"""Scoring throughput: model only, decode only, herpscore end to end, a naive torch pipeline."""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.scoring_inputs import (  # noqa: E402
    CTX,
    PROCESSES,
    build_model,
    make_photos,
    torch_model,
)
from benchmarks.scoring_report import machine_info, write_report  # noqa: E402
from service.imaging import InputSpec, load_rgb, to_array  # noqa: E402

log = logging.getLogger("bench_scoring")
WORK = ROOT / "benchmarks" / "_work"
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("mobilenet_v3_small", "efficientnet_lite0")
PHOTO_SIZES = ((4000, 3000), (1024, 768))
BACKENDS = ("postgres", "embedded")  # PostgreSQL + Redis; SQLite + the filesystem broker
MAX_PIXELS, MAX_BYTES = 120_000_000, 256 * 1024 * 1024


# ---------------------------------------------------------------- running N processes at once


def run_parallel(
    target: Callable[..., list[tuple[float, ...]]],
    jobs: Sequence[tuple[Any, ...]],
    cpu: list[float] | None = None,
) -> list[float]:
    """Run target(barrier, *job) in one spawned process per job; items/s per round.

    Each process sets up (session, warm-up, files) first, then every round starts at a
    shared barrier and reports (items, start, end) with time.perf_counter (CLOCK_MONOTONIC,
    comparable across processes), so a round's rate is total items / (last end - first start).
    A target that also reports the CPU seconds its process used (a fourth field) has each
    round's CPU milliseconds per item appended to `cpu`.
    """
    barrier, queue = CTX.Barrier(len(jobs)), CTX.Queue()
    procs = [
        CTX.Process(target=_child, args=(queue, i, barrier, target, job))
        for i, job in enumerate(jobs)
    ]
    for proc in procs:
        proc.start()
    per_process: dict[int, Any] = {}
    for _ in procs:
        i, outcome = queue.get(timeout=3600)
        if isinstance(outcome, str):
            raise RuntimeError(f"benchmark process {i} failed:\n{outcome}")
        per_process[i] = outcome
    for proc in procs:
        proc.join()
    rates = []
    for rounds in zip(*(per_process[i] for i in sorted(per_process)), strict=True):
        items = sum(r[0] for r in rounds)
        rates.append(items / (max(r[2] for r in rounds) - min(r[1] for r in rounds)))
        if cpu is not None:
            cpu.append(1e3 * sum(r[3] for r in rounds) / items)
    return rates


def _child(
    queue: Any, i: int, barrier: Any, target: Callable[..., Any], job: tuple[Any, ...]
) -> None:
    import traceback

    try:
        queue.put((i, target(barrier, *job)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        barrier.abort()  # the others must not wait for a round that never starts
        queue.put((i, traceback.format_exc()))


def _timed(barrier: Any, work: Callable[[], int], repeats: int) -> list[tuple[float, ...]]:
    rounds: list[tuple[float, ...]] = []
    for _ in range(repeats):
        barrier.wait(timeout=600)
        began, cpu = time.perf_counter(), _cpu_seconds()
        items = work()
        rounds.append((items, began, time.perf_counter(), _cpu_seconds() - cpu))
    return rounds


def _cpu_seconds() -> float:
    """User + system CPU of this process, every thread (ORT's and the decode threads)."""
    times = os.times()
    return times.user + times.system


# ---------------------------------------------------------------- (a) model only


def _model_only(
    barrier: Any, model_dir: str, batches: int, batch: int, repeats: int
) -> list[tuple[float, ...]]:
    from workers.engine import InferenceEngine

    engine = InferenceEngine(Path(model_dir), threads=1)
    engine.warmup([batch])
    tensor = np.random.default_rng(0).standard_normal((batch, *engine.input_shape))
    tensor = tensor.astype(np.float32)

    def work() -> int:
        for _ in range(batches):
            engine.logits(tensor)
        return batches * batch

    work()
    return _timed(barrier, work, repeats)


def measure_model_only(
    model_dir: Path, batches: int, repeats: int, processes: int = PROCESSES
) -> float:
    """(a) ORT images/s on preloaded tensors: `processes` x 1 thread, batch 8, warmed up."""
    jobs = [(str(model_dir), batches, 8, repeats)] * processes
    return statistics.median(run_parallel(_model_only, jobs))


# ---------------------------------------------------------------- (b) decode and preprocess only


def _decode_only(
    barrier: Any, files: list[str], spec_dict: dict[str, Any], naive: bool, repeats: int
) -> list[tuple[float, ...]]:
    spec = InputSpec.from_metadata({"input": spec_dict})
    out = np.empty((3, spec.size, spec.size), dtype=np.float32)

    def work() -> int:
        for path in files:
            if naive:
                with Image.open(path) as img:
                    rgb = img.convert("RGB").resize((spec.size, spec.size))
            else:
                rgb = load_rgb(path, spec, MAX_PIXELS, MAX_BYTES)
            to_array(rgb, spec, out=out)
        return len(files)

    return _timed(barrier, work, repeats)


def measure_decode(
    files: list[str], spec: InputSpec, naive: bool, repeats: int, processes: int = PROCESSES
) -> float:
    """(b) decode + preprocess images/s in `processes` processes (one thread each)."""
    jobs = [(files[i::processes], spec.to_dict(), naive, repeats) for i in range(processes)]
    return statistics.median(run_parallel(_decode_only, jobs))


# ---------------------------------------------------------------- (c) herpscore end to end


def _pipeline(
    barrier: Any,
    files: list[str],
    model_dir: str,
    batch: int,
    chunk: int,
    repeats: int,
    thumbnails_dir: str | None = None,
    processes: int = PROCESSES,
) -> list[tuple[float, ...]]:
    from service.imaging import sha256_file
    from service.settings import Settings
    from service.thumbnails import THUMBNAIL_SIDE, store_thumbnails
    from workers.engine import get_engine
    from workers.pipeline import score_paths
    from workers.tasks import decode_threads

    engine = get_engine(Path(model_dir), 1)
    engine.warmup(range(1, batch + 1))
    # As many decode threads as a scoring worker of `processes` processes would run.
    threads = decode_threads(Settings(worker_concurrency=processes), engine)
    # With a folder: as the scoring worker does with thumbnails_when_scoring, each photo's
    # thumbnail cut from its decode and written (sha256s are the scan's work, done before).
    settings = Settings(data_dir=Path(thumbnails_dir)) if thumbnails_dir else None
    digests = [sha256_file(path) for path in files] if settings else []

    def work() -> int:
        for i in range(0, len(files), chunk):
            part = files[i : i + chunk]
            results = score_paths(
                engine,
                part,
                batch_size=batch,
                decode_threads=threads,
                max_pixels=MAX_PIXELS,
                max_bytes=MAX_BYTES,
                thumbnail_side=THUMBNAIL_SIDE if settings else None,
            )
            if settings:
                made = zip(
                    digests[i : i + chunk], part, [r.thumbnail for r in results], strict=True
                )
                store_thumbnails(settings, made)
        return len(files)

    return _timed(barrier, work, repeats)


def measure_pipeline_only(
    folder: Path,
    model_dir: Path,
    processes: int = PROCESSES,
    repeats: int = 1,
    chunk: int = 64,
    thumbnails: bool = False,
    cpu: list[float] | None = None,
) -> float:
    """c_pipe: the inference pipeline alone, images/s (no job, broker or database).

    `processes` processes each score their share of the folder in chunks of `chunk` with
    workers.pipeline.score_paths (batch 8, engine cached and warmed, decode threads as the
    scoring worker chooses them: workers.tasks.decode_threads). Set
    beside c, it shows what the job path (scan, hashing, dispatch, writes) costs. With
    `thumbnails`, each photo's thumbnail is also made and written, into a fresh folder.
    """
    import tempfile

    files = sorted(str(p) for p in folder.rglob("*.jpg"))
    shares = [files[i::processes] for i in range(processes)]
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        target = tmp if thumbnails else None
        jobs = [(share, str(model_dir), 8, chunk, repeats, target, processes) for share in shares]
        return statistics.median(run_parallel(_pipeline, jobs, cpu))


def measure_thumbnail_cost(folder: Path, model_dir: Path, rounds: int) -> dict[str, Any]:
    """c_pipe and CPU ms per photo without and with the scoring worker's thumbnails, in
    interleaved rounds (the order alternates); ratios are taken within each round. On a
    shared machine the CPU per photo is the steadier measure: it does not count the time
    other work takes the cores away."""
    per_round = []
    for r in range(rounds):
        got: dict[bool, dict[str, float]] = {}
        for on in (False, True)[:: 1 if r % 2 == 0 else -1]:
            cpu: list[float] = []
            rate = measure_pipeline_only(folder, model_dir, thumbnails=on, cpu=cpu)
            got[on] = {"rate": rate, "cpu_ms": cpu[0]}
        per_round.append({"without": got[False], "with": got[True]})
        log.info("thumbnail cost round %d: %s", r + 1, per_round[-1])

    def median(key: str, arm: str) -> float:
        return float(statistics.median(r[arm][key] for r in per_round))

    rate_ratios = [r["with"]["rate"] / r["without"]["rate"] for r in per_round]
    cpu_ratios = [r["with"]["cpu_ms"] / r["without"]["cpu_ms"] for r in per_round]
    return {
        "rounds": per_round,
        "without": median("rate", "without"),
        "with": median("rate", "with"),
        "with_over_without": statistics.median(rate_ratios),
        "ratio_min": min(rate_ratios),
        "ratio_max": max(rate_ratios),
        "cpu_ms_without": median("cpu_ms", "without"),
        "cpu_ms_with": median("cpu_ms", "with"),
        "cpu_with_over_without": statistics.median(cpu_ratios),
        "cpu_ratio_min": min(cpu_ratios),
        "cpu_ratio_max": max(cpu_ratios),
    }


def measure_end_to_end(
    folder: Path, model_dir: Path, work: Path, backend: str, display_copies: bool = False
) -> dict[str, Any]:
    """(c) one job through the real job path (see benchmarks/job_path.py).

    Display copies are off unless asked for: they are review work, not scoring (L has no
    part of them), and a random-weight model is unsure of every photo, so all of them would
    be routed, which no real survey does (a real model routes a fraction).
    """
    from benchmarks.job_path import measure_job_path

    overrides = {"display_copies_when_scoring": display_copies}
    return measure_job_path(folder, model_dir, work, backend=backend, overrides=overrides)


END_TO_END_LABEL = "the real job path: API-equivalent job creation, scan, Celery worker, DB"


# ---------------------------------------------------------------- (d) the tutorials' pipeline


def measure_naive_torch(folder: Path, model_name: str, num_workers: int, repeats: int) -> float:
    """(d) ImageFolder + DataLoader + Resize/CenterCrop/ToTensor/Normalize + torch eager."""
    import torch
    from torchvision import datasets, transforms

    model, _ = torch_model(model_name)
    transform = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    dataset = datasets.ImageFolder(str(folder), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=8, shuffle=False, num_workers=num_workers
    )
    rates = []
    with torch.no_grad():
        model(torch.zeros(8, 3, 224, 224))  # warm-up; worker start-up stays in the timing
        for _ in range(repeats):
            began = time.perf_counter()
            seen = 0
            for images, _labels in loader:
                model(images).softmax(dim=1)
                seen += len(images)
            rates.append(seen / (time.perf_counter() - began))
    return statistics.median(rates)


# ---------------------------------------------------------------- batch handling (for pipeline)


def measure_batch_policy(model_dir: Path, full: int = 8, repeats: int = 15) -> dict[str, Any]:
    """ms for a partial batch of n rows: warmed n-shape, padded to `full`, cold n-shape."""
    from workers.engine import InferenceEngine

    rows: dict[str, Any] = {}
    for n in (1, 3, 5, 7):
        engine = InferenceEngine(model_dir, threads=1)
        engine.warmup([full])
        x = np.zeros((n, *engine.input_shape), dtype=np.float32)
        padded = np.zeros((full, *engine.input_shape), dtype=np.float32)
        began = time.perf_counter()
        engine.logits(x)
        cold = time.perf_counter() - began
        warm = _median_seconds(partial(engine.logits, x), repeats)
        pad = _median_seconds(partial(engine.logits, padded), repeats)
        rows[str(n)] = {
            "cold_first_run_ms": round(cold * 1e3, 2),
            "warm_exact_ms": round(warm * 1e3, 2),
            "padded_to_full_ms": round(pad * 1e3, 2),
        }
    return rows


def _median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, one round: smoke")
    parser.add_argument("--count-large", type=int, default=400, help="4000x3000 photos")
    parser.add_argument("--count-small", type=int, default=1000, help="1024x768 photos")
    parser.add_argument(
        "--small-jobs",
        type=int,
        nargs=2,
        default=(120, 400),
        metavar=("LARGE", "SMALL"),
        help="the small-job sizes, also measured: 4000x3000 and 1024x768 photos (0 0: none)",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of a, b, c (one job), a, b, c_pipe, d"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats-naive", type=int, default=1, help="rounds for b_naive")
    parser.add_argument("--naive-num-workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=list(BACKENDS),
        help="(c) on PostgreSQL + Redis (production) and/or SQLite + filesystem broker",
    )
    parser.add_argument(
        "--display-copies", action="store_true", help="(c) with the review display copies"
    )
    parser.add_argument("--sets", nargs="+", help="only these photo sets, e.g. '1024x768 n=400'")
    parser.add_argument(
        "--thumbnail-cost",
        action="store_true",
        help="only c_pipe without and with the worker's thumbnails (thumbnails_when_scoring), "
        "per model and photo set: results to <name>-thumbnails.md/.json",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="scoring", help="results file name (.md, .json)")
    return parser


def measure_row(
    args: argparse.Namespace,
    name: str,
    label: str,
    model_dir: Path,
    folder: Path,
    files: list[str],
) -> dict[str, Any]:
    """a, b, c (per backend), c_pipe and d for one model and photo set, in interleaved rounds.

    The host's speed drifts by 10 % and more over minutes, so every round measures all of
    them back to back and the ratios are taken within a round; the row reports the median
    of each rate and of each ratio over the rounds. The backends' jobs alternate in order
    from round to round, so neither always runs first.
    """
    from service.modelspec import load_artifact

    spec = load_artifact(model_dir, check_onnx=False).spec
    batches = 5 if args.quick else 40
    rounds: list[dict[str, Any]] = []
    for r in range(args.rounds):
        log.info("%s %s: round %d of %d", name, label, r + 1, args.rounds)
        # The jobs are bracketed: a and b just before them and just after them, so that a
        # drift of the host's speed during the round moves L with c instead of against it.
        a0 = measure_model_only(model_dir, batches, repeats=1)
        b0 = measure_decode(files, spec, naive=False, repeats=1)
        jobs = {}
        for backend in args.backends[:: 1 if r % 2 == 0 else -1]:
            jobs[backend] = measure_end_to_end(
                folder, model_dir, args.work, backend, args.display_copies
            )
        a1 = measure_model_only(model_dir, batches, repeats=1)
        b1 = measure_decode(files, spec, naive=False, repeats=1)
        c_pipe = measure_pipeline_only(folder, model_dir)
        d = measure_naive_torch(folder, name, args.naive_num_workers, repeats=1)
        l_before, l_after = 1.0 / (1.0 / a0 + 1.0 / b0), 1.0 / (1.0 / a1 + 1.0 / b1)
        rounds.append(
            {"a": (a0 + a1) / 2, "b": (b0 + b1) / 2, "L": (l_before + l_after) / 2}
            | {"c": {k: job["rate"] for k, job in jobs.items()}, "jobs": jobs}
            | {"c_pipe": c_pipe, "d": d, "L_before": l_before, "L_after": l_after}
        )
        log.info("%s", {k: v for k, v in rounds[-1].items() if k != "jobs"})

    def median(values: Iterable[float]) -> float:
        return float(statistics.median(values))

    row: dict[str, Any] = {"model": name, "photos": label}
    row |= {"count": len(files), "rounds": rounds}
    for key in ("a", "b", "L", "c_pipe", "d"):
        row[key] = median(r[key] for r in rounds)
    row["c_pipe_over_L"] = median(r["c_pipe"] / r["L"] for r in rounds)
    row["ideal_cpu_ms_per_image"] = median(1e3 * PROCESSES / r["L"] for r in rounds)
    row["backends"] = {}
    for backend in args.backends:
        of_backend = [r["jobs"][backend] for r in rounds]
        groups = sorted({g for job in of_backend for g in job["cpu_ms_per_image"]})
        ratios = [r["c"][backend] / r["L"] for r in rounds]
        row["backends"][backend] = {
            "c": median(r["c"][backend] for r in rounds),
            "c_over_L": median(ratios),
            "c_over_L_min": min(ratios),
            "c_over_L_max": max(ratios),
            "c_over_a": median(r["c"][backend] / r["a"] for r in rounds),
            "c_over_d": median(r["c"][backend] / r["d"] for r in rounds),
            "cpu": {
                g: median(j["cpu_ms_per_image"].get(g, 0.0) for j in of_backend) for g in groups
            },
        }
    return row


def photo_sets(args: argparse.Namespace) -> list[tuple[str, tuple[int, int], int, str]]:
    """(label, size, count, folder name) of every photo set the run measures."""
    sets = []
    for (w, h), count in zip(PHOTO_SIZES, (args.count_large, args.count_small), strict=True):
        sets.append((f"{w}x{h} n={count}", (w, h), count, f"photos-{w}x{h}"))
    for (w, h), count in zip(PHOTO_SIZES, args.small_jobs, strict=True):
        if count:
            sets.append((f"{w}x{h} n={count}", (w, h), count, f"photos-{w}x{h}-small"))
    if args.quick:
        sets = [(label, size, n, folder + "-quick") for label, size, n, folder in sets[:2]]
    return [s for s in sets if not args.sets or s[0] in args.sets]


def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.count_large, args.count_small = min(args.count_large, 16), min(args.count_small, 32)
        args.rounds = args.repeats_naive = 1
    results: dict[str, Any] = {
        "machine": machine_info(),
        "mode": "quick" if args.quick else "full",
        "rounds": args.rounds,
        "repeats_naive": args.repeats_naive,
        "naive_num_workers": args.naive_num_workers,
        "end_to_end_label": END_TO_END_LABEL,
        "backends": args.backends,
        "display_copies": args.display_copies,
        "rows": [],
        "batch_policy": {},
    }
    photos, naive_decode = {}, {}
    for label, size, count, folder_name in photo_sets(args):
        folder = args.work / folder_name
        photos[label] = (folder, make_photos(folder, size, count))
    if args.thumbnail_cost:
        return thumbnail_cost(args, photos, results["machine"])
    for name in args.models:
        model_dir = build_model(name, args.work)
        from service.modelspec import load_artifact

        spec = load_artifact(model_dir, check_onnx=False).spec
        log.info("%s: partial batch timings", name)
        results["batch_policy"][name] = measure_batch_policy(model_dir)
        for label, (folder, files) in photos.items():
            if label not in naive_decode:  # model-independent: same files, same (224, 224)
                naive_decode[label] = measure_decode(files, spec, True, args.repeats_naive)
            row = measure_row(args, name, label, model_dir, folder, files)
            row["b_naive"] = naive_decode[label]
            row["b_over_b_naive"] = row["b"] / row["b_naive"]
            log.info("%s", {k: v for k, v in row.items() if k != "rounds"})
            results["rows"].append(row)
    results["machine"]["loadavg_end"] = os.getloadavg()
    write_report(results, args.out, args.name)
    return results


def thumbnail_cost(
    args: argparse.Namespace, photos: dict[str, tuple[Path, list[str]]], machine: dict[str, Any]
) -> dict[str, Any]:
    """The --thumbnail-cost run: what writing every photo's thumbnail costs the scoring."""
    rows = []
    for name in args.models:
        model_dir = build_model(name, args.work)
        for label, (folder, _files) in photos.items():
            row = {"model": name, "photos": label}
            row |= measure_thumbnail_cost(folder, model_dir, args.rounds)
            log.info("%s", {k: v for k, v in row.items() if k != "rounds"})
            rows.append(row)
    machine["loadavg_end"] = os.getloadavg()
    results = {"machine": machine, "processes": PROCESSES, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{args.name}-thumbnails"
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# Scoring with and without the worker's thumbnails (`thumbnails_when_scoring`)",
        "",
        f"`benchmarks/bench_scoring.py --thumbnail-cost`: c_pipe (workers.pipeline.score_paths "
        f"in {PROCESSES} processes, no job or database) without thumbnails and with each "
        "photo's 256 px thumbnail cut from its model decode, JPEG-encoded and written to a "
        f"fresh folder; {args.rounds} interleaved rounds, ratio taken within each round. "
        f"CPU: {machine['cpu']}, {machine['affinity']} cores; load average "
        f"{machine['loadavg_start'][0]:.2f} at the start, {machine['loadavg_end'][0]:.2f} "
        "at the end.",
        "",
        "| model | photos | img/s without | img/s with | with / without (min-max) | "
        "CPU ms/photo without | with | with / without (min-max) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['photos']} | {row['without']:.1f} | {row['with']:.1f} | "
            f"{row['with_over_without']:.3f} ({row['ratio_min']:.3f}-{row['ratio_max']:.3f}) | "
            f"{row['cpu_ms_without']:.1f} | {row['cpu_ms_with']:.1f} | "
            f"{row['cpu_with_over_without']:.3f} "
            f"({row['cpu_ratio_min']:.3f}-{row['cpu_ratio_max']:.3f}) |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main(get_args_parser().parse_args())
