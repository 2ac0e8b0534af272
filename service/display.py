"""Display copies: a screen-sized JPEG of each photo (longer side 1600 px), one per content."""

from __future__ import annotations

from pathlib import Path

from service import thumbnails
from service.settings import Settings

DISPLAY_SIDE = 1600
# A JPEG may be decoded at 1/2, 1/4 or 1/8 scale while its short side stays >= this: a 4:3
# photo still fills 1600 x 1200, and a 12-megapixel one decodes at a quarter of the pixels.
DISPLAY_DRAFT = DISPLAY_SIDE * 3 // 4


def display_file(settings: Settings, sha256: str) -> Path:
    """Where the display copy of this content lives (beside its thumbnails)."""
    return thumbnails.thumbnail_file(settings, sha256, DISPLAY_SIDE)


def ensure_display_copy(settings: Settings, source: Path, sha256: str) -> Path:
    """The display copy of `source`, rendered and written on the first call only.

    Raises ImageError when the source cannot be decoded.
    """
    return thumbnails.ensure_thumbnail(
        settings, source, sha256, side=DISPLAY_SIDE, draft=DISPLAY_DRAFT
    )
