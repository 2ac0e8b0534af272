"""Bursts: photos of one site, taken seconds apart, that look alike (a perceptual hash)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import imagehash
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import Image, JobImage
from service.settings import Settings

# A burst is chained from its neighbours in time; this many photos at most, so a camera
# that fires all night at one static scene does not make one burst of thousands.
MAX_MEMBERS = 50


HASH_INPUT = 32  # imagehash.phash's own working size (hash_size 8 x highfreq_factor 4)


def perceptual_hash(image: PILImage.Image) -> str:
    """The 64-bit DCT perceptual hash (imagehash.phash) of a decoded image, as 16 hex digits."""
    # A box filter to phash's working size first: half the cost of its own Lanczos resize.
    small = image.convert("L").resize((HASH_INPUT, HASH_INPUT), PILImage.Resampling.BOX)
    return str(imagehash.phash(small))


def hash_distance(a: str, b: str) -> int:
    """How many of the 64 bits two perceptual hashes differ in."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


@dataclass(frozen=True)
class BurstRules:
    """When two photos of one site belong to one burst."""

    window_seconds: float
    max_distance: int

    @classmethod
    def from_settings(cls, settings: Settings) -> BurstRules:
        return cls(settings.burst_window_seconds, settings.burst_max_distance)


@dataclass(frozen=True)
class _Shot:
    image_id: int
    taken: datetime
    phash: str


def burst_members(session: Session, job_id: int, image_id: int, rules: BurstRules) -> list[int]:
    """The image ids of this image's burst in this job, itself included, in capture order.

    Two photos are linked when they share the job's site, their camera-local capture
    times are at most `window_seconds` apart and their hashes differ in at most
    `max_distance` bits; a burst is everything linked to the image through such links
    (so a burst of 2-second shots may span more than the window). A photo without a
    capture time or a hash, or with no site, is alone.
    """
    anchor = _shots(session, job_id, image_id=image_id)
    if rules.window_seconds <= 0 or not anchor:
        return [image_id]
    site, first = anchor[0]
    reach = timedelta(seconds=rules.window_seconds * MAX_MEMBERS)
    candidates = [
        shot
        for _, shot in _shots(session, job_id, site=site, around=(first.taken, reach))
        if shot.image_id != image_id
    ]
    window = timedelta(seconds=rules.window_seconds)
    members, frontier = [first], [first]
    while frontier and len(members) < MAX_MEMBERS:
        shot = frontier.pop()
        linked = [
            other
            for other in candidates
            if abs(other.taken - shot.taken) <= window
            and hash_distance(other.phash, shot.phash) <= rules.max_distance
        ]
        for other in linked[: MAX_MEMBERS - len(members)]:
            candidates.remove(other)
            members.append(other)
            frontier.append(other)
    members.sort(key=lambda s: (s.taken, s.image_id))
    return [shot.image_id for shot in members]


def _shots(
    session: Session,
    job_id: int,
    *,
    image_id: int | None = None,
    site: str | None = None,
    around: tuple[datetime, timedelta] | None = None,
) -> list[tuple[str, _Shot]]:
    """(site, shot) for the job's photos that have a site, a capture time and a hash."""
    query = (
        select(JobImage.site, Image.id, Image.captured_local, Image.phash)
        .join(Image, Image.id == JobImage.image_id)
        .where(
            JobImage.job_id == job_id,
            JobImage.site.is_not(None),
            Image.captured_local.is_not(None),
            Image.phash.is_not(None),
        )
    )
    if image_id is not None:
        query = query.where(Image.id == image_id)
    if site is not None:
        query = query.where(JobImage.site == site)
    if around is not None:
        taken, reach = around
        query = query.where(Image.captured_local.between(taken - reach, taken + reach))
    rows = session.execute(query.order_by(Image.captured_local, Image.id)).all()
    return [(s, _Shot(i, t, h)) for s, i, t, h in rows if s and t and h]  # filtered above
