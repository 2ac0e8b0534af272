"""The scan: walk a job's folder, hash and probe each file, record Image rows, cut chunks."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.db import session_scope
from service.imaging import ImageError, is_image_name, probe, sha256_file
from service.jobs import FINISHED, get_job, maybe_finish, transition
from service.models import Chunk, Image, ItemStatus, JobImage, JobStatus, ScanJob, utcnow
from service.paths import is_inside
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class FileRecord:
    """What the scan learned about one file, gathered outside any transaction."""

    path: str
    rel_path: str
    sha256: str | None = None
    size_bytes: int | None = None
    mtime: float | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    captured_at: datetime | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    failure_reason: str | None = None
    failure_detail: str | None = None


def batched(items: Iterable[T], size: int) -> Iterator[tuple[T, ...]]:
    """itertools.batched for Python 3.11."""
    iterator = iter(items)
    while batch := tuple(islice(iterator, size)):
        yield batch


def iter_image_files(folder: Path, recursive: bool, extensions: list[str]) -> Iterator[Path]:
    """Image files under `folder` in a stable order; hidden files and folders are skipped.

    Symlinked folders are not followed (a loop or an escape cannot start here); symlinked
    files are yielded and checked by `inspect_file`.
    """
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.startswith(".") and is_image_name(path, extensions):
                yield path


def inspect_file(path: Path, folder: Path, settings: Settings) -> FileRecord:
    """Hash and probe one file; problems become a failure reason, never an exception."""
    record = FileRecord(path=str(path), rel_path=str(path.relative_to(folder)))
    if not is_inside(path, folder):
        record.failure_reason = "outside_folder"
        record.failure_detail = "the file is a link that resolves outside the job's folder"
        return record
    try:
        stat = path.stat()
        record.size_bytes, record.mtime = stat.st_size, stat.st_mtime
        if stat.st_size <= settings.max_file_bytes:
            record.sha256 = sha256_file(path)
        info = probe(path, settings.max_image_pixels, settings.max_file_bytes)
    except ImageError as exc:
        record.failure_reason, record.failure_detail = exc.reason, exc.message
        return record
    except OSError as exc:
        record.failure_reason, record.failure_detail = "unreadable", str(exc)
        return record
    record.width, record.height, record.format = info.width, info.height, info.format
    record.captured_at, record.gps_lat, record.gps_lon = (
        info.captured_at,
        info.gps_lat,
        info.gps_lon,
    )
    return record


def record_files(session: Session, job: ScanJob, records: list[FileRecord]) -> int:
    """Upsert Image rows and add this job's JobImage rows; returns how many were new."""
    by_key: dict[tuple[str, str | None], Image] = {}
    paths = [r.path for r in records]
    for image in session.scalars(select(Image).where(Image.path.in_(paths))):
        by_key[(image.path, image.sha256)] = image
    now = utcnow()
    for record in records:
        image = by_key.get((record.path, record.sha256)) or Image(
            path=record.path, sha256=record.sha256, created_at=now
        )
        if image.id is None:
            session.add(image)
            by_key[(record.path, record.sha256)] = image
        image.size_bytes, image.mtime = record.size_bytes, record.mtime
        image.width, image.height, image.format = record.width, record.height, record.format
        image.captured_at, image.gps_lat, image.gps_lon = (
            record.captured_at,
            record.gps_lat,
            record.gps_lon,
        )
        image.updated_at = now
    session.flush()
    image_ids = {by_key[(r.path, r.sha256)].id: r for r in records}
    known = set(
        session.scalars(
            select(JobImage.image_id).where(
                JobImage.job_id == job.id, JobImage.image_id.in_(list(image_ids))
            )
        )
    )
    new_failed = 0
    for image_id, record in image_ids.items():
        if image_id in known:
            continue
        failed = record.failure_reason is not None
        new_failed += failed
        session.add(
            JobImage(
                job_id=job.id,
                image_id=image_id,
                rel_path=record.rel_path,
                status=ItemStatus.FAILED if failed else ItemStatus.PENDING,
                failure_reason=record.failure_reason,
                failure_detail=record.failure_detail,
            )
        )
    added = len(image_ids) - len(known)
    session.execute(
        update(ScanJob)
        .where(ScanJob.id == job.id)
        .values(total=ScanJob.total + added, failed=ScanJob.failed + new_failed)
    )
    return added


def cut_chunks(session: Session, job: ScanJob, chunk_size: int, final: bool) -> list[int]:
    """Group the job's unchunked pending images into chunks (a partial one only when final)."""
    pending = list(
        session.scalars(
            select(JobImage.id)
            .where(
                JobImage.job_id == job.id,
                JobImage.chunk_id.is_(None),
                JobImage.status == ItemStatus.PENDING,
            )
            .order_by(JobImage.id)
        )
    )
    next_seq = (session.scalar(select(func.max(Chunk.seq)).where(Chunk.job_id == job.id)) or 0) + 1
    chunk_ids = []
    for group in batched(pending, chunk_size):
        if len(group) < chunk_size and not final:
            break
        chunk = Chunk(job_id=job.id, seq=next_seq, size=len(group), enqueued_at=utcnow())
        session.add(chunk)
        session.flush()
        session.execute(update(JobImage).where(JobImage.id.in_(group)).values(chunk_id=chunk.id))
        chunk_ids.append(chunk.id)
        next_seq += 1
    if chunk_ids:
        session.execute(
            update(ScanJob)
            .where(ScanJob.id == job.id)
            .values(chunks_total=ScanJob.chunks_total + len(chunk_ids))
        )
    return chunk_ids


def run_scan(settings: Settings, job_id: int, enqueue: Callable[[list[int]], None]) -> None:
    """Scan a job's folder in batches: each batch commits, then its full chunks are enqueued.

    Scoring starts while the scan goes on. The scan is resumable: running it again after a
    crash skips files it already recorded. It owns several short transactions on purpose,
    so that hashing never holds a database lock and workers see chunks early.
    """
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        if job.status in FINISHED or not transition(session, job, JobStatus.SCANNING):
            log.info("job %s is %s; scan skipped", job_id, job.status.value)
            return
        folder, recursive, extensions = Path(job.folder), job.recursive, list(job.extensions)
    if not folder.is_dir():
        with session_scope(settings.db_url) as session:
            transition(
                session,
                get_job(session, job_id),
                JobStatus.FAILED,
                error=f"folder {folder} no longer exists",
            )
        return
    files = iter_image_files(folder, recursive, extensions)
    for batch in batched(files, settings.chunk_size):
        records = [inspect_file(path, folder, settings) for path in batch]
        with session_scope(settings.db_url) as session:
            job = get_job(session, job_id)
            if job.status != JobStatus.SCANNING:
                return  # cancelled while scanning
            record_files(session, job, records)
            chunk_ids = cut_chunks(session, job, settings.chunk_size, final=False)
        enqueue(chunk_ids)
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        if job.status != JobStatus.SCANNING:
            return
        chunk_ids = cut_chunks(session, job, settings.chunk_size, final=True)
        job.scan_complete = True
        session.flush()
        transition(session, job, JobStatus.SCORING)
        maybe_finish(session, job_id)
    enqueue(chunk_ids)
