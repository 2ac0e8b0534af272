"""Fine-tuning benchmark on ph-snakes: linear probe vs stage 1 vs both stages, FP32 vs INT8.

    nice -n 10 .venv/bin/python benchmarks/train_ph_snakes.py \
        [--data /work/shared/data/ph-snakes] [--work /tmp/herpscore-bench/ph-snakes]

The photos are never copied: the deduplicated view is a tree of symlinks under --work.
Train and val are merged, exact duplicates (sha256) are collapsed, and a stratified 15 %
validation split (seed 0) is carved out; val drives early stopping and calibration.
Test images whose sha256 also occurs in train/val are removed before evaluation.
Results go to benchmarks/results/train_ph_snakes.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.recipes_table import paired_file  # noqa: E402
from service.imaging import InputSpec  # noqa: E402
from service.settings import DEFAULT_EXTENSIONS  # noqa: E402
from training import export  # noqa: E402
from training.data import (  # noqa: E402
    AUGMENTS,
    SafeImageFolder,
    Sample,
    discover_classes,
    eval_loader,
    eval_transform,
    scan_split,
    stratified_split,
)
from training.runtime import tune_malloc  # noqa: E402

log = logging.getLogger("bench")
RESULTS = ROOT / "benchmarks" / "results"
SIZE = 224


def probe_spec(size: int = SIZE) -> InputSpec:
    """The probe's preprocessing, as the issue's reference probe: squash, mean/std 0.5."""
    return InputSpec(size=size, resize="squash", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/ph-snakes"))
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="scratch folder (default /tmp/herpscore-bench/ph-snakes, or ph-snakes-wWIDTH "
        "with --downscale)",
    )
    parser.add_argument(
        "--downscale",
        type=int,
        default=0,
        metavar="WIDTH",
        help="run on a copy of the view with every photo at most WIDTH px wide, in WORK/view "
        "(outside the repo; benchmarks/downscale.py), same split as the full-size set: the "
        "small-photo set of issue 17",
    )
    parser.add_argument(
        "--backbone",
        default="efficientnet_lite0",
        help="fine-tuned backbone (the probe (a) stays Lite0)",
    )
    parser.add_argument("--stage1", choices=["epochs", "probe"], default="epochs")
    parser.add_argument(
        "--size", type=int, default=SIZE, help="fine-tuning input side (the probe stays at 224)"
    )
    parser.add_argument("--epochs-stage1", type=int, default=6)
    parser.add_argument("--epochs-stage2", type=int, default=10)
    parser.add_argument("--unfreeze", default="last-k:3")
    parser.add_argument("--lr-stage1", type=float, default=3e-3)
    parser.add_argument("--lr-stage2", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--min-scale", type=float, default=0.5)
    parser.add_argument("--weight-decay", type=float, default=0.02)
    parser.add_argument("--ema-decay", type=float, default=0.0)
    parser.add_argument("--mix", type=float, default=0.0)
    parser.add_argument("--bn-stats", choices=["update", "frozen"], default="update")
    parser.add_argument("--augment", choices=AUGMENTS, default="jitter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--refit",
        action="store_true",
        help="(c) is then refitted on train + val for the epochs its run kept (fit --refit)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads: on a shared 2-core machine 1 thread was 10x faster than 2",
    )
    parser.add_argument("--tag", default="", help="suffix for the results files")
    parser.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--no-int8: build no INT8 model and skip the FP32/INT8 ONNX measures (saves "
        "minutes on a busy machine; accuracy is unaffected)",
    )
    parser.add_argument(
        "--folds",
        type=int,
        default=0,
        help="cross-validation: pool every distinct image (train, val and test), test on "
        "fold --fold of this many stratified folds, train on the rest (15 %% of it val); "
        "skips the 224 px probe and the INT8 measures",
    )
    parser.add_argument("--fold", type=int, default=0, help="which fold is the test set")
    parser.add_argument(
        "--pool-folds",
        metavar="TAG",
        help="only pool the paired (b)-(c) results of the runs tagged TAG_fold0ofK ... "
        "(K from --folds) into results/train_ph_snakes_TAG_cv.{json,md}",
    )
    parser.add_argument(
        "--paired-only",
        action="store_true",
        help="only add the paired test of (b) against (c) to the results of the run --tag "
        "names (its model folders must still be in --work)",
    )
    parser.add_argument(
        "--pair",
        nargs=2,
        metavar="STEM",
        help="only pair two earlier runs on their stored per-image test hits: results file "
        "stems (e.g. train_ph_snakes_w128_best), optionally STEM:stage1 -> "
        "results/paired_STEM1_vs_STEM2.json",
    )
    parser.add_argument(
        "--probe-only",
        action="store_true",
        help="only the linear probe at --size -> results/train_ph_snakes_probe<size>.json",
    )
    return parser


def fold_split(samples: list[Sample], folds: int, fold: int) -> tuple[list[Sample], list[Sample]]:
    """(rest, test): fold `fold` of `folds` stratified folds (seed 0) of distinct images."""
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    rest, test = list(splitter.split(samples, [s.label for s in samples]))[fold]
    return [samples[i] for i in rest], [samples[i] for i in test]


def build_view(source: Path, view: Path, folds: int = 0, fold: int = 0) -> dict[str, Any]:
    """Symlink a leak-free train/val/test tree; returns what was dropped and why.

    With `folds`, every distinct image of train, val and test is pooled and fold `fold`
    of a stratified k-fold split is the test set. The split is deterministic, so an
    existing view (with its summary) is reused.
    """
    summary_path = view.with_suffix(".json")
    if view.is_dir() and summary_path.is_file():
        return dict(json.loads(summary_path.read_text()))
    classes = discover_classes(source)
    splits = {s: scan_split(source / s, classes, DEFAULT_EXTENSIONS) for s in ("train", "val")}
    test = scan_split(source / "test", classes, DEFAULT_EXTENSIONS)
    pool: dict[str, Sample] = {}
    for sample in splits["train"] + splits["val"] + (test if folds else []):
        pool.setdefault(sample.sha256, sample)
    merged = list(pool.values())
    seen_test: set[str] = set()
    clean_test: list[Sample] = []
    if folds:
        merged, clean_test = fold_split(merged, folds, fold)
    else:
        for sample in test:
            if sample.sha256 not in pool and sample.sha256 not in seen_test:
                clean_test.append(sample)
            seen_test.add(sample.sha256)
    train, val = stratified_split(merged, 0.15, seed=0)
    if view.exists():
        shutil.rmtree(view)
    for split, samples in (("train", train), ("val", val), ("test", clean_test)):
        for sample in samples:
            folder = view / split / classes[sample.label]
            folder.mkdir(parents=True, exist_ok=True)
            (folder / sample.path.name).symlink_to(sample.path)
    summary: dict[str, Any] = {
        "classes": len(classes),
        "source_images": {
            "train+val": len(splits["train"]) + len(splits["val"]),
            "test": len(test),
        },
        "duplicates_collapsed_in_train_val": len(splits["train"])
        + len(splits["val"])
        - len(merged),
        "test_removed_as_leaks_or_duplicates": len(test) - len(clean_test),
        "used": {"train": len(train), "val": len(val), "test": len(clean_test)},
    }
    if folds:  # the test folder was pooled too: count duplicates over all three splits
        del summary["duplicates_collapsed_in_train_val"]
        del summary["test_removed_as_leaks_or_duplicates"]
        summary["distinct_images_pooled"] = len(pool)
        summary["duplicates_collapsed"] = len(splits["train"]) + len(splits["val"]) + len(test)
        summary["duplicates_collapsed"] -= len(pool)
        summary["cross_validation"] = {"folds": folds, "test_fold": fold}
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def linear_probe(view: Path, classes: list[str], size: int = SIZE) -> dict[str, Any]:
    """Logistic regression on frozen ImageNet EfficientNet-Lite0 features (squash, 0.5)."""
    spec = probe_spec(size)
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from training.backbones import imagenet_lite

    started = time.monotonic()
    model: Any
    model, _ = imagenet_lite("efficientnet_lite0")
    model.reset_classifier(0)
    model.eval()
    features, labels = {}, {}
    for split in ("train", "val", "test"):
        samples = scan_split(view / split, classes, DEFAULT_EXTENSIONS)
        dataset = SafeImageFolder(
            samples, classes, eval_loader(spec), eval_transform(spec), name=f"probe {split}"
        )
        with torch.no_grad():
            batches = [
                model(torch.stack([dataset[j][0] for j in range(i, min(i + 16, len(dataset)))]))
                for i in range(0, len(dataset), 16)
            ]
        features[split] = torch.cat(batches).numpy()
        labels[split] = np.asarray(dataset.targets)
    best: tuple[float, float] = (-1.0, 1.0)
    for c in (0.01, 0.03, 0.1, 0.3, 1.0):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        clf.fit(features["train"], labels["train"])
        acc = float((clf.predict(features["val"]) == labels["val"]).mean())
        best = max(best, (acc, c))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=best[1], max_iter=3000))
    clf.fit(features["train"], labels["train"])
    predicted = clf.predict(features["test"])
    # The same C refitted on train + val (1183 images): more data than any fit here sees.
    pooled = make_pipeline(StandardScaler(), LogisticRegression(C=best[1], max_iter=3000))
    pooled.fit(
        np.concatenate([features["train"], features["val"]]),
        np.concatenate([labels["train"], labels["val"]]),
    )
    pooled_predicted = pooled.predict(features["test"])
    return {
        "C_chosen_on_val": best[1],
        "val_top1": best[0],
        "test_top1": float((predicted == labels["test"]).mean()),
        "test_macro_f1": float(f1_score(labels["test"], predicted, average="macro")),
        "train_plus_val": {
            "test_top1": float((pooled_predicted == labels["test"]).mean()),
            "test_macro_f1": float(f1_score(labels["test"], pooled_predicted, average="macro")),
        },
        "seconds": round(time.monotonic() - started, 1),
    }


def run_fit(args: argparse.Namespace, out: Path, epochs2: int, resume: Path | None) -> float:
    """`python -m training fit` in a subprocess; returns its wall-clock seconds."""
    cmd = [
        sys.executable,
        "-m",
        "training",
        "fit",
        "--data",
        str(args.work / "view"),
        "--out",
        str(out),
        "--backbone",
        args.backbone,
        "--size",
        str(args.size),
        "--resize",
        "squash",
        "--stage1",
        args.stage1,
        "--epochs-stage1",
        str(args.epochs_stage1),
        "--epochs-stage2",
        str(epochs2),
        "--unfreeze",
        args.unfreeze,
        "--lr-stage1",
        str(args.lr_stage1),
        "--lr-stage2",
        str(args.lr_stage2),
        "--batch-size",
        str(args.batch_size),
        "--patience",
        "3",
        "--threads",
        str(args.threads),
        "--min-scale",
        str(args.min_scale),
        "--weight-decay",
        str(args.weight_decay),
        "--ema-decay",
        str(args.ema_decay),
        "--mix",
        str(args.mix),
        "--bn-stats",
        args.bn_stats,
        "--augment",
        args.augment,
        "--seed",
        str(args.seed),
    ]
    if epochs2 == 0 or not args.int8:
        cmd.append("--no-int8")
    if epochs2 and args.refit:
        cmd.append("--refit")
    if resume is not None:
        cmd += ["--resume", str(resume)]
    log.info("running %s", " ".join(cmd))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    started = time.monotonic()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return time.monotonic() - started


def served_test_set(
    model_dir: Path, view: Path, classes: list[str]
) -> tuple[InputSpec, np.ndarray, np.ndarray]:
    """The test images as the model folder's preprocessing serves them: (spec, inputs, labels)."""
    spec = InputSpec.from_metadata(json.loads((model_dir / "metadata.json").read_text()))
    test = SafeImageFolder(
        scan_split(view / "test", classes, DEFAULT_EXTENSIONS),
        classes,
        eval_loader(spec),
        eval_transform(spec),
        name=f"test ({model_dir.parent.name})",
    )
    inputs = np.stack([test[i][0].numpy() for i in range(len(test))])
    return spec, inputs, np.asarray(test.targets)


def onnx_measures(model_dir: Path, view: Path, classes: list[str], work: Path) -> dict[str, Any]:
    """FP32 vs INT8 on the deduplicated test set: accuracy, size and 1-thread ORT speed."""
    spec, inputs, labels = served_test_set(model_dir, view, classes)
    int8 = model_dir / "model.int8.onnx"
    rejected = work / f"{model_dir.parent.name}.int8.rejected.onnx"
    metadata = json.loads((model_dir / "metadata.json").read_text())
    if not int8.is_file():  # rejected by the fit's rule: measure it anyway, from the work folder
        int8 = rejected
        train = SafeImageFolder(
            scan_split(view / "train", classes, DEFAULT_EXTENSIONS)[::8],
            classes,
            eval_loader(spec),
            eval_transform(spec),
            name="int8 calibration",
        )
        calibration = np.stack([train[i][0].numpy() for i in range(len(train))])
        export.quantize_int8(model_dir / "model.onnx", int8, calibration)
    result: dict[str, Any] = {"int8_decision_in_fit": metadata.get("int8")}
    for name, path in (("fp32", model_dir / "model.onnx"), ("int8", int8)):
        logits = export.ort_logits(path, inputs)
        result[name] = {
            "test_top1": float((logits.argmax(1) == labels).mean()),
            "size_mb": round(path.stat().st_size / 1e6, 2),
            "img_per_s_1thread_batch8": speed(path, inputs[:64]),
        }
    return result


def speed(path: Path, inputs: np.ndarray, batch: int = 8, rounds: int = 5) -> float:
    """Median images/s of ONNX Runtime with one thread on batches of 8 (after a warm-up)."""
    session = export.ort_session(path, threads=1)
    name = session.get_inputs()[0].name
    batches = [inputs[i : i + batch] for i in range(0, len(inputs) - batch + 1, batch)]
    session.run(None, {name: batches[0]})
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for b in batches:
            session.run(None, {name: b})
        rates.append(len(batches) * batch / (time.perf_counter() - started))
    return round(float(np.median(rates)), 1)


def correct_on_test(model_dir: Path, view: Path, classes: list[str]) -> np.ndarray:
    """Per test image (in scan order): did the model folder's ONNX model get it right?"""
    _, inputs, labels = served_test_set(model_dir, view, classes)
    return np.asarray(export.ort_logits(model_dir / "model.onnx", inputs).argmax(1) == labels)


def paired_comparison(first: Path, second: Path, view: Path, classes: list[str]) -> dict[str, Any]:
    """Two model folders on the same test images (see `paired_counts`)."""
    return paired_counts(
        correct_on_test(first, view, classes), correct_on_test(second, view, classes)
    )


def paired_counts(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Two models' per-image hits on the same test images: how many each alone got right,
    and McNemar's exact test (a two-sided binomial test on those discordant images). 206
    test images give a single accuracy a standard error of about 3 points; pairing removes
    the images both get right or both get wrong, so a smaller difference can show."""
    from scipy.stats import binomtest

    only_first, only_second = int((a & ~b).sum()), int((~a & b).sum())
    discordant = only_first + only_second
    p_value = binomtest(only_second, discordant).pvalue if discordant else 1.0
    return {
        "images": len(a),
        "both_right": int((a & b).sum()),
        "only_first_right": only_first,
        "only_second_right": only_second,
        "both_wrong": int((~a & ~b).sum()),
        "first_top1": float(a.mean()),
        "second_top1": float(b.mean()),
        "mcnemar_exact_p": float(p_value),
    }


def hits_string(correct: np.ndarray) -> str:
    """Per-image hits as '0'/'1', in the test folder's scan order (the same order on the
    full-size and the downscaled set): kept in the results so that two runs can be paired
    after their model folders (in /tmp) are gone."""
    return "".join("1" if c else "0" for c in correct)


def pair_stored_runs(first: str, second: str) -> dict[str, Any]:
    """McNemar on two results files' stored hits: STEM or STEM:PART (PART one of
    both_stages, the default, and stage1), STEM the file name without .json ->
    results/paired_STEM1_vs_STEM2.json."""
    hits = []
    for name in (first, second):
        stem, _, part = name.partition(":")
        model = json.loads((RESULTS / f"{stem}.json").read_text())[part or "both_stages"]
        if "test_correct" not in model:
            raise SystemExit(f"{stem}.json has no per-image hits (run before they were kept)")
        hits.append(np.asarray([c == "1" for c in model["test_correct"]]))
    if len(hits[0]) != len(hits[1]):
        raise SystemExit("the two runs were tested on different numbers of images")
    paired = paired_counts(hits[0], hits[1]) | {"first": first, "second": second}
    paired_file(first, second, RESULTS).write_text(json.dumps(paired, indent=2) + "\n")
    log.info("paired: %s", json.dumps(paired))
    return paired


def summary_of(run: Path) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text())
    cal = metrics["calibration"]
    refit = {}
    if metrics.get("refit"):  # test is the refitted model's; val the selection run's
        selection = json.loads((run / "metrics_selection.json").read_text())
        refit = {
            "refit": metrics["refit"],
            "selection_run": {
                "test_top1": selection["test"]["top1"],
                "test_macro_f1": selection["test"]["macro"]["f1"],
                "ece_test_after": selection["calibration"]["test"]["ece_after"],
            },
        }
    return (
        refit
        | fit_gap(run)
        | {
            "test_top1": metrics["test"]["top1"],
            "test_top3": metrics["test"]["top3"],
            "test_macro_f1": metrics["test"]["macro"]["f1"],
            "val_top1": metrics["val"]["top1"],
            "temperature": cal["temperature"],
            "ece_test_before": cal["test"]["ece_before"],
            "ece_test_after": cal["test"]["ece_after"],
            "ece_val_before": cal["val"]["ece_before"] if "val" in cal else None,
            "ece_val_after": cal["val"]["ece_after"] if "val" in cal else None,
            "epochs_run": json.loads((run / "model" / "metadata.json").read_text())["training"][
                "epochs_run"
            ],
        }
    )


def fit_gap(run: Path) -> dict[str, Any]:
    """Train against val accuracy at the last epoch of the run (and the best val): the
    overfitting gap. Train accuracy is on augmented images, as the epoch saw them."""
    path = run / "run" / "metrics.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("train_acc") and r.get("val_acc")]
    if not rows:
        return {}
    last = rows[-1]
    return {
        "last_epoch": {"stage": int(last["stage"]), "epoch": int(last["epoch"])},
        "train_acc_last": round(float(last["train_acc"]), 4),
        "val_acc_last": round(float(last["val_acc"]), 4),
        "val_acc_best": round(max(float(r["val_acc"]) for r in rows), 4),
    }


def write_markdown(results: dict[str, Any], path: Path) -> None:
    p, s1, s2, onnx = (results[k] for k in ("linear_probe", "stage1", "both_stages", "onnx"))
    probe_rows = (
        []
        if p is None
        else [
            (
                "(a) linear probe, frozen Lite0 features",
                p["test_top1"],
                p["test_macro_f1"],
                "-",
                "-",
                p["seconds"],
            ),
            (
                "(a') the same probe refitted on train + val",
                p["train_plus_val"]["test_top1"],
                p["train_plus_val"]["test_macro_f1"],
                "-",
                "-",
                "-",
            ),
        ]
    )
    rows = [
        *probe_rows,
        (
            "(b) stage 1 only (head)",
            s1["test_top1"],
            s1["test_macro_f1"],
            s1["ece_test_before"],
            s1["ece_test_after"],
            s1["seconds"],
        ),
        *(
            [
                (
                    "(c) stage 1 + stage 2, run that chose the epochs (train only)",
                    s2["selection_run"]["test_top1"],
                    s2["selection_run"]["test_macro_f1"],
                    "-",
                    s2["selection_run"]["ece_test_after"],
                    "-",
                )
            ]
            if "selection_run" in s2
            else []
        ),
        (
            "(c) stage 1 + stage 2" + (", refitted on train + val" if "refit" in s2 else ""),
            s2["test_top1"],
            s2["test_macro_f1"],
            s2["ece_test_before"],
            s2["ece_test_after"],
            s2["seconds"],
        ),
    ]
    lines = [
        "# ph-snakes fine-tuning benchmark",
        "",
        f"Data: {json.dumps(results['data'])}",
        "",
        f"Settings: {json.dumps(results['settings'])}",
        "",
        "| model | test top-1 | test macro-F1 | ECE before T | ECE after T | wall-clock s |",
        "|---|---|---|---|---|---|",
    ]
    for name, top1, f1, before, after, secs in rows:
        fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
        lines.append(f"| {name} | {top1:.1%} | {f1:.3f} | {fmt(before)} | {fmt(after)} | {secs} |")
    if onnx:
        lines += [
            "",
            "| ONNX (model c) | test top-1 | size MB | img/s (ORT, 1 thread, batch 8) |",
            "|---|---|---|---|",
        ]
        for name in ("fp32", "int8"):
            o = onnx[name]
            lines.append(
                f"| {name} | {o['test_top1']:.1%} | {o['size_mb']} "
                f"| {o['img_per_s_1thread_batch8']} |"
            )
        lines += ["", f"INT8 decision in fit: {json.dumps(onnx['int8_decision_in_fit'])}"]
    lines.append("")
    if "paired_stage1_vs_both" in results:
        pair = results["paired_stage1_vs_both"]
        lines += [
            f"Paired on the {pair['images']} test images, (b) against (c): both right "
            f"{pair['both_right']}, only (b) {pair['only_first_right']}, only (c) "
            f"{pair['only_second_right']}, both wrong {pair['both_wrong']}; McNemar exact "
            f"p = {pair['mcnemar_exact_p']:.3g}.",
            "",
        ]
    for name, run in (("(b)", s1), ("(c)", s2)):
        if "train_acc_last" in run:
            lines.append(
                f"{name} last epoch (stage {run['last_epoch']['stage']}, epoch "
                f"{run['last_epoch']['epoch']}): train accuracy {run['train_acc_last']:.1%} "
                f"(augmented), val {run['val_acc_last']:.1%}; best val {run['val_acc_best']:.1%}."
            )
    lines += ["", f"Machine: {results['machine']}; total wall-clock {results['total_seconds']} s"]
    path.write_text("\n".join(lines) + "\n")


def pool_folds(tag: str, folds: int) -> dict[str, Any]:
    """Pool k folds' paired (b)-(c) counts: every distinct image is tested exactly once, by
    models that never saw it, so the discordant counts add up to one McNemar test."""
    from scipy.stats import binomtest

    runs = [
        json.loads((RESULTS / f"train_ph_snakes_{tag}_fold{i}of{folds}.json").read_text())
        for i in range(folds)
    ]
    keys = ("images", "both_right", "only_first_right", "only_second_right", "both_wrong")
    total = {k: sum(r["paired_stage1_vs_both"][k] for r in runs) for k in keys}
    discordant = total["only_first_right"] + total["only_second_right"]
    pooled: dict[str, Any] = {
        "folds": folds,
        "settings": runs[0]["settings"],
        "per_fold": [
            {
                "test_images": r["paired_stage1_vs_both"]["images"],
                "stage1_probe_top1": r["stage1"]["test_top1"],
                "both_top1": r["both_stages"]["test_top1"],
                "stage1_probe_macro_f1": r["stage1"]["test_macro_f1"],
                "both_macro_f1": r["both_stages"]["test_macro_f1"],
                "seconds": r["both_stages"]["seconds"],
            }
            for r in runs
        ],
        "pooled": total
        | {
            "stage1_probe_top1": (total["both_right"] + total["only_first_right"])
            / total["images"],
            "both_top1": (total["both_right"] + total["only_second_right"]) / total["images"],
            "mcnemar_exact_p": binomtest(total["only_second_right"], discordant).pvalue
            if discordant
            else 1.0,
        },
    }
    q = pooled["pooled"]
    lines = [
        f"# ph-snakes, {folds}-fold cross-validation: linear probe (b) against both stages (c)",
        "",
        f"Settings: {json.dumps(pooled['settings'])}",
        "",
        "| fold | test images | (b) probe top-1 | (c) both top-1 | (b) macro-F1 | (c) macro-F1 |",
        "|---|---|---|---|---|---|",
        *(
            f"| {i} | {f['test_images']} | {f['stage1_probe_top1']:.1%} | {f['both_top1']:.1%} "
            f"| {f['stage1_probe_macro_f1']:.3f} | {f['both_macro_f1']:.3f} |"
            for i, f in enumerate(pooled["per_fold"])
        ),
        "",
        f"Pooled over the {q['images']} images: (b) {q['stage1_probe_top1']:.1%}, (c) "
        f"{q['both_top1']:.1%}; only (b) right {q['only_first_right']}, only (c) right "
        f"{q['only_second_right']}; McNemar exact p = {q['mcnemar_exact_p']:.3g}.",
        "",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"train_ph_snakes_{tag}_cv"
    stem.with_suffix(".json").write_text(json.dumps(pooled, indent=2) + "\n")
    stem.with_suffix(".md").write_text("\n".join(lines))
    log.info("pooled: %s", json.dumps(pooled["pooled"]))
    return pooled


def main(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    tune_malloc()
    torch.set_num_threads(args.threads)
    if args.work is None:
        name = f"ph-snakes-w{args.downscale}" if args.downscale else "ph-snakes"
        args.work = Path("/tmp/herpscore-bench") / name
    args.work.mkdir(parents=True, exist_ok=True)
    if args.pool_folds:
        return pool_folds(args.pool_folds, args.folds)
    if args.pair:
        return pair_stored_runs(*args.pair)
    if args.downscale:  # the split, deduplication and leak removal are the full-size set's
        from benchmarks.downscale import downscale_tree

        data = build_view(args.data, args.work / "view-full", args.folds, args.fold)
        downscale_tree(args.work / "view-full", args.work / "view", args.downscale)
        data["downscaled_to_width"] = args.downscale
    else:
        data = build_view(args.data, args.work / "view", args.folds, args.fold)
    log.info("view: %s", data)
    classes = discover_classes(args.work / "view")
    if args.probe_only:  # is a gain from the fine-tune's input size, or from fine-tuning?
        probe_at_size = linear_probe(args.work / "view", classes, args.size) | {"size": args.size}
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / f"train_ph_snakes_probe{args.size}{'_' + args.tag if args.tag else ''}.json"
        out.write_text(json.dumps(probe_at_size, indent=2) + "\n")
        log.info("probe at %d px: %s", args.size, probe_at_size)
        return probe_at_size
    tag = f"{args.tag}_fold{args.fold}of{args.folds}" if args.folds else args.tag
    suffix = f"_{tag}" if tag else ""
    stage1_dir, both_dir = args.work / f"stage1{suffix}", args.work / f"both{suffix}"
    if args.paired_only:
        earlier = RESULTS / f"train_ph_snakes{suffix}"
        results = json.loads(earlier.with_suffix(".json").read_text())
        results["paired_stage1_vs_both"] = paired_comparison(
            stage1_dir / "model", both_dir / "model", args.work / "view", classes
        )
        earlier.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        write_markdown(results, earlier.with_suffix(".md"))
        log.info("paired: %s", results["paired_stage1_vs_both"])
        return results
    probe_path = args.work / "probe.json"  # the probe does not depend on the fit settings
    if args.folds:  # (b) with --stage1 probe is the probe to beat, at the same size
        probe = None
    elif probe_path.is_file() and "train_plus_val" in json.loads(probe_path.read_text()):
        probe = json.loads(probe_path.read_text())
    else:
        probe = linear_probe(args.work / "view", classes)
        probe_path.write_text(json.dumps(probe, indent=2) + "\n")
    log.info("linear probe: %s", probe)
    for folder in (stage1_dir, both_dir):
        shutil.rmtree(folder, ignore_errors=True)
    seconds1 = run_fit(args, stage1_dir, 0, None)
    stage1 = summary_of(stage1_dir) | {"seconds": round(seconds1, 1)}
    # Stage 2 continues from stage 1's final checkpoint, so (c) = (b) + stage 2.
    (both_dir / "run").mkdir(parents=True)
    shutil.copy(stage1_dir / "run" / "last.pth", both_dir / "run" / "stage1.pth")
    seconds2 = run_fit(args, both_dir, args.epochs_stage2, both_dir / "run" / "stage1.pth")
    both = summary_of(both_dir) | {"seconds": round(seconds1 + seconds2, 1)}
    hits1, hits2 = (
        correct_on_test(d / "model", args.work / "view", classes) for d in (stage1_dir, both_dir)
    )
    stage1["test_correct"], both["test_correct"] = hits_string(hits1), hits_string(hits2)
    results = {
        "data": data,
        "settings": {k: str(v) for k, v in vars(args).items()},
        "linear_probe": probe,
        "stage1": stage1,
        "both_stages": both,
        "onnx": None
        if args.folds or not args.int8
        else onnx_measures(both_dir / "model", args.work / "view", classes, args.work),
        "paired_stage1_vs_both": paired_counts(hits1, hits2),
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "total_seconds": round(time.monotonic() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"train_ph_snakes{suffix}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, RESULTS / f"{stem}.md")
    log.info("results: %s", json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main(get_args_parser().parse_args())
