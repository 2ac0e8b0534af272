"""A downscaled copy of a photo set: every photo at most WIDTH pixels wide, same folder tree.

    .venv/bin/python benchmarks/downscale.py SOURCE DEST [--width 128]

It imitates small phone thumbnails (issue 17: a 35-species set of 128-pixel-wide photos
where the recipes overfit). Each photo is decoded as served (EXIF-rotated, RGB), resized to
WIDTH pixels wide with its aspect ratio kept (never enlarged) and written under the same
relative path and name: a PNG stays a PNG, anything else becomes a JPEG at quality 90.
Keeping the names keeps the file order, so the benchmark's seeded train/val split picks
the same photos as on the full-size set. The output is deterministic, so byte-identical
sources stay byte-identical (duplicate removal by sha256 still works).
Write DEST outside the repository (e.g. under /tmp): the photos are not ours to commit.
`train_ph_snakes.py --downscale 128` calls this for its own view.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.imaging import ImageError, open_checked, to_rgb, upright  # noqa: E402
from service.settings import DEFAULT_EXTENSIONS  # noqa: E402
from training.data import MAX_BYTES, MAX_PIXELS  # noqa: E402

log = logging.getLogger("downscale")
DONE = ".downscaled"


def downscale_image(source: Path, dest: Path, width: int) -> None:
    """One photo -> at most `width` pixels wide (aspect kept, never enlarged); PNG or JPEG."""
    handle = open_checked(source, MAX_PIXELS, MAX_BYTES)
    try:
        handle.load()
        rgb = to_rgb(upright(handle))
        if rgb is handle:
            rgb = rgb.copy()  # the handle closes below
    finally:
        handle.close()
    if rgb.width > width:
        height = max(1, round(rgb.height * width / rgb.width))
        rgb = rgb.resize((width, height), Image.Resampling.LANCZOS)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.suffix.lower() == ".png":
        rgb.save(dest, "PNG")
    else:
        rgb.save(dest, "JPEG", quality=90)


def downscale_tree(source: Path, dest: Path, width: int) -> dict[str, int]:
    """Downscale every photo under `source` into `dest` (reused if already complete)."""
    marker = dest / DONE
    if marker.is_file() and marker.read_text().strip() == str(width):
        return {"reused": 1}
    written = skipped = 0
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        if path.suffix.lower().lstrip(".") not in DEFAULT_EXTENSIONS:
            continue
        out = dest / path.relative_to(source)
        try:
            downscale_image(path, out, width)
            written += 1
        except (ImageError, OSError) as exc:
            log.warning("skipping %s: %s", path, exc)
            skipped += 1
    marker.write_text(f"{width}\n")
    log.info("downscaled %d photos to %d px wide in %s (%d skipped)", written, width, dest, skipped)
    return {"written": written, "skipped": skipped}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()
    downscale_tree(args.source, args.dest, args.width)
