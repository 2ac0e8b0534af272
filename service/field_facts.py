"""What the review page shows of a photo's field facts: site, corrected time, GPS, venom."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.field_models import Site, Species
from service.models import Image, JobImage
from service.sites import SiteTime, image_capture


def image_facts(session: Session, image: Image, job_image: JobImage | None) -> dict[str, Any]:
    """Site, capture time (clock-corrected, offset where known), raw EXIF time and GPS."""
    site_name = job_image.site if job_image else None
    site = session.scalar(select(Site).where(Site.name == site_name)) if site_name else None
    clock = SiteTime(site.utc_offset_minutes, site.clock_correction_seconds) if site else None
    return {
        "site": site_name,
        "captured_at": image_capture(image, clock),
        "captured_exif": image.exif_datetime_raw,
        "gps_lat": image.gps_lat,
        "gps_lon": image.gps_lon,
    }


def species_marks(session: Session, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Per label: medically significant or not, and its common name (for the suggestions)."""
    if not labels:
        return {}
    rows = session.scalars(select(Species).where(Species.label.in_(labels)))
    return {
        s.label: {"venomous": s.medically_significant, "common_name": s.common_name} for s in rows
    }
