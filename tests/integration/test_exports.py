"""Dataset exports: leak-free splits, provenance, exclusions, the card, immutability."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.db import session_scope
from service.exports import (
    HUMAN,
    MACHINE,
    Candidate,
    ExportOptions,
    create_export,
    frozen_test_set,
    pin_test_set,
    plan_splits,
    read_manifest,
    run_export,
)
from service.jobs import create_job
from service.models import Annotation, DatasetExport, Decision, ExportStatus, Image, utcnow
from service.registry import add_model
from service.settings import Settings
from tests.support.models import make_model_folder
from tests.support.photos import write_photo
from tests.support.scoring import scan_and_score

COLOURS = ("red", "green", "blue")


def score_folder(settings: Settings, folder: str) -> dict[str, int]:
    """Scan and score a folder in-process; returns {rel_path: image id}."""
    from service.models import JobImage

    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, folder).id
    scan_and_score(settings, job_id)
    with session_scope(settings.db_url) as session:
        rows = session.execute(
            select(JobImage.rel_path, JobImage.image_id).where(JobImage.job_id == job_id)
        ).all()
    return {rel: image_id for rel, image_id in rows}


def make_survey(root: Path, sites: int = 6, per_colour: int = 3, seed: int = 0) -> Path:
    """sites x colours x per_colour distinct photos: site<i>/<colour>_<n>.png."""
    n = seed
    for s in range(sites):
        for colour in COLOURS:
            for k in range(per_colour):
                n += 1
                write_photo(root / f"site{s}" / f"{colour}_{k}.png", colour, seed=n)
    return root


def annotate(
    settings: Settings,
    image_id: int,
    decision: Decision = Decision.LABEL,
    label: str | None = None,
    *,
    undone: bool = False,
    minutes_ago: float = 0.0,
) -> None:
    with session_scope(settings.db_url) as session:
        at = utcnow() - timedelta(minutes=minutes_ago)
        session.add(
            Annotation(
                image_id=image_id,
                reviewer="ana",
                decision=decision,
                label=label,
                created_at=at,
                undone_at=at + timedelta(seconds=1) if undone else None,
            )
        )


def label_all(settings: Settings, images: dict[str, int]) -> None:
    for rel, image_id in images.items():
        annotate(settings, image_id, label=f"{Path(rel).name.split('_')[0]}_snake")


def export(settings: Settings, **options: Any) -> tuple[Path, list[dict[str, str]], dict[str, Any]]:
    with session_scope(settings.db_url) as session:
        export_id = create_export(session, ExportOptions(**options), created_by="test").id
    row = run_export(settings, export_id)
    assert row.status == ExportStatus.DONE and row.path
    folder = Path(row.path)
    return folder, read_manifest(folder), json.loads((folder / "card.json").read_text())


def _env(url: str, make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    settings = make_settings(url, review_threshold=0.5)
    model = make_model_folder(tmp_path / "m", labels=[f"{c}_snake" for c in COLOURS])
    with session_scope(settings.db_url) as session:
        add_model(session, settings, model, activate=True)
    return settings


@pytest.fixture()
def env(db_url: str, make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    """Both databases: for the tests whose queries matter."""
    return _env(db_url, make_settings, tmp_path)


@pytest.fixture()
def lite(sqlite_url: str, make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    """SQLite only: for the tests about files and splits."""
    return _env(sqlite_url, make_settings, tmp_path)


def test_export_layout_splits_and_card(env: Settings, photos_root: Path) -> None:
    images = score_folder(env, str(make_survey(photos_root / "survey")))
    label_all(env, images)
    folder, rows, card = export(env, min_per_class=2, seed=3)

    assert folder.parent == env.data_path / "exports" and folder.name.startswith("1-")
    assert len(rows) == card["total"] == len(images) == 54
    # No content and no site in two splits.
    assert len({r["sha256"] for r in rows}) == len(rows)
    sites = {r["site"]: {x["split"] for x in rows if x["site"] == r["site"]} for r in rows}
    assert all(len(splits) == 1 for splits in sites.values()), sites
    assert card["split_mode"] == "site-grouped"
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    # The card's counts are the folder's counts.
    on_disk = Counter(
        (p.parent.parent.name, p.parent.name) for p in folder.glob("*/*/*") if p.is_file()
    )
    for label, per in card["classes"].items():
        for split in ("train", "val", "test"):
            assert per[split] == on_disk[(split, label)]
            assert per[split] == sum(1 for r in rows if r["label"] == label and r["split"] == split)
    assert card["splits"] == dict(Counter(r["split"] for r in rows)) | card["splits"]
    assert json.loads((folder / "class_map.json").read_text()) == {
        "0": "blue_snake",
        "1": "green_snake",
        "2": "red_snake",
    }
    row = rows[0]
    assert row["source"] == HUMAN and row["annotator"] == "ana" and row["export_id"] == "1"
    assert Path(row["original_path"]).is_file() and (folder / row["path"]).is_file()
    assert "Dataset export 1" in (folder / "README.md").read_text()
    with session_scope(env.db_url) as session:
        saved = session.scalars(select(DatasetExport)).one()
        assert saved.counts and saved.counts["total"] == 54 and saved.counts["splits"]


def test_export_is_immutable_and_versioned(lite: Settings, photos_root: Path) -> None:
    images = score_folder(lite, str(make_survey(photos_root / "s", sites=3, per_colour=2)))
    label_all(lite, images)
    first, rows, _ = export(lite, min_per_class=1)
    for path in [first, *first.rglob("*")]:
        assert not path.stat().st_mode & 0o222, path  # nothing writable, folders included
    assert not any(p.name.startswith(".incoming") for p in first.parent.iterdir())
    second, rows2, _ = export(lite, min_per_class=1)
    assert second != first and second.name.startswith("2-")
    # The same labels and seed give the same split.
    assert {r["sha256"]: r["split"] for r in rows} == {r["sha256"]: r["split"] for r in rows2}


def test_duplicates_and_conflicts(lite: Settings, photos_root: Path) -> None:
    survey = make_survey(photos_root / "s", sites=3, per_colour=2)
    shutil.copyfile(survey / "site0" / "red_0.png", survey / "site2" / "copy_of_red.png")
    shutil.copyfile(survey / "site0" / "green_0.png", survey / "site1" / "green_copy.png")
    images = score_folder(lite, str(survey))
    label_all(lite, {k: v for k, v in images.items() if "copy" not in k})
    annotate(lite, images["site2/copy_of_red.png"], label="red_snake")  # agrees
    annotate(lite, images["site1/green_copy.png"], label="blue_snake")  # disagrees
    _, rows, card = export(lite, min_per_class=1)

    shas = [r["sha256"] for r in rows]
    assert len(shas) == len(set(shas)) == 18 - 1  # the red copy once, both greens dropped
    assert not any(r["original_path"].endswith("site0/green_0.png") for r in rows)
    assert card["excluded"]["duplicate_files"] == 1
    assert card["excluded"]["conflicting_human_labels"] == 2


def test_human_labels_beat_predictions_and_exclusions(env: Settings, photos_root: Path) -> None:
    images = score_folder(env, str(make_survey(photos_root / "s", sites=3, per_colour=2)))
    ids = sorted(images.items())
    red0, red1, red2 = [v for k, v in ids if "red" in k][:3]
    annotate(env, red0, label="green_snake")  # a human correction beats the model
    annotate(env, red1, label="red_snake", minutes_ago=5)
    annotate(env, red1, label="blue_snake", undone=True)  # undone: the earlier label stands
    annotate(env, red2, Decision.UNUSABLE)  # never a training label, not even the model's
    blue = [v for k, v in ids if "blue" in k]
    annotate(env, blue[0], Decision.UNKNOWN)
    annotate(env, blue[1], label="blue_snake", undone=True)  # only an undone label: nothing

    _, rows, card = export(env, min_per_class=1)
    by_id = {int(r["image_id"]): r for r in rows}
    assert set(by_id) == {red0, red1}
    assert by_id[red0]["label"] == "green_snake" and by_id[red1]["label"] == "red_snake"

    _, rows, card = export(env, min_per_class=1, include_confident=0.5)
    by_id = {int(r["image_id"]): r for r in rows}
    assert by_id[red0]["label"] == "green_snake" and by_id[red0]["source"] == HUMAN
    assert red2 not in by_id and blue[0] not in by_id  # unusable / unknown: excluded
    assert blue[1] in by_id and by_id[blue[1]]["source"] == MACHINE
    machine = [r for r in rows if r["source"] == MACHINE]
    assert machine and all(r["split"] == "train" for r in machine)
    assert all(r["annotator"].startswith("model:") and r["confidence"] for r in machine)
    assert card["excluded"]["human_unusable"] == 1 and card["excluded"]["human_unknown"] == 1


def test_min_per_class_drops_small_classes(lite: Settings, photos_root: Path) -> None:
    images = score_folder(lite, str(make_survey(photos_root / "s", sites=3, per_colour=2)))
    label_all(lite, {k: v for k, v in images.items() if "blue" not in k})
    blue = [v for k, v in images.items() if "blue" in k]
    for image_id in blue[:2]:
        annotate(lite, image_id, label="blue_snake")
    folder, rows, card = export(lite, min_per_class=3)
    assert card["dropped_classes"] == {"blue_snake": 2}
    assert {r["label"] for r in rows} == {"red_snake", "green_snake"}
    assert not (folder / "train" / "blue_snake").exists()


def test_single_site_falls_back_to_image_stratification(lite: Settings, photos_root: Path) -> None:
    folder = photos_root / "one"
    for i in range(30):
        write_photo(folder / f"{COLOURS[i % 3]}_{i}.png", COLOURS[i % 3], seed=100 + i)
    label_all(lite, score_folder(lite, str(folder)))
    _, rows, card = export(lite, min_per_class=1, val_fraction=0.2, test_fraction=0.2)
    assert card["split_mode"] == "image-stratified"
    assert {r["site"] for r in rows} == {"one"}
    per = Counter((r["label"], r["split"]) for r in rows)
    for colour in COLOURS:  # 10 per class: 6/2/2
        assert [per[(f"{colour}_snake", s)] for s in ("train", "val", "test")] == [6, 2, 2]


def test_frozen_test_set_stays_in_test(lite: Settings, photos_root: Path) -> None:
    images = score_folder(lite, str(make_survey(photos_root / "s", sites=6, per_colour=2)))
    label_all(lite, images)
    _, rows, _ = export(lite, min_per_class=1, seed=0)
    with session_scope(lite.db_url) as session:
        test_set = frozen_test_set(session, lite)
    assert test_set is not None and test_set.export_id == 1
    frozen = set(test_set.sha256)
    assert frozen == {r["sha256"] for r in rows if r["split"] == "test"}
    _, rows2, card = export(lite, min_per_class=1, seed=7)  # another seed, same test images
    assert frozen <= {r["sha256"] for r in rows2 if r["split"] == "test"}
    assert card["frozen_test_images"] == len(frozen)
    with session_scope(lite.db_url) as session:
        pinned = pin_test_set(session, lite, 2)
    assert pinned.pinned and pinned.export_id == 2


def test_exports_never_change_the_originals(lite: Settings, photos_root: Path) -> None:
    survey = make_survey(photos_root / "s", sites=2, per_colour=2)
    images = score_folder(lite, str(survey))
    label_all(lite, images)
    modes = {p: p.stat().st_mode for p in survey.rglob("*") if p.is_file()}
    folder, rows, card = export(lite, min_per_class=1)
    assert {p: p.stat().st_mode for p in modes} == modes  # writable originals stay writable
    assert card["files"]["hard_links"] == 0  # writable originals are copied, not linked
    exported = folder / rows[0]["path"]
    assert not os.path.samefile(rows[0]["original_path"], exported)
    assert not exported.stat().st_mode & 0o222


def test_read_only_originals_are_hard_linked(lite: Settings, photos_root: Path) -> None:
    survey = make_survey(photos_root / "s", sites=2, per_colour=2)
    for path in survey.rglob("*"):
        if path.is_file():
            path.chmod(0o444)
    images = score_folder(lite, str(survey))
    label_all(lite, images)
    folder, rows, card = export(lite, min_per_class=1)
    assert card["files"]["hard_links"] == len(rows)  # same filesystem, nobody may write
    assert os.path.samefile(rows[0]["original_path"], folder / rows[0]["path"])
    assert Path(rows[0]["original_path"]).stat().st_mode & 0o777 == 0o444


def _cand(sha: str, label: str, site: str, source: str = HUMAN) -> Candidate:
    return Candidate(0, f"/x/{sha}", sha, label, source, "a", "", site, f"{site}/{sha}.png")


def test_plan_splits_keeps_sites_whole_and_approaches_fractions() -> None:
    cands = [
        _cand(f"{site}-{label}-{i}", label, f"site{site}")
        for site in range(10)
        for label in ("a", "b")
        for i in range(5 + site % 3)
    ]
    cands.append(_cand("m1", "a", "site0", MACHINE))
    cands.append(_cand("m2", "a", "new-site", MACHINE))
    plan = plan_splits(cands, ExportOptions(val_fraction=0.2, test_fraction=0.2, seed=1))
    site_splits: dict[str, set[str]] = {}
    for c in cands:
        if c.sha256 in plan.split_of:
            site_splits.setdefault(c.site, set()).add(plan.split_of[c.sha256])
    assert all(len(s) == 1 for s in site_splits.values())
    counts = Counter(plan.split_of[c.sha256] for c in cands if c.source == HUMAN)
    total = sum(counts.values())
    assert 0.1 <= counts["val"] / total <= 0.3 and 0.1 <= counts["test"] / total <= 0.3
    assert plan.split_of["m2"] == "train"
    assert ("m1" in plan.held_out) == (plan.split_of["0-a-0"] != "train")
    again = plan_splits(cands, ExportOptions(val_fraction=0.2, test_fraction=0.2, seed=1))
    assert again.split_of == plan.split_of


def test_image_without_a_file_is_left_out(lite: Settings, photos_root: Path) -> None:
    images = score_folder(lite, str(make_survey(photos_root / "s", sites=2, per_colour=2)))
    label_all(lite, images)
    with session_scope(lite.db_url) as session:
        gone = session.get(Image, images["site0/red_0.png"])
        assert gone is not None
        Path(gone.path).unlink()
    _, rows, card = export(lite, min_per_class=1)
    assert len(rows) == len(images) - 1 and card["excluded"]["file_missing"] == 1


def test_manifest_cells_a_spreadsheet_would_run_are_quoted(lite: Settings, photos_root: Path):
    images = score_folder(lite, str(make_survey(photos_root / "s", sites=3, per_colour=1)))
    formulas = {"red": "=1+2", "green": "+cmd|calc!A0", "blue": "@SUM(1)"}
    for rel, image_id in images.items():
        annotate(lite, image_id, label=formulas[Path(rel).name.split("_")[0]])
    folder, rows, _ = export(lite, min_per_class=1)

    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        written = [row["label"] for row in csv.DictReader(fh)]
    assert sorted(set(written)) == sorted("'" + label for label in formulas.values())
    assert {row["label"] for row in rows} == set(formulas.values())  # read back as labelled
