"""Thumbnails: made once per image content (sha256), stored as small JPEGs, served from disk."""

from __future__ import annotations

import io
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from service.imaging import ImageError, decode_upright
from service.settings import Settings

log = logging.getLogger(__name__)
THUMBNAIL_SIDE = 256
JPEG_QUALITY = 85
NEAR_SIDE = 0.95  # a whole-factor reduction to this share of the side is close enough
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def thumbnail_file(settings: Settings, sha256: str, side: int = THUMBNAIL_SIDE) -> Path:
    """Where the thumbnail of this content lives (fanned out by the first two hex digits)."""
    return _copy_in(settings.thumbnails_path, sha256, side)


def _copy_in(root: Path, sha256: str, side: int) -> Path:
    if not _SHA256.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return root / sha256[:2] / f"{sha256}-{side}.jpg"


def is_stored(copy: Path) -> bool:
    """True when the copy exists and is not empty: a power cut can leave an unsynced write
    empty (see write_atomically), and an empty copy is rendered again, not served."""
    try:
        return copy.stat().st_size > 0
    except (FileNotFoundError, NotADirectoryError):
        return False


def ensure_thumbnail(
    settings: Settings,
    source: Path,
    sha256: str,
    side: int = THUMBNAIL_SIDE,
    draft: int | None = None,
) -> Path:
    """The thumbnail file of `source`, rendered and written on the first call only.

    `draft` is the least short side a JPEG may be decoded at (default: `side`).
    Raises ImageError when the source cannot be decoded; the caller shows a placeholder.
    """
    target = thumbnail_file(settings, sha256, side)
    if is_stored(target):
        return target
    thumb = render_thumbnail(
        source,
        side,
        settings.max_image_pixels,
        settings.max_file_bytes,
        settings.max_decoded_megabytes * 2**20,
        draft=draft,
    )
    write_atomically(encode_jpeg(thumb), target)
    return target


def render_thumbnail(
    source: Path,
    side: int,
    max_pixels: int,
    max_bytes: int,
    max_decoded: int | None = None,
    draft: int | None = None,
) -> Image.Image:
    """An RGB image no larger than side x side, upright as the camera's EXIF says."""

    def shrink_in_place(img: Image.Image) -> Image.Image:
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        return img

    return decode_upright(
        source,
        max_pixels,
        max_bytes,
        at_least=draft or side,
        finish=shrink_in_place,
        max_decoded=max_decoded,
    )


def shrink(img: Image.Image, side: int = THUMBNAIL_SIDE) -> Image.Image:
    """A new RGB image of `img` with its longer side at most `side` (never enlarged).

    Made on the scoring path for every photo, so cheaply. When a box reduction by a whole
    factor lands within 5 % under `side`, that reduction is the whole resize: a 12 MP JPEG
    decoded at 1/8 scale (500 x 375) is halved to 250 x 188 in a quarter of the time the
    bilinear resize to 256 took. Otherwise a box reduction by whole factors, then an
    antialiased bilinear resize. Lanczos, as `render_thumbnail` uses, took 3-4 ms of CPU per
    photo; at 256 px the three are hard to tell apart.
    """
    width, height = img.size
    longer = max(width, height)
    factor = round(longer / side)
    if longer <= side:
        thumb = img.copy()
    elif factor >= 2 and NEAR_SIDE * side <= longer / factor <= side:
        thumb = img.reduce(factor)
    else:
        scale = side / longer
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        thumb = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=1.0)
    return thumb if thumb.mode == "RGB" else thumb.convert("RGB")


def encode_jpeg(thumb: Image.Image) -> bytes:
    """The JPEG bytes every rendered copy is stored as.

    Without Pillow's `optimize` (a second pass for Huffman tables): on the scoring path it
    cost over a third of the encode for files only 8 % smaller (benchmarks/thumbnail_cpu.py).
    """
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def store_thumbnails(
    settings: Settings, made: Iterable[tuple[str | None, str, bytes | None]]
) -> tuple[int, int]:
    """Write the thumbnails the scoring pipeline made, as (sha256, path, JPEG or None);
    one that has none (a replayed prediction, a photo smaller than its draft) is rendered
    from the file. Existing thumbnails are kept. Returns (written, rendered)."""
    written = rendered = 0
    root = settings.thumbnails_path  # resolved once: a realpath per photo cost more than its write
    for sha256, path, jpeg in made:
        if sha256 is None or is_stored(target := _copy_in(root, sha256, THUMBNAIL_SIDE)):
            continue
        try:
            if jpeg is not None:
                write_atomically(jpeg, target)
                written += 1
            else:
                ensure_thumbnail(settings, Path(path), sha256)
                rendered += 1
        except (ImageError, OSError) as exc:  # the web view shows a placeholder
            log.info("no thumbnail of %s: %s", path, exc)
    return written, rendered


def write_atomically(body: bytes, target: Path) -> None:
    """Write `body` to `target` through a temporary file in the same folder and a rename:
    readers never see half a JPEG, and two writers of the same copy both succeed."""
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    except FileNotFoundError:  # the folder's first copy (a mkdir per write cost more than it)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    try:
        # No fsync: a copy is re-derivable, and one fsync per photo stalls slow disks.
        with os.fdopen(fd, "wb") as out:
            out.write(body)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
