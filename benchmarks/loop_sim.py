"""The review loop's value, measured: label rounds in the queue's order against random ones.

    nice -n 10 .venv/bin/python benchmarks/loop_sim.py prepare --seeds 0 1
    nice -n 10 .venv/bin/python benchmarks/loop_sim.py run --seed 0 --strategy queue
    nice -n 10 .venv/bin/python benchmarks/loop_sim.py run --seed 0 --strategy random
    nice -n 10 .venv/bin/python benchmarks/loop_sim.py reference
    .venv/bin/python benchmarks/loop_sim.py report   # -> results/loop_sim.{json,md} + PNG

On ph-snakes (train + val is the unlabelled pool, test is fixed): round 0 is a model
trained on a few labels per species; each round scores the pool with the active model
through a real worker, an oracle reviewer (the photo's folder name) labels 100 items
through the review API, either in the order the queue serves them or at random, then
`retrain --force` exports, trains and lets the promotion gate decide. Every round records
the active model's test top-1 and macro-F1. The reference trains on every pool label with
the same recipe. The photos are copied once into --work (the originals are read-only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loop_stack import Stack, folder_oracle, score_on_test  # noqa: E402
from service import retraining  # noqa: E402
from service.routing import QUEUE_ORDERS  # noqa: E402
from service.settings import DEFAULT_EXTENSIONS, Settings  # noqa: E402

log = logging.getLogger("loop_sim")
RESULTS = ROOT / "benchmarks" / "results"
PLOT = ROOT / "docs" / "experiments" / "loop.png"
STRATEGIES = ("queue", "random")
# Orders the queue could serve, tried in the simulation by picking items by id.
ALTERNATIVES = ("margin", "entropy", "balanced")
# The fast recipe: a linear probe on frozen EfficientNet-Lite0 features at 224 px, no
# stage 2, no INT8; on 2 shared cores a retrain takes about a minute. `--refit` fits the
# probe again on train + val with the L2 strength chosen on val: a small labelled set
# does not lose 15 % of its labels to validation.
FAST_RECIPE: dict[str, Any] = {
    "training_backbone": "efficientnet_lite0",
    "training_weights": "default",
    "training_size": 224,
    "training_epochs_stage1": 1,
    "training_epochs_stage2": 0,
    "training_batch_size": 32,
    "training_min_per_class": 1,
    "training_int8": False,
    "training_extra_args": "--stage1 probe --refit --resize squash --threads 1 --parity-images 8",
}


# ---------------------------------------------------------------- the data


def species_label(folder: str) -> str:
    """A class label from a messy species folder name: the binomial in brackets if any.

    'Philippine Cobra (Naja philippinensis)' -> 'Naja_philippinensis'; spacing and case of
    the folder name do not matter.
    """
    text = " ".join(folder.split())
    match = re.search(r"\(([^()]+)\)\s*$", text)
    name = (match.group(1) if match else text).strip()
    words = name.split()
    if not words:
        raise ValueError(f"no label in folder name {folder!r}")
    return "_".join([words[0].capitalize(), *(w.lower() for w in words[1:])])


def scan_split(folder: Path) -> list[tuple[Path, str, str]]:
    """(path, sha256, label) of every photo under folder/<species>/."""
    found = []
    for species in sorted(p for p in folder.iterdir() if p.is_dir()):
        label = species_label(species.name)
        for path in sorted(species.rglob("*")):
            if path.is_file() and path.suffix.lower().lstrip(".") in DEFAULT_EXTENSIONS:
                found.append((path, hashlib.sha256(path.read_bytes()).hexdigest(), label))
    return found


def prepare_photos(data: Path, work: Path) -> dict[str, Any]:
    """Copy the pool (train + val) and the test photos into work/photos, deduplicated.

    Exact duplicates (sha256) are kept once; pool photos that duplicate a test photo are
    dropped from the pool (the test split stays whole). Layout: photos/survey/pool/<label>/
    (one site, so exports split image by image) and photos/evalset/<label>/.
    """
    summary_path = work / "photos.json"
    if summary_path.is_file():
        return dict(json.loads(summary_path.read_text()))
    test = scan_split(data / "test")
    pool_rows = scan_split(data / "train") + scan_split(data / "val")
    test_sha = {sha for _, sha, _ in test}
    labels_of: dict[str, set[str]] = defaultdict(set)
    for _, sha, label in [*pool_rows, *test]:
        labels_of[sha].add(label)
    conflicting = {sha for sha, labels in labels_of.items() if len(labels) > 1}
    photos = work / "photos"
    if photos.exists():
        shutil.rmtree(photos)
    kept: dict[str, list[dict[str, str]]] = {"pool": [], "test": []}
    seen: set[str] = set()
    dropped = {"duplicate": 0, "in_test": 0, "conflicting_labels": 0}
    for name, rows, folder in (
        ("test", test, photos / "evalset"),
        ("pool", pool_rows, photos / "survey" / "pool"),
    ):
        for path, sha, label in rows:
            if sha in conflicting:
                dropped["conflicting_labels"] += 1
                continue
            if sha in seen:
                dropped["in_test" if sha in test_sha and name == "pool" else "duplicate"] += 1
                continue
            seen.add(sha)
            target = folder / label / f"{sha[:10]}{path.suffix.lower()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            kept[name].append(
                {"path": str(target.relative_to(folder)), "sha256": sha, "label": label}
            )
    summary = {
        "source": str(data),
        "pool": len(kept["pool"]),
        "test": len(kept["test"]),
        "classes": len({r["label"] for r in kept["pool"]}),
        "dropped": dropped,
        "items": kept,
    }
    summary_path.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def seed_labels(pool: list[dict[str, str]], per_class: int, seed: int) -> list[dict[str, str]]:
    """The round-0 labels: `per_class` photos of every species, drawn with `seed`."""
    by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in pool:
        by_label[row["label"]].append(row)
    rng = random.Random(seed)
    return [row for label in sorted(by_label) for row in rng.sample(by_label[label], per_class)]


# ---------------------------------------------------------------- training outside the loop


def recipe_settings(
    work: Path,
    name: str,
    recipe: dict[str, Any],
    seed: int,
    margin: float | None = None,
    review_order: str | None = None,
) -> Settings:
    """The settings of one simulated installation (embedded SQLite + filesystem broker)."""
    values = dict(recipe)
    values["training_extra_args"] = f"{recipe['training_extra_args']} --seed {seed}".strip()
    if margin is not None:
        values["promotion_recall_margin"] = margin
    if review_order is not None:
        values["review_order"] = review_order
    return Settings(
        data_dir=work / name,
        allowed_roots=[work / "photos"],
        auto_promote=True,
        export_min_per_class=1,
        export_val_fraction=0.15,
        export_test_fraction=0.0,  # the gate judges on the pinned test split
        retrain_min_new_labels=1,
        chunk_size=64,
        batch_size=16,
        **values,
    )


def fit_folder(settings: Settings, rows: list[dict[str, str]], work: Path, out: Path) -> Path:
    """`python -m training fit` with the loop's recipe on these photos; returns the model."""
    model = out / "model"
    if (model / "model.onnx").is_file():
        return model
    data = out / "data"
    if data.exists():
        shutil.rmtree(data)
    source = work / "photos" / "survey" / "pool"
    for row in rows:
        target = data / "train" / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source / row["path"])
    params = retraining.training_params(settings)
    argv = retraining.fit_argv(params, data, out / "run", resume=False)
    subprocess.run([sys.executable, "-m", "training", "fit", *argv], check=True, cwd=ROOT)
    shutil.copytree(out / "run" / "model", model)
    return model


def test_paths(work: Path, summary: dict[str, Any]) -> tuple[list[str], list[str]]:
    folder = work / "photos" / "evalset"
    rows = summary["items"]["test"]
    return [str(folder / r["path"]) for r in rows], [r["label"] for r in rows]


def headline(scores: dict[str, Any]) -> dict[str, float]:
    return {"top1": round(scores["accuracy"], 4), "macro_f1": round(scores["macro_f1"], 4)}


# ---------------------------------------------------------------- one simulated loop


def run_loop(args: argparse.Namespace, recipe: dict[str, Any]) -> dict[str, Any]:
    """Round 0, then `rounds` rounds of score -> review -> retrain -> gate, one strategy."""
    work: Path = args.work
    summary = prepare_photos(args.data, work)
    pool = summary["items"]["pool"]
    seed_rows = seed_labels(pool, args.seed_per_class, args.seed)
    settings = recipe_settings(work, "_", recipe, args.seed, args.recall_margin, args.review_order)
    strategy = args.strategy
    if strategy == "queue":  # named after the order the queue served
        strategy = f"queue-{settings.review_order}"
    name = args.name or f"seed{args.seed}-{strategy}"
    settings = settings.model_copy(update={"data_dir": work / name})
    if settings.data_path.exists():
        shutil.rmtree(settings.data_path)
    round0 = fit_folder(settings, seed_rows, work, work / f"round0-seed{args.seed}")
    paths, truth = test_paths(work, summary)
    rng = random.Random(1000 + args.seed)
    survey = work / "photos" / "survey"
    rounds: list[dict[str, Any]] = []
    started = time.monotonic()
    with Stack(settings, work / "logs" / f"{name}-worker.log", timeout=args.timeout) as stack:
        stack.pin_test_set(work / "photos" / "evalset", summary["items"]["test"])
        stack.add_model(round0, "round-0")
        scored_by: dict[int, int] = {}  # model version -> the job that scored the pool with it
        spent = 0
        scores = headline(score_on_test(settings, round0, paths, truth))
        for number in range(args.rounds + 1):
            began = time.monotonic()
            active_id, _ = stack.active_model()
            if active_id not in scored_by:
                scored_by[active_id] = stack.score(survey)
            job_id = scored_by[active_id]
            if number == 0:  # the seed labels, on their items of the first job
                wanted = {str(survey / "pool" / r["path"]) for r in seed_rows}
                items = [i for i, p in stack.pending_items(job_id).items() if p in wanted]
                decided = stack.review_items(items, folder_oracle)
                row: dict[str, Any] = {"round": 0, "promoted": None, **scores}
            else:
                if args.strategy == "queue":
                    decided = stack.review_queue(job_id, args.per_round, folder_oracle)
                elif args.strategy == "random":
                    decided = stack.review_random(job_id, args.per_round, folder_oracle, rng)
                else:
                    decided = stack.review_ordered(
                        job_id, args.per_round, folder_oracle, args.strategy
                    )
                run = stack.retrain()
                gate = run["promotion"]
                active_scores = gate["candidate"] if gate["promoted"] else gate["active"]
                scores = headline(active_scores)
                row = {
                    "round": number,
                    "promoted": bool(gate["promoted"]),
                    **scores,
                    "candidate": headline(gate["candidate"]),
                    "gate": gate["reasons"],
                    "run_id": run["id"],
                    "export_splits": run["export_splits"],
                }
            spent += len(decided)
            corrections = sum(1 for a in decided if a["label"] != a["machine_label"])
            row.update(
                labels=spent,
                reviewed=len(decided),
                corrections=corrections,
                seconds=round(time.monotonic() - began, 1),
            )
            log.info("%s round %d: %s", name, number, row)
            rounds.append(row)
    result = {
        "seed": args.seed,
        "strategy": strategy,
        "review_order": settings.review_order,
        "pool": len(pool),
        "recall_margin": settings.promotion_recall_margin,
        "recall_alpha": settings.promotion_recall_alpha,
        "recall_correction": settings.promotion_recall_correction,
        "rounds": rounds,
        "seconds": round(time.monotonic() - started, 1),
    }
    out = work / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def run_reference(args: argparse.Namespace, recipe: dict[str, Any]) -> dict[str, Any]:
    """The same recipe on every pool label (train + val), scored on the same test photos."""
    summary = prepare_photos(args.data, args.work)
    settings = recipe_settings(args.work, "reference", recipe, args.seed)
    out = args.work / f"reference-seed{args.seed}"
    model = fit_folder(settings, summary["items"]["pool"], args.work, out)
    paths, truth = test_paths(args.work, summary)
    result = {
        "seed": args.seed,
        "labels": len(summary["items"]["pool"]),
        **headline(score_on_test(settings, model, paths, truth)),
    }
    target = args.work / "results" / f"reference-seed{args.seed}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")
    return result


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["prepare", "run", "reference", "report"])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/ph-snakes"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/herpscore-bench/loop-sim"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="for prepare")
    parser.add_argument("--strategy", choices=STRATEGIES + ALTERNATIVES, default="queue")
    parser.add_argument(
        "--name", help="the run's folder and results file (default seed<SEED>-<STRATEGY>)"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=100)
    parser.add_argument("--seed-per-class", type=int, default=5)
    parser.add_argument(
        "--recall-margin",
        type=float,
        default=None,
        help="the gate's per-class recall margin (HERPSCORE_PROMOTION_RECALL_MARGIN); "
        "default: the product's setting",
    )
    parser.add_argument(
        "--review-order",
        choices=QUEUE_ORDERS,
        help="the queue's order (HERPSCORE_REVIEW_ORDER); default: the product's setting",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="per job or training run")
    parser.add_argument(
        "--recipe", type=json.loads, default={}, help="JSON overrides of FAST_RECIPE's settings"
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for report")
    parser.add_argument("--plot", type=Path, default=PLOT, help="PNG written by report")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    recipe = {**FAST_RECIPE, **args.recipe}
    if args.command == "prepare":
        summary = prepare_photos(args.data, args.work)
        for seed in args.seeds:
            settings = recipe_settings(args.work, "prepare", recipe, seed)
            rows = seed_labels(summary["items"]["pool"], args.seed_per_class, seed)
            fit_folder(settings, rows, args.work, args.work / f"round0-seed{seed}")
        return {k: v for k, v in summary.items() if k != "items"}
    if args.command == "run":
        return run_loop(args, recipe)
    if args.command == "reference":
        return run_reference(args, recipe)
    from benchmarks.loop_report import write_report

    return write_report(args.work, args.results, args.plot, recipe, args)


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
