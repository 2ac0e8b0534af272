"""Synthetic, clearly artificial but learnable "species" images for the demo and the tests."""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

Pattern = Callable[[np.ndarray, np.ndarray, float], np.ndarray]
SPLIT_SHARES = (("train", 0.6), ("val", 0.2), ("test", 0.2))


def _stripes(u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    return (np.sin(u * freq * 2 * np.pi) > 0).astype(np.float32)


def _bands(u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    return (np.sin(v * freq * 0.6 * np.pi) > 0.6).astype(np.float32)


def _rings(u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    return (np.sin(np.hypot(u, v) * freq * 2 * np.pi) > 0).astype(np.float32)


def _checks(u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    return ((np.sin(u * freq * np.pi) * np.sin(v * freq * np.pi)) > 0).astype(np.float32)


def _zigzag(u: np.ndarray, v: np.ndarray, freq: float) -> np.ndarray:
    tri = np.abs((u * freq) % 2 - 1)
    return (np.sin((v + 0.25 * tri) * freq * 2 * np.pi) > 0).astype(np.float32)


PATTERNS: tuple[Pattern, ...] = (_stripes, _bands, _rings, _checks, _zigzag)


def _blotches(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random soft spots: a pattern of its own, drawn from the generator."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    mask = np.zeros((size, size), dtype=np.float32)
    for _ in range(rng.integers(5, 9)):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.06, 0.14)
        mask = np.maximum(mask, ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r).astype(np.float32))
    return mask


def _colour(hue: float, value: float = 0.9) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(hue % 1.0, 0.8, value), dtype=np.float32)


def draw(label: int, classes: int, size: int, rng: np.random.Generator) -> Image.Image:
    """One image of class `label`: its pattern in its colour on a noisy background, jittered."""
    kinds = len(PATTERNS) + 1
    hue = label / classes + rng.normal(0, 0.02)
    fg, bg = _colour(hue), _colour(hue + 0.5, value=0.35)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    u = xx * np.cos(angle) + yy * np.sin(angle) + rng.uniform(-0.2, 0.2)
    v = -xx * np.sin(angle) + yy * np.cos(angle) + rng.uniform(-0.2, 0.2)
    freq = rng.uniform(4, 7)
    kind = label % kinds
    mask = _blotches(rng, size) if kind == len(PATTERNS) else PATTERNS[kind](u, v, freq)
    pixels = mask[..., None] * fg + (1 - mask[..., None]) * bg
    pixels += rng.normal(0, 0.08, pixels.shape).astype(np.float32)
    return Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8), "RGB")


def make_synthetic_dataset(
    out_dir: Path, classes: int = 4, per_class: int = 40, size: int = 96, seed: int = 0
) -> Path:
    """Write train/val/test/<label>/*.jpg (60/20/20 of `per_class` images per class)."""
    if classes < 2 or per_class < 5:
        raise ValueError("need at least 2 classes and 5 images per class")
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    for label in range(classes):
        name = f"synthetic species {label} ({PATTERN_NAMES[label % len(PATTERN_NAMES)]})"
        start = 0
        for split, share in SPLIT_SHARES:
            count = round(per_class * share) if split != "test" else per_class - start
            folder = out_dir / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                draw(label, classes, size, rng).save(
                    folder / f"{split}_{index:04d}.jpg", quality=90
                )
            start += count
    return out_dir


PATTERN_NAMES = ("stripes", "bands", "rings", "checks", "zigzag", "blotches")
