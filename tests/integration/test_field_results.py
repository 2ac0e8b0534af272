"""Final labels, sites, capture times and venom-aware routing through the real scoring path."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from sqlalchemy import select

from service import sites, species
from service.db import session_scope
from service.jobs import create_job
from service.models import Annotation, Decision, Image, ReviewItem, utcnow
from service.registry import activate_model, add_model
from service.results import CSV_COLUMNS, ResultFilters, query_results, write_results
from service.review import next_item
from tests.support.models import make_model_folder
from tests.support.photos import write_photo
from tests.support.scoring import scan_and_score

LABELS = ["Naja_philippinensis", "Ptyas_carinata", "Boiga_dendrophila"]


def _photo(path: Path, colour: str, offset: str | None = None) -> None:
    exif = PILImage.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[36867] = "2024:05:01 21:30:00"
    if offset is not None:
        ifd[0x9011] = offset
    write_photo(path, colour, exif=exif.tobytes())


def _scored_job(settings: Any, tmp_path: Path, photos_root: Path) -> int:
    # scale=1: moderate probabilities (top-1 about 0.65, the others about 0.17 each).
    folder = make_model_folder(tmp_path / "model", labels=LABELS, scale=1.0)
    with session_scope(settings.db_url) as session:
        model = add_model(session, settings, folder)
        activate_model(session, model.id)
        species.save_species(session, "Naja_philippinensis", medically_significant=True)
        species.save_species(session, "Ptyas_carinata", genus="Colubrid")
        species.save_species(session, "Boiga_dendrophila", genus="Colubrid")
        sites.save_site(session, "quezon", utc_offset="+08:00", clock_correction_seconds=-60)
    for colour in ("red", "green", "blue"):
        _photo(photos_root / "survey" / "quezon" / f"{colour}.jpg", colour)
        _photo(photos_root / "survey" / "samar" / "cam2" / f"{colour}.jpg", colour, "+09:00")
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "survey", threshold=0.7).id
    scan_and_score(settings, job_id)
    return job_id


def _by_path(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["rel_path"]: r for r in rows}


def test_routing_rollup_sites_and_times(db_url, make_settings, photos_root, tmp_path):
    settings = make_settings(db_url, venom_alert=0.3)
    job_id = _scored_job(settings, tmp_path, photos_root)
    with session_scope(settings.db_url) as session:
        parsed = species.get_species(session, "Boiga_dendrophila")  # added at registration
        assert parsed.scientific_name == "Boiga dendrophila"
        rows, total = query_results(session, job_id, ResultFilters())
        assert total == 6
        rows_by = _by_path(rows)
        red, green = rows_by["quezon/red.jpg"], rows_by["quezon/green.jpg"]
        assert 0.5 < red["machine_confidence"] < 0.7  # the model gives what the test assumes
        # A cobra top-1: venom risk; not sure enough, and no genus is: the machine's label.
        assert red["venom_risk"] and "venomous_in_top_k:Naja_philippinensis" in red["review_reason"]
        assert (red["final_label"], red["final_source"]) == ("Naja_philippinensis", "machine")
        assert red["venomous_in_top_k"] == ["Naja_philippinensis"]
        # Two colubrids share the probability: the genus is sure, so it is the final label.
        assert (green["final_label"], green["final_source"]) == ("Colubrid", "rolled_up")
        assert green["machine_label"] == "Ptyas_carinata" and len(green["top_k"]) == 3
        assert not green["venom_risk"] and green["needs_review"]
        # Sites are first folders; times keep the camera's local clock.
        assert {r["site"] for r in rows} == {"quezon", "samar"}
        # quezon: no EXIF offset, the site's +08:00 and its -60 s clock correction.
        assert red["captured_at"] == "2024-05-01T21:29:00+08:00"
        # samar: not in the site table; the photo's own offset, no correction.
        assert rows_by["samar/cam2/red.jpg"]["captured_at"] == "2024-05-01T21:30:00+09:00"
        image = session.scalar(select(Image).where(Image.path.endswith("samar/cam2/red.jpg")))
        assert image is not None and image.exif_datetime_raw == "2024:05:01 21:30:00"
        assert image.captured_at is not None and image.captured_at.hour == 12  # the UTC instant

        # The queue serves venom risk first.
        first = next_item(session, "ana")
        assert first is not None and first.venom_risk


def test_final_labels_follow_the_current_human_decision(
    db_url, make_settings, photos_root, tmp_path
):
    settings = make_settings(db_url, venom_alert=0.3)
    job_id = _scored_job(settings, tmp_path, photos_root)
    with session_scope(settings.db_url) as session:
        rows = _by_path(query_results(session, job_id, ResultFilters())[0])
        ids = {path: r["image_id"] for path, r in rows.items()}
        now = utcnow()

        def note(path: str, decision: Decision, label: str | None, minutes: int, **kw: Any) -> None:
            session.add(
                Annotation(
                    image_id=ids[path], reviewer="ana", decision=decision, label=label,
                    created_at=now + timedelta(minutes=minutes), **kw,
                )
            )  # fmt: skip

        note("quezon/red.jpg", Decision.LABEL, "Ptyas_carinata", 1)
        note("quezon/red.jpg", Decision.SKIP, None, 2)  # a skip erases nothing
        note("quezon/green.jpg", Decision.LABEL, "Boiga_dendrophila", 1, undone_at=now)
        note("quezon/blue.jpg", Decision.UNUSABLE, None, 1)
        session.flush()

        rows = _by_path(query_results(session, job_id, ResultFilters())[0])
        red, green, blue = (rows[f"quezon/{c}.jpg"] for c in ("red", "green", "blue"))
        assert (red["final_label"], red["final_source"], red["reviewed_by"]) == (
            "Ptyas_carinata", "human", "ana",
        )  # fmt: skip
        assert red["machine_label"] == "Naja_philippinensis" and red["reviewed_at"]
        assert (green["final_label"], green["final_source"]) == ("Colubrid", "rolled_up")
        assert (blue["final_label"], blue["human_decision"]) == (None, "unusable")

        def paths(**filters: Any) -> set[str]:
            found, total = query_results(session, job_id, ResultFilters(**filters))
            assert total == len(found)
            return {r["rel_path"] for r in found}

        assert paths(final_label="Ptyas_carinata") == {"quezon/red.jpg"}
        assert paths(final_label="Colubrid") == {
            "quezon/green.jpg", "samar/cam2/green.jpg", "samar/cam2/blue.jpg",
        }  # fmt: skip
        assert paths(reviewed=True) == {"quezon/red.jpg", "quezon/blue.jpg"}
        assert len(paths(reviewed=False)) == 4
        assert paths(site="samar") == {f"samar/cam2/{c}.jpg" for c in ("red", "green", "blue")}

        out = io.StringIO()
        write_results(session, job_id, "csv", out)
        table = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert list(table[0]) == CSV_COLUMNS
        line = next(r for r in table if r["rel_path"] == "quezon/red.jpg")
        assert (line["final_label"], line["final_source"], line["reviewed_by"]) == (
            "Ptyas_carinata", "human", "ana",
        )  # fmt: skip
        assert line["captured_at"] == "2024-05-01T21:29:00+08:00"
        assert line["venomous_in_top_k"] == "Naja_philippinensis"
        items = session.scalars(select(ReviewItem)).all()
        assert all(item.reasons and item.reason == "; ".join(item.reasons) for item in items)
