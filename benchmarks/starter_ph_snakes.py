"""What the starter model does on ph-snakes' test photos: snake or not, family, genus Naja.

    [PH_SNAKES=DIR] PYTHONPATH=. python benchmarks/starter_ph_snakes.py MODEL_DIR [...]

Every photo is scored as served (the model folder's preprocessing, ONNX Runtime), once at
full size and once downscaled to 128 pixels wide (small phone photos). Writes
benchmarks/results/starter_ph_snakes.{json,md}.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from service.imaging import resize_and_crop, to_array, to_rgb, upright
from service.modelspec import load_artifact
from workers.engine import InferenceEngine

DATA = Path(os.environ.get("PH_SNAKES", "/work/shared/data/ph-snakes")) / "test"
RESULTS = Path(__file__).resolve().parent / "results"
# The families of ph-snakes' genera (Oxyrhabdium's placement is unsettled: left out).
FAMILIES = {
    "Naja": "Elapidae",
    "Trimeresurus": "Viperidae",
    "Tropidolaemus": "Viperidae",
    "Lycodon": "Colubridae",
    "Ptyas": "Colubridae",
    "Dendrelaphis": "Colubridae",
    "Coelognathus": "Colubridae",
    "Gonyosoma": "Colubridae",
    "Calamaria": "Colubridae",
    "Xenopeltis": "Xenopeltidae",
}


def genus_of(folder: str) -> str:
    match = re.search(r"\(([A-Z][a-z]+) [a-z]+\)", folder)
    return match.group(1) if match else ""


def inputs(paths: list[Path], spec: Any, width: int | None) -> np.ndarray:
    batch = []
    for path in paths:
        with Image.open(path) as img:
            rgb = to_rgb(upright(img))
            if width is not None and rgb.width > width:
                rgb = rgb.resize((width, max(1, round(rgb.height * width / rgb.width))))
            batch.append(to_array(resize_and_crop(rgb, spec), spec))
    return np.stack(batch)


def measure(model_dir: Path, paths: list[Path], genera: list[str], width: int | None) -> dict:
    artifact = load_artifact(model_dir)
    taxonomy = artifact.metadata["taxonomy"]
    engine = InferenceEngine(model_dir, threads=1)
    probs = np.concatenate(
        [
            engine.probabilities(inputs(paths[i : i + 16], artifact.spec, width))
            for i in range(0, len(paths), 16)
        ]
    )
    groups = sorted({t["group"] for t in taxonomy.values()})
    group_of = np.array([groups.index(taxonomy[label]["group"]) for label in artifact.labels])
    sums = np.stack([probs[:, group_of == g].sum(1) for g in range(len(groups))], 1)
    top = probs.argmax(1)
    top_label = [artifact.labels[i] for i in top]
    snake = groups.index("snake")
    # Family: the best snake class's family (every photo here is a snake).
    snake_cols = np.flatnonzero(group_of == snake)
    best_snake = [artifact.labels[snake_cols[i]] for i in probs[:, snake_cols].argmax(1)]
    family_known = [i for i, g in enumerate(genera) if g in FAMILIES]
    family_hits = sum(
        taxonomy[best_snake[i]].get("family") == FAMILIES[genera[i]] for i in family_known
    )
    naja = [i for i, g in enumerate(genera) if g == "Naja"]
    said_naja = [i for i, label in enumerate(top_label) if taxonomy[label].get("genus") == "Naja"]
    return {
        "n": len(paths),
        "top1_is_a_snake_class": float((group_of[top] == snake).mean()),
        "top1_is_a_herp_class": float((group_of[top] != groups.index("not a herp")).mean()),
        "snake_group_sum_is_largest": float((sums.argmax(1) == snake).mean()),
        "snake_group_sum_over_half": float((sums[:, snake] > 0.5).mean()),
        "family_of_best_snake_class": {
            "n": len(family_known),
            "right": family_hits / max(1, len(family_known)),
        },
        "naja": {
            "photos": len(naja),
            "recall_top1_indian_cobra": sum(i in said_naja for i in naja) / max(1, len(naja)),
            "said_naja": len(said_naja),
            "precision": sum(genera[i] == "Naja" for i in said_naja) / max(1, len(said_naja)),
        },
    }


def main(model_dirs: list[str]) -> None:
    paths = sorted(p for p in DATA.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    genera = [genus_of(p.parent.name) for p in paths]
    results = {
        Path(d).name: {
            "full size": measure(Path(d), paths, genera, None),
            "128 px wide": measure(Path(d), paths, genera, 128),
        }
        for d in model_dirs
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "starter_ph_snakes.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = [
        "| model | photos | top-1 a snake class | snake group sum largest | "
        "family of best snake class | Naja recall | Naja precision |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, by_size in results.items():
        for size, r in by_size.items():
            rows.append(
                f"| {name}, {size} | {r['n']} | {r['top1_is_a_snake_class']:.1%} | "
                f"{r['snake_group_sum_is_largest']:.1%} | "
                f"{r['family_of_best_snake_class']['right']:.1%} | "
                f"{r['naja']['recall_top1_indian_cobra']:.1%} of {r['naja']['photos']} | "
                f"{r['naja']['precision']:.1%} of {r['naja']['said_naja']} |"
            )
    (RESULTS / "starter_ph_snakes.md").write_text(
        "# The starter model on ph-snakes' test photos\n\n"
        "`PYTHONPATH=. python benchmarks/starter_ph_snakes.py MODEL_DIR ...`\n\n"
        + "\n".join(rows)
        + "\n"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
