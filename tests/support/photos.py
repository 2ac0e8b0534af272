"""Generated photos for tests: colour decides the tiny model's class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# The real photos (never committed): HERPSCORE_TEST_PHOTOS, else ../shared/data/ph-snakes
# beside the checkout. Tests that need them skip with the path in the reason.
PH_SNAKES = Path(
    os.environ.get(
        "HERPSCORE_TEST_PHOTOS",
        Path(__file__).resolve().parents[3] / "shared" / "data" / "ph-snakes",
    )
)

COLOURS = {
    "red": (200, 30, 30),
    "green": (30, 200, 30),
    "blue": (30, 30, 200),
    "grey": (128, 128, 128),
}


def write_photo(
    path: Path,
    colour: str | tuple[int, int, int] = "red",
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
    **save_kwargs: object,
) -> Path:
    """A noisy, mostly one-colour image saved in the format its suffix names."""
    rgb = COLOURS[colour] if isinstance(colour, str) else colour
    rng = np.random.default_rng(seed)
    arr = np.clip(
        np.asarray(rgb, dtype=np.int16) + rng.integers(-20, 21, size=(size[1], size[0], 3)),
        0,
        255,
    ).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path, **save_kwargs)  # type: ignore[arg-type]
    return path


def make_photo_folder(folder: Path, count: int = 12, size: tuple[int, int] = (64, 48)) -> Path:
    """`count` photos cycling through red, green and blue, in two subfolders."""
    names = ["red", "green", "blue"]
    for i in range(count):
        colour = names[i % 3]
        write_photo(folder / f"site{i % 2}" / f"{colour}_{i:03d}.jpg", colour, size, seed=i)
    return folder
