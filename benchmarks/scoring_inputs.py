"""The scoring benchmark's inputs: random-weight models exported as model folders, and
camera-like JPEGs (gradients, shapes, blur, sensor noise) written in parallel."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger("bench_scoring")
NUM_CLASSES = 100
PROCESSES = 2
# Spawned, not forked: the parent imports torch (threads, 500 MiB) and a forked child
# would inherit both; a spawned child imports only what its job needs, like a worker.
CTX = mp.get_context("spawn")


def build_model(name: str, work: Path) -> Path:
    """Export a random-weight model to a contract-valid herpscore model folder (cached)."""
    folder = work / "models" / name
    if (folder / "metadata.json").is_file():
        return folder
    import torch

    model, cfg = torch_model(name)
    folder.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, 224, 224)
    torch.onnx.export(
        model,
        (dummy,),
        str(folder / "model.onnx"),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        opset_version=17,
        dynamo=False,
    )
    labels = {str(i): f"Species_{i:03d}" for i in range(NUM_CLASSES)}
    (folder / "class_map.json").write_text(json.dumps(labels), encoding="utf-8")
    metadata = {
        "format": "herpscore-model/1",
        "backbone": name,
        "input": {"size": 224, "resize": "shorter_side", **cfg},
        "temperature": 1.0,
        "note": "random weights, for speed measurements only",
    }
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2), encoding="utf-8")
    from service.modelspec import load_artifact

    load_artifact(folder, check_onnx=True)
    return folder


def torch_model(name: str) -> tuple[Any, dict[str, Any]]:
    """(eval-mode torch model with random weights, its preprocessing config)."""
    import torch

    torch.manual_seed(0)
    if name == "mobilenet_v3_small":
        from torchvision.models import mobilenet_v3_small

        cfg = {"crop_pct": 0.875, "interpolation": "bilinear"}
        model = mobilenet_v3_small(num_classes=NUM_CLASSES)
        cfg |= {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    else:
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES)
        pc: dict[str, Any] = dict(model.pretrained_cfg)  # type: ignore[arg-type]
        cfg = {
            "crop_pct": pc["crop_pct"],
            "interpolation": pc["interpolation"],
            "mean": list(pc["mean"]),
            "std": list(pc["std"]),
        }
    return model.eval(), cfg


def make_photos(
    folder: Path, size: tuple[int, int], count: int, processes: int = PROCESSES
) -> list[str]:
    """Write `count` camera-like JPEGs (gradients, shapes, blur, sensor noise; quality 90)."""
    # ImageFolder needs one class folder; herpscore only sees a folder of files.
    target = folder / "survey"
    target.mkdir(parents=True, exist_ok=True)
    todo = [target / f"IMG_{i:04d}.jpg" for i in range(count)]
    for extra in set(target.glob("*.jpg")) - set(todo):
        extra.unlink()  # every measurement reads the whole folder: it must hold `count` photos
    missing = [(str(p), size, i) for i, p in enumerate(todo) if not p.is_file()]
    if missing:
        log.info("writing %d photos of %dx%d to %s", len(missing), *size, target)
        with CTX.Pool(processes) as pool:
            pool.starmap(_write_photo, missing)
        # Written out before anything is measured: the kernel's writeback of fresh photos
        # made file creates 5x dearer in a measurement that followed at once.
        os.sync()
    return [str(p) for p in todo]


def _write_photo(path: str, size: tuple[int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    w, h = size
    small = (w // 8, h // 8)  # paint the scene at 1/8 scale, then scale up: smooth like optics
    yy, xx = np.mgrid[0 : small[1], 0 : small[0]].astype(np.float32)
    base = np.empty((small[1], small[0], 3), dtype=np.float32)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.3)
        wave = np.sin(xx / small[0] * fx * 3.14 + ph) * np.cos(yy / small[1] * fy * 3.14)
        base[..., c] = 90 + 60 * wave + rng.uniform(-30, 30)
    scene = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(scene)
    for _ in range(int(rng.integers(15, 40))):
        x0, y0 = int(rng.integers(0, small[0])), int(rng.integers(0, small[1]))
        r = int(rng.integers(3, max(4, small[0] // 6)))
        colour = tuple(int(v) for v in rng.integers(20, 235, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r // 2), fill=colour)
        else:
            draw.line((x0, y0, x0 + r * 3, y0 + r), fill=colour, width=max(1, r // 4))
    scene = scene.filter(ImageFilter.GaussianBlur(1.5)).resize(size, Image.Resampling.BICUBIC)
    # Sensor noise and fine texture are what make a real photo 2-4 MB at quality 90; a tiled
    # noise field (random offset per photo) compresses like fresh noise and is 10x cheaper.
    tile = _noise_tile()
    reps = (-(-h // tile.shape[0]) + 1, -(-w // tile.shape[1]) + 1, 1)
    dy, dx = int(rng.integers(0, tile.shape[0])), int(rng.integers(0, tile.shape[1]))
    noise = np.tile(tile, reps)[dy : dy + h, dx : dx + w]
    pixels = np.asarray(scene, dtype=np.int16) + noise
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(path, "JPEG", quality=90)


@cache
def _noise_tile(side: int = 1024) -> np.ndarray:
    rng = np.random.default_rng(1234)
    luma = rng.normal(0, 7, size=(side, side, 1))
    chroma = rng.normal(0, 3, size=(side, side, 3))
    return np.round(luma + chroma).astype(np.int16)
