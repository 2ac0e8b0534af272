"""A training run with known label errors: mislabelled photos, a fitter that predicts them.

The fitter stands in for `python -m training fit --label-errors holdout`: it leaves a model
folder, metrics.json and label_probs.json holding the model's predictions (through the
served ONNX path) of the export's val and test photos, which it never trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

from service import registry, retraining
from service.db import session_scope
from service.label_issues import LABEL_PROBS_FILE
from service.settings import Settings
from tests.integration.test_exports import (
    COLOURS,
    annotate,
    label_all,
    make_survey,
    score_folder,
)
from tests.support.models import make_model_folder
from workers.engine import InferenceEngine
from workers.pipeline import score_paths
from workers.training_tasks import label_predictor

GOOD = [f"{c}_snake" for c in COLOURS]  # class i follows colour channel i: always right


def predicting_fit(argv: list[str]) -> Path:
    data = Path(argv[argv.index("--data") + 1])
    out = Path(argv[argv.index("--out") + 1])
    (out / "run").mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"val": {"n": 1, "top1": 1.0}}))
    folder = make_model_folder(out / "model", labels=GOOD)
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    engine = InferenceEngine(folder, threads=1)
    rows = []
    for split in ("val", "test"):
        paths = sorted((data / split).rglob("*.png"))
        results = score_paths(
            engine, [str(p) for p in paths], max_pixels=10**8, max_bytes=10**8, k=len(GOOD)
        )
        for path, result in zip(paths, results, strict=True):
            probs = dict(result.topk or [])
            rows.append(
                {
                    "path": path.relative_to(data).as_posix(),
                    "split": split,
                    "label": classes.index(path.parent.name),
                    "method": "holdout",
                    "probs": [probs.get(c, 0.0) for c in classes],
                }
            )
    data_out = {"mode": "holdout", "classes": classes, "rows": rows}
    (out / LABEL_PROBS_FILE).write_text(json.dumps(data_out))
    return folder


def run_with_label_errors(
    settings: Settings, photos_root: Path, fit: retraining.Fitter = predicting_fit
) -> tuple[int, dict[str, int]]:
    """54 photos over 6 sites, all labelled, then `red_0` of every site relabelled green
    (a later decision); one training run. Returns the run id and {rel_path: image id} of
    the mislabelled photos."""
    with session_scope(settings.db_url) as session:
        registry.add_model(
            session, settings, make_model_folder(settings.data_path / "m", labels=GOOD),
            activate=True,
        )  # fmt: skip
    images = score_folder(settings, str(make_survey(photos_root / "s", sites=6)))
    label_all(settings, images)
    wrong = {rel: i for rel, i in images.items() if rel.endswith("red_0.png")}
    for image_id in wrong.values():
        annotate(settings, image_id, label="green_snake")
    with session_scope(settings.db_url) as session:
        result = retraining.retrain_check(session, settings, force=True)
    assert result.run_id is not None
    run = retraining.run_training(settings, result.run_id, fit, label_predictor(settings))
    assert run is not None and run.error is None, run and run.error
    return result.run_id, wrong
