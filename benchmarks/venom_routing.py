"""Does a venomous snake ever pass review silently? Real photos through the real job path.

    [PH_SNAKES=DIR] PYTHONPATH=. python benchmarks/venom_routing.py MODEL_DIR \
        [--genera Naja Trimeresurus Tropidolaemus] [--threshold 0.6] [--alert 0.05]

The test photos (one folder per species, named as the model's labels are) are scored as
a job in a throwaway embedded installation: the species table marks every label of the
given genera medically significant, then the scan and the scoring run in this process
with the worker's own code (`run_model`, `store_results`, routing). Two checks:

- from the model's whole probability vector, recomputed here for every photo: every photo
  with a venomous species at or above the alert level, at any rank, has a review item
  (must be all of them);
- for the photos whose true species is venomous: how many were reviewed, and how many a
  top-1 threshold alone (the rule before venom routing) would have let through.

Writes benchmarks/results/venom_routing.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(os.environ.get("PH_SNAKES", "/work/shared/data/ph-snakes")) / "test"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("model", type=Path, help="a model folder whose labels are the folders")
    parser.add_argument("--data", type=Path, default=DATA, help="one folder per species")
    parser.add_argument("--genera", nargs="+", default=["Naja", "Trimeresurus", "Tropidolaemus"])
    parser.add_argument("--threshold", type=float, default=0.6, help="the job's threshold")
    parser.add_argument("--alert", type=float, default=0.05, help="HERPSCORE_VENOM_ALERT")
    parser.add_argument("--name", default="venom_routing", help="results file name")
    return parser


def copy_photos(data: Path, root: Path) -> dict[str, str]:
    """Copy the photos under root/survey/<species>/; returns {relative path: true label}."""
    truth = {}
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        for photo in sorted(folder.iterdir()):
            if photo.suffix.lower() in EXTENSIONS:
                target = root / "survey" / folder.name / photo.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(photo, target)
                truth[f"{folder.name}/{photo.name}"] = folder.name
    return truth


def main(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="herpscore-venom-"))
    os.environ.update(
        HERPSCORE_DATA_DIR=str(work / "data"),
        HERPSCORE_ALLOWED_ROOTS=str(work / "photos"),
        HERPSCORE_VENOM_ALERT=str(args.alert),
        HERPSCORE_REVIEW_THRESHOLD=str(args.threshold),
    )
    # Imported once the environment names this installation (workers read it at import).
    from sqlalchemy import select

    from service import species
    from service.db import session_scope
    from service.imaging import preprocess
    from service.jobs import create_job
    from service.migrate import upgrade
    from service.models import Image, JobImage, Prediction, ReviewItem
    from service.registry import activate_model, add_model
    from service.scanning import run_scan
    from service.scoring import score_chunk
    from service.settings import Settings
    from workers.engine import InferenceEngine
    from workers.tasks import run_model

    settings = Settings()
    settings.data_path.mkdir(parents=True, exist_ok=True)
    upgrade(settings.db_url)
    truth = copy_photos(args.data, work / "photos")
    began = time.perf_counter()
    with session_scope(settings.db_url) as session:
        model = add_model(session, settings, args.model)
        activate_model(session, model.id, reason="venom routing benchmark", actor="benchmark")
        venomous = set()
        for row in species.list_species(session):
            if row.genus in args.genera:
                species.save_species(session, row.label, medically_significant=True)
                venomous.add(row.label)
        job_id = create_job(session, settings, str(work / "photos" / "survey")).id
    chunks: list[int] = []
    run_scan(settings, job_id, chunks.extend)
    for chunk_id in chunks:
        score_chunk(settings, chunk_id, run_model)
    seconds = time.perf_counter() - began

    with session_scope(settings.db_url) as session:
        rows = session.execute(
            select(JobImage.rel_path, Image.path, Prediction.label, Prediction.confidence,
                   Prediction.topk, ReviewItem.id, ReviewItem.reason)
            .join(Image, Image.id == JobImage.image_id)
            .join(Prediction, Prediction.image_id == Image.id)
            .outerjoin(ReviewItem, ReviewItem.prediction_id == Prediction.id)
            .where(JobImage.job_id == job_id)
        ).all()  # fmt: skip
    engine = InferenceEngine(args.model)
    index = {label: i for i, label in enumerate(engine.labels)}
    missed_alerts, alerts, past_fifth, photos = [], 0, 0, []
    for rel_path, path, label, confidence, topk, item_id, reason in rows:
        probs = engine.probabilities(preprocess(path, engine.spec)[None])[0]
        peak = max((float(probs[index[v]]), v) for v in venomous)
        true = truth[rel_path]
        photos.append(
            {"path": rel_path, "true": true, "top1": label, "confidence": confidence,
             "venom_peak": peak, "reviewed": item_id is not None, "reason": reason or ""}
        )  # fmt: skip
        if peak[0] >= args.alert:
            alerts += 1
            rank = int((probs > probs[index[peak[1]]]).sum()) + 1
            past_fifth += rank > 5
            if item_id is None or peak[1] not in {t[0] for t in topk}:
                missed_alerts.append(rel_path)
    true_venomous = [p for p in photos if p["true"] in venomous]
    silent = [p for p in true_venomous if not p["reviewed"]]
    top1_only = [p for p in true_venomous if p["confidence"] >= args.threshold]
    result = {
        "model": str(args.model),
        "labels": len(engine.labels),
        "venomous_labels": sorted(venomous),
        "threshold": args.threshold,
        "alert": args.alert,
        "photos": len(photos),
        "scored_seconds": round(seconds, 1),
        "reviewed": sum(p["reviewed"] for p in photos),
        "alerts": alerts,
        "alerts_ranked_past_fifth": past_fifth,
        "alerts_not_reviewed": missed_alerts,
        "true_venomous": len(true_venomous),
        "true_venomous_reviewed": len(true_venomous) - len(silent),
        "true_venomous_silent": silent,
        "true_venomous_past_top1_threshold": len(top1_only),
        "true_venomous_top1_wrong_and_confident": sum(p["top1"] != p["true"] for p in top1_only),
        "true_venomous_top1_not_venomous_confident": sum(
            p["top1"] not in venomous for p in top1_only
        ),
    }
    shutil.rmtree(work, ignore_errors=True)
    write(result, args.name)
    return result


def write(result: dict[str, Any], name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    r = result
    lines = [
        "# Venom routing on real photos",
        "",
        f"Model `{r['model']}` ({r['labels']} labels), job threshold {r['threshold']}, "
        f"`HERPSCORE_VENOM_ALERT` {r['alert']}; medically significant: "
        + ", ".join(r["venomous_labels"])
        + f". {r['photos']} photos scored in {r['scored_seconds']} s; {r['reviewed']} "
        "routed to review.",
        "",
        "| check | count |",
        "|---|---|",
        f"| photos with a venomous species >= alert anywhere in the model's output | "
        f"{r['alerts']} |",
        f"| ... the venomous species ranked past 5th | {r['alerts_ranked_past_fifth']} |",
        "| of them **not** reviewed, or the species missing from the stored suggestions "
        f"(must be 0) | **{len(r['alerts_not_reviewed'])}** |",
        f"| photos of a venomous species (true label) | {r['true_venomous']} |",
        f"| of them reviewed | {r['true_venomous_reviewed']} |",
        f"| of them passed silently | **{len(r['true_venomous_silent'])}** |",
        "| of them a top-1 threshold alone would pass | "
        f"{r['true_venomous_past_top1_threshold']} |",
        f"| ... with the wrong top-1 | {r['true_venomous_top1_wrong_and_confident']} |",
        f"| ... with a harmless top-1 | {r['true_venomous_top1_not_venomous_confident']} |",
        "",
    ]
    if r["true_venomous_silent"]:
        lines += ["Venomous photos not reviewed (top-1, its confidence, the venomous peak):", ""]
        for p in r["true_venomous_silent"]:
            peak, label = p["venom_peak"]
            lines.append(f"- `{p['path']}`: {p['top1']} {p['confidence']:.3f}; {label} {peak:.3f}")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    print(json.dumps(main(get_args_parser().parse_args()), indent=2))
