"""The field's exchange formats for a job's results: MegaDetector batch JSON and Camtrap DP.

All stream the rows of `service.results.iter_results` (a server-side cursor), so memory
stays flat whatever the job's size; what is kept is per site or per category, never per
image. `stream_format` hands the bytes out as they are written, for downloads.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath
from typing import IO, Any, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.errors import BadInput
from service.field_models import Site, Species
from service.jobs import get_job
from service.models import Image, JobImage, utcnow
from service.results import iter_results, result_steps

# format -> (media type, file suffix)
FORMATS = {
    "csv": ("text/csv", "csv"),
    "json": ("application/json", "json"),
    "megadetector": ("application/json", "megadetector.json"),
    "camtrap-dp": ("application/zip", "camtrap-dp.zip"),
}
CAMTRAP = "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0.2/"
MD_ANIMAL = "1"
SPOOL_BYTES = 8 * 1024 * 1024
CHUNK_BYTES = 64 * 1024
_MEDIATYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff", "WEBP": "image/webp"}


def write_format(session: Session, job_id: int, fmt: str, out: IO[bytes]) -> None:
    """Every row of a job in one format, to a binary stream. Unknown job: NotFound first."""
    for chunk in stream_format(session, job_id, fmt):
        out.write(chunk)


def stream_format(
    session: Session, job_id: int, fmt: str, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[bytes]:
    """Every row of a job in one format, as chunks of about `chunk_bytes`.

    Nothing is held back: the first chunk (the header) comes before any row is read, so a
    download starts at once. Unknown job or format, and a Camtrap DP export that lacks a
    site's coordinates, raise before the first chunk.
    """
    if fmt not in FORMATS:
        raise BadInput(f"unknown results format {fmt!r}", {"formats": list(FORMATS)})
    get_job(session, job_id)
    sink = _Sink()
    sent = False
    for _ in _steps(session, job_id, fmt, sink):
        if sink.size >= chunk_bytes or (sink.size and not sent):
            sent = True
            yield sink.take()
    if sink.size:
        yield sink.take()


def _steps(session: Session, job_id: int, fmt: str, sink: _Sink) -> Iterator[None]:
    out = cast(IO[bytes], sink)  # a write-only stream: all that the writers use of IO
    if fmt == "camtrap-dp":
        yield from camtrap_dp_steps(session, job_id, out)
        return
    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    if fmt == "megadetector":
        yield from megadetector_steps(session, job_id, text)
    else:
        yield from result_steps(session, job_id, fmt, text)
    text.flush()


class _Sink(io.RawIOBase):
    """A write-only binary stream whose bytes are taken out as they come (for streaming).

    It counts what was written (zipfile asks `tell()`) and cannot seek, so zipfile writes
    a streamable archive (sizes after each entry's data).
    """

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []
        self.size = 0
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self.size += len(chunk)
        self._written += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._written

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts, self.size = [], 0
        return data


# ---------------------------------------------------------------- MegaDetector 1.4


def write_megadetector(session: Session, job_id: int, out: IO[str]) -> None:
    """MegaDetector batch output (format 1.4) to a text stream; see megadetector_steps."""
    for _ in megadetector_steps(session, job_id, out):
        pass


def megadetector_steps(session: Session, job_id: int, out: IO[str]) -> Iterator[None]:
    """MegaDetector batch output (format 1.4) for Timelapse and AddaxAI: one whole-image
    `animal` detection per photo with the classifications; `failure` for failed files.

    The final label leads the classifications: a human's at 1.0, else the machine's top-k.
    Images go first so that categories met on the way (human labels) can still be listed.
    """
    job = get_job(session, job_id)
    model = job.model_version
    categories: dict[str, str] = {str(i): label for i, label in enumerate(model.labels)}
    ids = {label: cid for cid, label in categories.items()}

    def cid(label: str) -> str:
        if label not in ids:
            ids[label] = str(len(categories))
            categories[ids[label]] = label
        return ids[label]

    out.write('{"images": [')
    yield
    for n, row in enumerate(iter_results(session, job_id)):
        image: dict[str, Any] = {"file": row["rel_path"]}
        if row["status"] == "failed":
            image.update(failure=row["failure_reason"] or "failed", detections=None)
        elif row["machine_label"] is None:
            image.update(failure="not scored", detections=None)
        elif row["human_decision"] == "unusable":
            image["detections"] = []
        else:
            machine = [(t["label"], float(t["confidence"])) for t in row["top_k"]]
            if row["final_source"] == "human":
                human = row["final_label"]
                machine = ([(human, 1.0)] if human else []) + [
                    (label, p) for label, p in machine if label != human
                ]
            image["detections"] = [
                {
                    "category": MD_ANIMAL,
                    "conf": float(row["machine_confidence"]),
                    "bbox": [0.0, 0.0, 1.0, 1.0],
                    "classifications": [[cid(label), round(p, 6)] for label, p in machine],
                }
            ]
        if row["captured_at"]:
            image["datetime"] = row["captured_at"]
        out.write(("," if n else "") + "\n" + json.dumps(image, ensure_ascii=False))
        yield
    info = {
        "format_version": "1.4",
        "detector": "none (whole-image classification)",
        "classifier": model.name,
        "classification_completion_time": utcnow().isoformat(timespec="seconds"),
        "classifier_metadata": {"model_version_id": model.id, "herpscore_job_id": job.id},
    }
    out.write("\n],\n")
    out.write(f'"detection_categories": {json.dumps({MD_ANIMAL: "animal"})},\n')
    out.write(f'"classification_categories": {json.dumps(categories, ensure_ascii=False)},\n')
    out.write(f'"info": {json.dumps(info, ensure_ascii=False)}\n}}\n')


# ---------------------------------------------------------------- Camtrap DP 1.0.2


@dataclass
class _Deployment:
    latitude: float
    longitude: float
    start: datetime | None = None
    end: datetime | None = None

    def saw(self, when: datetime) -> None:
        self.start = when if self.start is None or when < self.start else self.start
        self.end = when if self.end is None or when > self.end else self.end


@dataclass
class _Package:
    deployments: dict[str, _Deployment]
    taxa: set[str] = field(default_factory=set)
    skipped: int = 0


def _deployments(session: Session, job_id: int) -> dict[str, _Deployment]:
    """One deployment per site: its coordinates (the site table's, else its photos' mean GPS).

    Camtrap DP needs coordinates and timestamps with an offset: a site that lacks either
    is a BadInput naming what to set, before anything is written.
    """
    rows = session.execute(
        select(JobImage.site, func.avg(Image.gps_lat), func.avg(Image.gps_lon))
        .join(Image, Image.id == JobImage.image_id)
        .where(JobImage.job_id == job_id)
        .group_by(JobImage.site)
    ).all()
    table = {s.name: s for s in session.scalars(select(Site))}
    no_offset = set(
        session.scalars(
            select(JobImage.site)
            .join(Image, Image.id == JobImage.image_id)
            .where(
                JobImage.job_id == job_id,
                Image.captured_local.is_not(None),
                Image.captured_offset_minutes.is_(None),
            )
            .distinct()
        )
    )
    deployments, missing = {}, []
    for name, lat, lon in rows:
        site = table.get(name or "")
        if site is not None and site.latitude is not None and site.longitude is not None:
            lat, lon = site.latitude, site.longitude
        if lat is None or lon is None:
            missing.append(f"{name}: coordinates")
        if name in no_offset and (site is None or site.utc_offset_minutes is None):
            missing.append(f"{name}: UTC offset")
        if not missing:
            deployments[name or ""] = _Deployment(float(lat), float(lon))
    if missing:
        raise BadInput(
            "Camtrap DP needs every site's coordinates and UTC offset: set them with "
            "`herpscore sites set NAME --lat .. --lon .. --utc-offset +HH:MM`",
            {"missing": missing},
        )
    return deployments


def _camtrap_time(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def write_camtrap_dp(session: Session, job_id: int, out: IO[bytes]) -> None:
    """A Camtrap DP 1.0.2 package as a zip: media-level observations, one deployment per site."""
    for _ in camtrap_dp_steps(session, job_id, out):
        pass


def camtrap_dp_steps(session: Session, job_id: int, out: IO[bytes]) -> Iterator[None]:
    """write_camtrap_dp one step at a time (after each row and each copied block)."""
    job = get_job(session, job_id)
    package = _Package(_deployments(session, job_id))
    names = {s.label: s.scientific_name for s in session.scalars(select(Species))}
    # A zip takes one open entry at a time: observations wait in a spooled file (on disk
    # past a few MB) while media stream into the archive.
    with (
        zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, mode="w+", newline="") as spool,
    ):
        obs = csv.writer(spool)
        obs.writerow(OBSERVATION_COLUMNS)
        with archive.open("media.csv", "w") as media_raw:
            media_text = io.TextIOWrapper(media_raw, encoding="utf-8", newline="")
            media = csv.writer(media_text)
            media.writerow(MEDIA_COLUMNS)
            media_text.flush()
            yield
            for row in iter_results(session, job_id):
                _media_row(row, package, names, media, obs)
                yield
            media_text.flush()
        spool.seek(0)
        with archive.open("observations.csv", "w") as obs_raw:
            obs_text = io.TextIOWrapper(obs_raw, encoding="utf-8", newline="")
            while block := spool.read(CHUNK_BYTES):
                obs_text.write(block)
                yield
            obs_text.flush()
        archive.writestr("deployments.csv", _deployments_csv(package))
        archive.writestr("datapackage.json", json.dumps(_datapackage(job, package), indent=1))


# Every column of each Camtrap DP 1.0.2 table, in the schema's order (all are expected).
DEPLOYMENT_COLUMNS = [
    "deploymentID", "locationID", "locationName", "latitude", "longitude",
    "coordinateUncertainty", "deploymentStart", "deploymentEnd", "setupBy", "cameraID",
    "cameraModel", "cameraDelay", "cameraHeight", "cameraDepth", "cameraTilt", "cameraHeading",
    "detectionDistance", "timestampIssues", "baitUse", "featureType", "habitat",
    "deploymentGroups", "deploymentTags", "deploymentComments",
]  # fmt: skip
MEDIA_COLUMNS = [
    "mediaID", "deploymentID", "captureMethod", "timestamp", "filePath", "filePublic",
    "fileName", "fileMediatype", "exifData", "favorite", "mediaComments",
]  # fmt: skip
OBSERVATION_COLUMNS = [
    "observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd",
    "observationLevel", "observationType", "cameraSetupType", "scientificName", "count",
    "lifeStage", "sex", "behavior", "individualID", "individualPositionRadius",
    "individualPositionAngle", "individualSpeed", "bboxX", "bboxY", "bboxWidth", "bboxHeight",
    "classificationMethod", "classifiedBy", "classificationTimestamp",
    "classificationProbability", "observationTags", "observationComments",
]  # fmt: skip


def _cells(columns: list[str], **values: Any) -> list[Any]:
    return ["" if values.get(c) is None else values[c] for c in columns]


def _media_row(
    row: dict[str, Any], package: _Package, names: dict[str, str], media: Any, obs: Any
) -> None:
    if row["status"] != "scored" or not row["captured_at"]:
        package.skipped += 1  # Camtrap DP media need a timestamp; failed files have no media
        return
    when = datetime.fromisoformat(row["captured_at"])
    deployment_id = row["site"] or ""
    if when.tzinfo is None:  # checked up front: the site's offset exists
        raise BadInput(f"no UTC offset for {row['rel_path']}")
    package.deployments[deployment_id].saw(when)
    stamp = _camtrap_time(when)
    media_id = f"m{row['image_id']}"
    path = PurePosixPath(row["rel_path"])
    mediatype = _MEDIATYPES.get(path.suffix.lstrip(".").upper().replace("JPG", "JPEG"))
    media.writerow(
        _cells(
            MEDIA_COLUMNS, mediaID=media_id, deploymentID=deployment_id,
            captureMethod="activityDetection", timestamp=stamp, filePath=str(path),
            filePublic="false", fileName=path.name, fileMediatype=mediatype or "image/jpeg",
        )
    )  # fmt: skip
    human = row["final_source"] == "human"
    label = row["final_label"]
    if human and row["human_decision"] == "unusable":
        kind, scientific = "unclassified", ""
    elif label is None:
        kind, scientific = "unknown", ""
    else:
        kind, scientific = "animal", names.get(label) or label.replace("_", " ")
        package.taxa.add(scientific)
    classified_at = row["reviewed_at"] if human else None
    obs.writerow(
        _cells(
            OBSERVATION_COLUMNS, observationID=f"o{row['image_id']}", deploymentID=deployment_id,
            mediaID=media_id, eventStart=stamp, eventEnd=stamp, observationLevel="media",
            observationType=kind, scientificName=scientific,
            classificationMethod="human" if human else "machine",
            classifiedBy=row["reviewed_by"] if human
            else f"herpscore model version {row['model_version_id']}",
            classificationTimestamp=_camtrap_time(datetime.fromisoformat(classified_at))
            if classified_at else None,
            classificationProbability=None if human else row["machine_confidence"],
            observationComments="genus rollup" if row["final_source"] == "rolled_up" else None,
        )
    )  # fmt: skip


def _deployments_csv(package: _Package) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(DEPLOYMENT_COLUMNS)
    for name, d in sorted(package.deployments.items()):
        if d.start is None or d.end is None:
            continue  # a site without a single dated photo has no deployment to describe
        writer.writerow(
            _cells(
                DEPLOYMENT_COLUMNS, deploymentID=name, locationID=name, locationName=name,
                latitude=d.latitude, longitude=d.longitude,
                deploymentStart=_camtrap_time(d.start), deploymentEnd=_camtrap_time(d.end),
            )
        )  # fmt: skip
    return buffer.getvalue()


def _datapackage(job: Any, package: _Package) -> dict[str, Any]:
    used = [d for d in package.deployments.values() if d.start is not None]
    lats = [d.latitude for d in used] or [0.0]
    lons = [d.longitude for d in used] or [0.0]
    starts = [d.start for d in used if d.start] or [utcnow()]
    ends = [d.end for d in used if d.end] or [utcnow()]
    resources = [
        {
            "name": name,
            "path": f"{name}.csv",
            "profile": "tabular-data-resource",
            "format": "csv",
            "mediatype": "text/csv",
            "encoding": "utf-8",
            "schema": f"{CAMTRAP}{name}-table-schema.json",
        }
        for name in ("deployments", "media", "observations")
    ]
    return {
        "resources": resources,
        "profile": f"{CAMTRAP}camtrap-dp-profile.json",
        "name": f"herpscore-job-{job.id}",
        "created": utcnow().isoformat(timespec="seconds"),
        "title": f"herpscore job {job.id}: {PurePosixPath(job.folder).name}",
        "description": f"Photos under {job.folder}, scored by {job.model_version.name}; "
        f"{package.skipped} files without a usable capture time or failed are not included.",
        "contributors": [{"title": job.created_by or "herpscore", "role": "contributor"}],
        "project": {
            "title": PurePosixPath(job.folder).name,
            "samplingDesign": "opportunistic",
            "captureMethod": ["activityDetection"],
            "individualAnimals": False,
            "observationLevel": ["media"],
        },
        "spatial": {"type": "Polygon", "coordinates": [_box(lats, lons)]},
        "temporal": {
            "start": min(starts).date().isoformat(),
            "end": max(ends).date().isoformat(),
        },
        "taxonomic": [{"scientificName": name} for name in sorted(package.taxa)],
    }


def _box(lats: list[float], lons: list[float]) -> list[list[float]]:
    """A GeoJSON ring around the deployments."""
    west, east, south, north = min(lons), max(lons), min(lats), max(lats)
    return [[west, south], [east, south], [east, north], [west, north], [west, south]]
