"""MegaDetector 1.4 and Camtrap DP 1.0.2 exports, each checked by its format's rules."""

from __future__ import annotations

import copy
import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from frictionless import Package, system
from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from service import sites
from service.db import session_scope
from service.errors import BadInput
from service.formats import write_format
from service.review import decide, next_item
from tests.integration.test_field_results import _scored_job

SCHEMAS = Path("/work/shared/schemas/camtrap-dp-1.0.2")
if not SCHEMAS.is_dir():
    SCHEMAS = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "camtrap-dp-1.0.2"
REQUIRED_MD_KEYS = ("info", "images", "detection_categories")
TYPICAL_MD_KEYS = (
    "classification_categories", "classification_category_descriptions",
)  # fmt: skip


def megadetector_errors(d: Any) -> list[str]:
    """Every rule of megadetector.postprocessing.validate_batch_results (10.0), for images."""
    errors: list[str] = []
    if not isinstance(d, dict):
        return ["not a dict"]
    for key in REQUIRED_MD_KEYS:
        if key not in d:
            errors.append(f"missing {key}")
    info = d.get("info")
    if not isinstance(info, dict) or "format_version" not in info:
        return [*errors, "no format_version"]
    version = float(info["format_version"])
    if version < 1.3:
        errors.append("format older than 1.3")
    if version >= 1.6 and not isinstance(info["format_version"], str):
        errors.append("format_version is not a string")
    for field in ("detection_categories", "classification_categories"):
        for cid, name in d.get(field, {}).items():
            if not isinstance(cid, str) or not cid.isdigit() or not isinstance(name, str):
                errors.append(f"bad {field} entry {cid!r}: {name!r}")
    if not isinstance(d.get("images"), list):
        return [*errors, "images is not a list"]
    for n, im in enumerate(d["images"]):
        if not isinstance(im, dict) or "file" not in im:
            errors.append(f"image {n} without a file")
            continue
        for det in im.get("detections") or []:
            if not {"category", "conf", "bbox"} <= set(det) or not isinstance(det["conf"], float):
                errors.append(f"{im['file']}: bad detection {det}")
            elif det["category"] not in d["detection_categories"]:
                errors.append(f"{im['file']}: unmapped category")
            for c in det.get("classifications") or []:
                if not isinstance(c[0], str) or c[0] not in d["classification_categories"]:
                    errors.append(f"{im['file']}: unmapped classification {c[0]!r}")
                elif not c[0].isdigit() or not isinstance(c[1], (float, int)):
                    errors.append(f"{im['file']}: bad classification {c}")
        if "failure" in im and im["failure"] is not None:
            if not isinstance(im["failure"], str) or im.get("detections") is not None:
                errors.append(f"{im['file']}: a failure with detections")
        elif not isinstance(im.get("detections"), list):
            errors.append(f"{im['file']}: detections is not a list")
    errors += [f"non-standard key {k}" for k in d if k not in REQUIRED_MD_KEYS + TYPICAL_MD_KEYS]
    return errors


def _export(settings: Any, job_id: int, fmt: str) -> bytes:
    out = io.BytesIO()
    with session_scope(settings.db_url) as session:
        write_format(session, job_id, fmt, out)
    return out.getvalue()


def test_megadetector_output_keeps_every_rule(db_url, make_settings, photos_root, tmp_path):
    settings = make_settings(db_url, venom_alert=0.3)
    (photos_root / "survey" / "quezon").mkdir(parents=True)
    (photos_root / "survey" / "quezon" / "broken.jpg").write_bytes(b"not a jpeg")
    job_id = _scored_job(settings, tmp_path, photos_root)
    with session_scope(settings.db_url) as session:
        item = next_item(session, "ana")
        assert item is not None
        decide(session, item.id, "ana", "label", "Boiga_dendrophila")
    d = json.loads(_export(settings, job_id, "megadetector"))
    # The non-standard keys MegaDetector tolerates with a warning are not written at all.
    assert megadetector_errors(d) == []
    assert d["info"]["format_version"] == "1.4"
    by_file = {im["file"]: im for im in d["images"]}
    assert (
        by_file["quezon/broken.jpg"]["failure"]
        and by_file["quezon/broken.jpg"]["detections"] is None
    )
    names = d["classification_categories"]
    green = by_file["quezon/green.jpg"]["detections"][0]
    assert (
        green["bbox"] == [0.0, 0.0, 1.0, 1.0]
        and d["detection_categories"][green["category"]] == "animal"
    )
    assert names[green["classifications"][0][0]] == "Ptyas_carinata"
    reviewed = [im for im in d["images"] if im.get("detections")
                and names[im["detections"][0]["classifications"][0][0]] == "Boiga_dendrophila"
                and im["detections"][0]["classifications"][0][1] == 1.0]  # fmt: skip
    assert len(reviewed) == 1  # the human's label leads, at 1.0
    assert megadetector_errors({**d, "info": {"format_version": 1.2}})  # the checker can fail


def _validate_camtrap(folder: Path) -> None:
    """The package against the vendored Camtrap DP 1.0.2 schemas, offline."""
    descriptor = json.loads((folder / "datapackage.json").read_text())
    profile = json.loads((SCHEMAS / "camtrap-dp-profile.json").read_text())
    # The profile's own rules (its allOf[1]); the generic Data Package and GeoJSON schemas it
    # references are online-only, and frictionless checks the package structure below.
    camtrap_rules = {**profile["allOf"][1], "$defs": profile["$defs"]}
    geojson = Resource.from_contents(
        {"type": "object", "required": ["type", "coordinates"]}, default_specification=DRAFT4
    )  # a stand-in: the real GeoJSON schema is online only
    registry = Registry().with_resource("http://json.schemastore.org/geojson.json", geojson)
    validator = Draft4Validator(camtrap_rules, registry=registry)
    errors = [e.message for e in validator.iter_errors(descriptor)]
    assert errors == []
    local = copy.deepcopy(descriptor)
    local.pop("profile")
    for resource in local["resources"]:
        resource["schema"] = str(SCHEMAS / f"{resource['name']}-table-schema.json")
    (folder / "local.json").write_text(json.dumps(local))
    with system.use_context(trusted=True):
        report = Package(str(folder / "local.json")).validate()
    assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])


def test_camtrap_dp_package_validates(db_url, make_settings, photos_root, tmp_path):
    settings = make_settings(db_url, venom_alert=0.3)
    job_id = _scored_job(settings, tmp_path, photos_root)
    with pytest.raises(BadInput) as missing:  # no site has coordinates yet
        _export(settings, job_id, "camtrap-dp")
    assert missing.value.details == {"missing": ["quezon: coordinates", "samar: coordinates"]}
    with session_scope(settings.db_url) as session:
        sites.save_site(session, "quezon", latitude=14.6, longitude=121.0)
        sites.save_site(session, "samar", latitude=12.0, longitude=125.0)
    archive = zipfile.ZipFile(io.BytesIO(_export(settings, job_id, "camtrap-dp")))
    folder = tmp_path / "package"
    archive.extractall(folder)
    _validate_camtrap(folder)
    with (folder / "observations.csv").open(newline="") as fh:
        observations = list(csv.DictReader(fh))
    assert len(observations) == 6  # one media-level observation per photo
    kinds = {(o["scientificName"], o["classificationMethod"]) for o in observations}
    assert kinds == {("Naja philippinensis", "machine"), ("Colubrid", "machine")}
    rolled = [o for o in observations if o["scientificName"] == "Colubrid"]
    assert {o["observationComments"] for o in rolled} == {"genus rollup"}
    deployments = (folder / "deployments.csv").read_text()
    assert "quezon,quezon,quezon,14.6,121.0,,2024-05-01T21:29:00+08:00" in deployments
