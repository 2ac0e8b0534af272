"""Thumbnails: made once per image content (sha256), stored as small JPEGs, served from disk."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from PIL import Image

from service.imaging import decode_upright
from service.settings import Settings

THUMBNAIL_SIDE = 256
JPEG_QUALITY = 85
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def thumbnail_file(settings: Settings, sha256: str, side: int = THUMBNAIL_SIDE) -> Path:
    """Where the thumbnail of this content lives (fanned out by the first two hex digits)."""
    if not _SHA256.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return settings.thumbnails_path / sha256[:2] / f"{sha256}-{side}.jpg"


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
    if target.is_file():
        return target
    thumb = render_thumbnail(
        source,
        side,
        settings.max_image_pixels,
        settings.max_file_bytes,
        settings.max_decoded_megabytes * 2**20,
        draft=draft,
    )
    _write_atomically(thumb, target)
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

    def shrink(img: Image.Image) -> Image.Image:
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
        return img

    return decode_upright(
        source,
        max_pixels,
        max_bytes,
        at_least=draft or side,
        finish=shrink,
        max_decoded=max_decoded,
    )


def _write_atomically(thumb: Image.Image, target: Path) -> None:
    # A temporary file in the same folder, then a rename: readers never see half a JPEG,
    # and two requests rendering the same thumbnail at once both succeed.
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            thumb.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
