"""Scoring cost of each backbone: ONNX Runtime images/s on one thread, batch 8, native size.

    nice -n 10 .venv/bin/python benchmarks/backbone_cost.py [--rounds 7] [--images DIR]
        -> benchmarks/results/backbone_cost.{json,md}

Each backbone is built with a 14-class head (ph-snakes), exported with the same code as
`python -m training fit` (training/export.py, with its parity check against torch) at its
native input size, and timed the way the ph-snakes benchmark times a model folder: ONNX
Runtime, 1 intra-op thread, batches of 8 preprocessed photos, median of the rounds. The
rounds go round-robin over the backbones, so a load spike from other processes on a shared
machine falls on all of them rather than on one. Weights are the offline pretrained ones
where present; otherwise random (`weights` says which): the cost of a forward pass does not
depend on the weight values. With --int8 each model is also statically quantised (per
channel, QDQ, calibrated on the same photos) and timed the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.settings import DEFAULT_EXTENSIONS  # noqa: E402
from training import export  # noqa: E402
from training.backbones import WeightsUnavailable, build_backbone, native_size  # noqa: E402
from training.data import eval_loader, eval_transform  # noqa: E402

log = logging.getLogger("bench")
RESULTS = ROOT / "benchmarks" / "results"
BACKBONES = ("mobilenet_v3_small", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images",
        type=Path,
        default=Path("/work/shared/data/ph-snakes/test"),
        help="photos to preprocess and score (the first --count, sorted)",
    )
    parser.add_argument("--count", type=int, default=64, help="photos per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--classes", type=int, default=14)
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=list(BACKBONES),
        help="backbone names, each at its native size, or NAME:SIZE (e.g. efficientnet_lite0:288, "
        "the training default's size)",
    )
    parser.add_argument("--tag", default="", help="suffix for the results files")
    parser.add_argument(
        "--macs-only",
        action="store_true",
        help="only count each backbone's multiply-adds (torch FlopCounterMode, batch 1, native "
        "size) into the existing results file",
    )
    return parser


def photos(folder: Path, count: int) -> list[Path]:
    found = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower().lstrip(".") in DEFAULT_EXTENSIONS
    )
    return found[:count]


def parse_entry(entry: str) -> tuple[str, int | None]:
    """'NAME' (native size) or 'NAME:SIZE'."""
    name, _, size = entry.partition(":")
    if size and not size.isdigit():
        raise SystemExit(f"--backbones: {entry!r} is not NAME or NAME:SIZE")
    return name, int(size) if size else None


def build(name: str, classes: int, size: int | None = None) -> tuple[Any, str]:
    """The backbone with offline pretrained weights, or random ones if none are here."""
    try:
        backbone = build_backbone(name, classes, size=size)
    except WeightsUnavailable:
        log.warning("%s: no offline weights; timing it with random weights", name)
        return build_backbone(name, classes, weights="none", size=size), "random (none offline)"
    return backbone, "pretrained"


def gmacs(model: torch.nn.Module, size: int) -> float:
    """Multiply-adds of one forward pass at batch 1 (convolutions and matmuls), in billions."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, size, size))
    return round(counter.get_total_flops() / 2e9, 3)


def add_macs(args: argparse.Namespace) -> dict[str, Any]:
    stem = RESULTS / f"backbone_cost{'_' + args.tag if args.tag else ''}"
    results: dict[str, Any] = json.loads(stem.with_suffix(".json").read_text())
    for entry, m in results["models"].items():
        name, _ = parse_entry(entry)
        m["gmacs"] = gmacs(build_backbone(name, args.classes, weights="none").model, m["size_px"])
    write(results, args.tag)
    return results


def time_round(session: Any, inputs: np.ndarray, batch: int) -> float:
    """Images/s of one pass over `inputs` in batches of `batch`."""
    name = session.get_inputs()[0].name
    batches = [inputs[i : i + batch] for i in range(0, len(inputs) - batch + 1, batch)]
    started = time.perf_counter()
    for b in batches:
        session.run(None, {name: b})
    return len(batches) * batch / (time.perf_counter() - started)


def main(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    if args.macs_only:
        return add_macs(args)
    files = photos(args.images, args.count)
    work = Path(tempfile.mkdtemp(prefix="backbone-cost-"))
    models: dict[str, dict[str, Any]] = {}
    sessions: dict[tuple[str, str], Any] = {}
    inputs: dict[str, np.ndarray] = {}
    for name in args.backbones:  # results are keyed by the entry: NAME or NAME:SIZE
        arch, size = parse_entry(name)
        backbone, weights = build(arch, args.classes, size)
        spec = backbone.spec
        load, norm = eval_loader(spec), eval_transform(spec)
        x = np.stack([norm(load(p)).numpy() for p in files])
        path = work / f"{name}.onnx"
        export.export_onnx(backbone.model, spec.size, path)
        parity = export.check_parity(path, backbone.model, x[:16])
        params = sum(p.numel() for p in backbone.model.parameters())
        models[name] = {
            "size_px": spec.size,
            "native_size_px": native_size(arch),
            "weights": weights,
            "params_millions": round(params / 1e6, 2),
            "gmacs": gmacs(backbone.model, spec.size),
            "fp32": {"onnx_mb": round(path.stat().st_size / 1e6, 2), "rates": []},
            "parity_max_abs_diff": parity["max_abs_diff"],
        }
        sessions[(name, "fp32")] = export.ort_session(path, threads=1)
        if args.int8:
            int8 = work / f"{name}.int8.onnx"
            export.quantize_int8(path, int8, x)
            models[name]["int8"] = {"onnx_mb": round(int8.stat().st_size / 1e6, 2), "rates": []}
            sessions[(name, "int8")] = export.ort_session(int8, threads=1)
        inputs[name] = x
        log.info("%s ready: %s", name, models[name])
    for (name, _), session in sessions.items():  # warm-up
        time_round(session, inputs[name][: args.batch], args.batch)
    for r in range(args.rounds):
        for (name, kind), session in sessions.items():
            models[name][kind]["rates"].append(
                round(time_round(session, inputs[name], args.batch), 1)
            )
        log.info("round %d/%d done", r + 1, args.rounds)
    for m in models.values():
        for kind in ("fp32", "int8"):
            if kind in m:
                m[kind]["img_per_s_median"] = round(float(np.median(m[kind]["rates"])), 1)
                m[kind]["img_per_s_max"] = max(m[kind]["rates"])
    results = {
        "what": "ONNX Runtime, 1 intra-op thread, batch 8, preprocessed photos at each "
        "backbone's native size; median (and best) of the rounds, round-robin over backbones",
        "photos": f"{len(files)} from {args.images}",
        "rounds": args.rounds,
        "batch": args.batch,
        "models": models,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average at the end {os.getloadavg()[0]:.1f} (shared with other processes)",
        "onnxruntime": __import__("onnxruntime").__version__,
    }
    write(results, args.tag)
    return results


def write(results: dict[str, Any], tag: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"backbone_cost{'_' + tag if tag else ''}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    base = results["models"].get("efficientnet_lite0", {}).get("fp32", {}).get("img_per_s_median")
    lines = [
        "# Scoring cost per backbone (ONNX Runtime, 1 thread, batch 8)",
        "",
        f"{results['what']}. Photos: {results['photos']}; {results['rounds']} rounds.",
        "",
        "| backbone | input px | params (M) | GMACs | FP32 MB | FP32 img/s median (best) "
        "| vs Lite0 | INT8 MB | INT8 img/s median (best) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results["models"].items():
        f, q = m["fp32"], m.get("int8")
        ratio = f"{f['img_per_s_median'] / base:.2f}x" if base else "-"
        int8 = (
            f"| {q['onnx_mb']} | {q['img_per_s_median']} ({q['img_per_s_max']}) |"
            if q
            else "| - | - |"
        )
        lines.append(
            f"| {name} | {m['size_px']} | {m['params_millions']} | {m.get('gmacs', '-')} "
            f"| {f['onnx_mb']} "
            f"| {f['img_per_s_median']} ({f['img_per_s_max']}) | {ratio} {int8}"
        )
    weights = {n: m["weights"] for n, m in results["models"].items()}
    lines += ["", f"Weights: {json.dumps(weights)}", "", f"Machine: {results['machine']}; "
              f"onnxruntime {results['onnxruntime']}.", ""]  # fmt: skip
    stem.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main(get_args_parser().parse_args())
