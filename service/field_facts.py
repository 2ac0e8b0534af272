"""What the review page shows of a photo's field facts: site, corrected time, GPS, venom."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from service.field_models import Site, Species
from service.models import Image, JobImage
from service.sites import SiteTime, image_capture


def photo_facts(image: Image, job_image: JobImage | None, site: Site | None) -> dict[str, Any]:
    """Site, capture time (clock-corrected by the job image's Site row, with the offset
    where known), raw EXIF time and GPS."""
    clock = SiteTime(site.utc_offset_minutes, site.clock_correction_seconds) if site else None
    return {
        "site": job_image.site if job_image else None,
        "captured_at": image_capture(image, clock),
        "captured_exif": image.exif_datetime_raw,
        "gps_lat": image.gps_lat,
        "gps_lon": image.gps_lon,
    }


def marks_of(rows: Iterable[Species]) -> dict[str, dict[str, Any]]:
    """Per label of these Species rows: medically significant or not, and its common name."""
    return {
        s.label: {"venomous": s.medically_significant, "common_name": s.common_name} for s in rows
    }
