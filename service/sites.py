"""Survey sites: which folder a photo's site is, the site table, and corrected capture times."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import PurePath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import BadInput, NotFound
from service.field_models import Site
from service.imaging import MAX_OFFSET_MINUTES, parse_offset
from service.models import Image, utcnow

MAX_CORRECTION_SECONDS = 366 * 24 * 3600


def site_of(rel_path: str, job_folder: str, depth: int = 1) -> str:
    """The folder `depth` levels under the job folder; the deepest folder there is for photos
    that sit higher; the job folder's own name for photos at its top level."""
    folders = PurePath(rel_path).parts[:-1]
    if not folders:
        return PurePath(job_folder).name
    return folders[min(depth, len(folders)) - 1]


def format_offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@dataclass(frozen=True)
class SiteTime:
    """The clock facts of one site that capture times need (none: no correction)."""

    utc_offset_minutes: int | None = None
    clock_correction_seconds: int = 0


def corrected_capture(
    local: datetime | None, exif_offset_minutes: int | None, site: SiteTime | None
) -> str | None:
    """Camera-local time plus the site's clock correction, as ISO 8601: with the photo's own
    offset if its EXIF had one, else the site's, else no offset at all (never a guessed UTC)."""
    if local is None:
        return None
    site = site or SiteTime()
    when = local.replace(tzinfo=None) + timedelta(seconds=site.clock_correction_seconds)
    offset = exif_offset_minutes if exif_offset_minutes is not None else site.utc_offset_minutes
    if offset is None:
        return when.isoformat()
    return when.replace(tzinfo=timezone(timedelta(minutes=offset))).isoformat()


def image_capture(image: Image, site: SiteTime | None) -> str | None:
    """An image's corrected capture time (see `corrected_capture`); an image that only has
    a UTC instant (no camera-local time recorded) reports that instant."""
    if image.captured_local is None and image.captured_at is not None:
        return image.captured_at.isoformat()
    return corrected_capture(image.captured_local, image.captured_offset_minutes, site)


def site_times(session: Session) -> dict[str, SiteTime]:
    """Every site's clock facts by name (a small table: read whole)."""
    return {
        s.name: SiteTime(s.utc_offset_minutes, s.clock_correction_seconds)
        for s in session.scalars(select(Site))
    }


# ---------------------------------------------------------------- the site table


def list_sites(session: Session) -> list[Site]:
    return list(session.scalars(select(Site).order_by(Site.name)))


def get_site(session: Session, name: str) -> Site:
    site = session.scalar(select(Site).where(Site.name == name))
    if site is None:
        raise NotFound(f"no site named {name!r}")
    return site


def _number(value: Any, field: str, low: float, high: float) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"{field} must be a number", {"field": field}) from None
    if not math.isfinite(number) or not low <= number <= high:
        raise BadInput(f"{field} must lie in [{low:g}, {high:g}]", {"field": field})
    return number


def _offset_minutes(value: Any) -> int | None:
    """An offset given as minutes (480) or as text (+08:00)."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and not value.strip().lstrip("+-").isdigit():
        minutes = parse_offset(value)
        if minutes is None:
            raise BadInput("utc_offset must look like +08:00", {"field": "utc_offset"})
        return minutes
    number = _number(value, "utc_offset_minutes", -MAX_OFFSET_MINUTES, MAX_OFFSET_MINUTES)
    return None if number is None else int(number)


def save_site(session: Session, name: str, **fields: Any) -> Site:
    """Create or update a site; only the fields given change. Checks every value."""
    name = (name or "").strip()
    if not name or len(name) > 200 or "/" in name or "\x00" in name:
        raise BadInput("a site name is 1-200 characters, without '/'", {"field": "name"})
    site = session.scalar(select(Site).where(Site.name == name))
    if site is None:
        site = Site(name=name, clock_correction_seconds=0, notes="")
        session.add(site)
    if "latitude" in fields:
        site.latitude = _number(fields["latitude"], "latitude", -90, 90)
    if "longitude" in fields:
        site.longitude = _number(fields["longitude"], "longitude", -180, 180)
    if "utc_offset" in fields:
        site.utc_offset_minutes = _offset_minutes(fields["utc_offset"])
    if "utc_offset_minutes" in fields:
        site.utc_offset_minutes = _offset_minutes(fields["utc_offset_minutes"])
    if "clock_correction_seconds" in fields:
        value = _number(
            fields["clock_correction_seconds"], "clock_correction_seconds",
            -MAX_CORRECTION_SECONDS, MAX_CORRECTION_SECONDS,
        )  # fmt: skip
        site.clock_correction_seconds = int(value or 0)
    if "notes" in fields:
        site.notes = str(fields["notes"] or "")[:2000]
    unknown = set(fields) - {
        "latitude", "longitude", "utc_offset", "utc_offset_minutes",
        "clock_correction_seconds", "notes",
    }  # fmt: skip
    if unknown:
        raise BadInput(f"unknown site fields: {', '.join(sorted(unknown))}")
    site.updated_at = utcnow()
    session.flush()
    return site


def delete_site(session: Session, name: str) -> None:
    session.delete(get_site(session, name))
    session.flush()


def site_to_dict(site: Site) -> dict[str, Any]:
    return {
        "name": site.name,
        "latitude": site.latitude,
        "longitude": site.longitude,
        "utc_offset": (
            format_offset(site.utc_offset_minutes) if site.utc_offset_minutes is not None else None
        ),
        "utc_offset_minutes": site.utc_offset_minutes,
        "clock_correction_seconds": site.clock_correction_seconds,
        "notes": site.notes,
    }
