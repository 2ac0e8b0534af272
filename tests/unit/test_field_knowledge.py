"""Label parsing, sites from folders, UTC offsets and clock-corrected capture times."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from service.imaging import parse_offset, probe
from service.scanning import utc_instant
from service.sites import SiteTime, corrected_capture, site_of
from service.species import parse_label
from tests.support.photos import write_photo


@pytest.mark.parametrize(
    ("label", "scientific", "genus", "common"),
    [
        ("Naja_philippinensis", "Naja philippinensis", "Naja", ""),
        ("naja-philippinensis", "Naja philippinensis", "Naja", ""),
        (
            "Philippine Cobra (Naja philippinensis)",
            "Naja philippinensis",
            "Naja",
            "Philippine Cobra",
        ),
        ("agkistrodon-piscivorus", "Agkistrodon piscivorus", "Agkistrodon", ""),
        ("Crotalus_oreganus_helleri", "Crotalus oreganus helleri", "Crotalus", ""),
        ("Naja", "Naja", "Naja", ""),
        ("red_snake_2", "", "", ""),  # not a name: taxonomy left for an admin
    ],
)
def test_labels_parse_into_taxonomy(label: str, scientific: str, genus: str, common: str) -> None:
    parsed = parse_label(label)
    assert (parsed.scientific_name, parsed.genus, parsed.common_name) == (scientific, genus, common)


@pytest.mark.parametrize(
    ("rel_path", "depth", "site"),
    [
        ("quezon/cam1/a.jpg", 1, "quezon"),
        ("quezon/cam1/a.jpg", 2, "cam1"),
        ("quezon/a.jpg", 2, "quezon"),  # shallower than the depth: its deepest folder
        ("a.jpg", 1, "survey"),  # top level: the job folder's name
    ],
)
def test_site_is_a_folder_level(rel_path: str, depth: int, site: str) -> None:
    assert site_of(rel_path, "/data/survey", depth) == site


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("+08:00", 480), ("-05:30", -330), ("+0800", 480), ("Z", 0), ("", None), ("+25:00", None),
     ("08:00", None), (None, None), ("+08:00\x00", 480)],
)  # fmt: skip
def test_offsets_parse(text: str | None, minutes: int | None) -> None:
    assert parse_offset(text) == minutes


LOCAL = datetime(2024, 5, 1, 21, 30, 0)


def test_capture_time_keeps_the_camera_offset_and_is_never_labelled_utc() -> None:
    assert corrected_capture(LOCAL, 480, None) == "2024-05-01T21:30:00+08:00"
    assert corrected_capture(LOCAL, None, None) == "2024-05-01T21:30:00"  # no offset: none
    assert corrected_capture(None, 480, None) is None
    assert utc_instant(LOCAL, 480) == datetime.fromisoformat("2024-05-01T13:30:00+00:00")
    assert utc_instant(LOCAL, None) is None


def test_site_offset_fills_a_missing_one_and_the_clock_correction_applies() -> None:
    site = SiteTime(utc_offset_minutes=480, clock_correction_seconds=-3690)
    assert corrected_capture(LOCAL, None, site) == "2024-05-01T20:28:30+08:00"
    # The photo's own offset wins over the site's; the correction still applies.
    assert corrected_capture(LOCAL, -300, site) == "2024-05-01T20:28:30-05:00"
    # A correction across midnight moves the date.
    late = SiteTime(None, 3 * 3600)
    assert corrected_capture(LOCAL, None, late) == "2024-05-02T00:30:00"


def _exif_photo(path: Path, offset: str | None) -> Path:
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[36867] = "2024:05:01 21:30:00"
    if offset is not None:
        ifd[0x9011] = offset
    return write_photo(path, "red", exif=exif.tobytes())


def test_probe_reads_the_exif_offset_and_keeps_the_raw_text(tmp_path: Path) -> None:
    info = probe(_exif_photo(tmp_path / "a.jpg", "+08:00"), 10**8, 10**8)
    assert (info.captured_at, info.captured_offset_minutes) == (LOCAL, 480)
    assert info.exif_datetime_raw == "2024:05:01 21:30:00"
    bare = probe(_exif_photo(tmp_path / "b.jpg", None), 10**8, 10**8)
    assert (bare.captured_at, bare.captured_offset_minutes) == (LOCAL, None)


def test_a_malformed_species_csv_is_bad_input_not_a_crash(sqlite_url: str) -> None:
    """Found by schemathesis: a bare CR inside a field made csv raise, a 500."""
    import io

    import pytest

    from service.db import session_scope
    from service.errors import BadInput
    from service.species import import_csv

    with session_scope(sqlite_url) as session, pytest.raises(BadInput, match="cannot be read"):
        import_csv(session, io.StringIO("-w\r;\x96\x93"))
