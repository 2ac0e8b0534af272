"""Display copies: a screen-sized JPEG of each photo (longer side 1600 px), one per content."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select

from service import thumbnails
from service.db import in_values, read_scope
from service.imaging import ImageError
from service.models import Image, ReviewItem, ReviewStatus
from service.settings import Settings

log = logging.getLogger(__name__)

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


def prepare_for_review(settings: Settings, image_ids: Sequence[int]) -> int:
    """Make the display copies of these images that wait in the review queue; how many made.

    Called by the scoring worker after a chunk is stored, so the reviewer's first look at a
    photo never waits for its copy. A photo that cannot be decoded is left to the page's
    placeholder.
    """
    if not settings.display_copies_when_scoring or not image_ids:
        return 0
    with read_scope(settings.db_url) as session:
        rows = session.execute(
            select(Image.path, Image.sha256)
            .join(ReviewItem, ReviewItem.image_id == Image.id)
            .where(
                in_values(session, Image.id, list(image_ids)),
                ReviewItem.status == ReviewStatus.PENDING,
                Image.sha256.is_not(None),
            )
            .distinct()
        ).all()
    made = 0
    for path, sha256 in rows:
        if sha256 is None or thumbnails.is_stored(display_file(settings, sha256)):
            continue
        try:
            ensure_display_copy(settings, Path(path), sha256)
            made += 1
        except (ImageError, OSError) as exc:
            log.info("no display copy of %s: %s", path, exc)
    return made
