"""The scan: walk a job's folder, hash and probe each file, record Image rows, cut chunks."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import TypeVar

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from service.db import insert_ignoring_conflicts, session_scope
from service.imaging import ImageError, is_image_name, probe, sha256_file
from service.jobs import FINISHED, get_job, maybe_finish, transition
from service.models import (
    Chunk,
    ChunkStatus,
    Image,
    ItemStatus,
    JobImage,
    JobStatus,
    ScanJob,
    utcnow,
)
from service.paths import is_inside, is_utf8, printable
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
SCAN_BATCH_MAX = 512  # files recorded per transaction once the first chunk is out
FIRST_CHUNK_FILES = 8  # a job's first chunks; later ones double up to settings.chunk_size
FIRST_CHUNKS = 2  # that many first chunks, each cut as soon as its files are scanned
# The final cut's halving pieces get no smaller than TAIL_MIN_FILES files or TAIL_MIN_BYTES,
# whichever is fewer files, and never below 2: eight small photos, but two 4 MB ones.
TAIL_MIN_FILES = 8
TAIL_MIN_BYTES = 8 * 1024 * 1024


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


def scan_batches(files: Iterable[Path], first: int) -> Iterator[tuple[Path, ...]]:
    """FIRST_CHUNKS small batches first, so that each first chunk is cut as soon as its own
    files are hashed; then doubling batches up to SCAN_BATCH_MAX, because every transaction
    costs round trips."""
    iterator = iter(files)
    size, done = first, 0
    while batch := tuple(islice(iterator, size)):
        yield batch
        done += 1
        if done >= FIRST_CHUNKS:
            size = min(size * 2, max(first, SCAN_BATCH_MAX))


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
    if not is_utf8(record.path):  # bytes from another encoding: unstorable, and unusable
        record.path, record.rel_path = printable(record.path), printable(record.rel_path)
        record.failure_reason = "undecodable_name"
        record.failure_detail = "the file name is not valid UTF-8: rename the file to score it"
        return record
    # The walk never enters a symlinked folder, so only a symlinked file can lead outside;
    # resolving every path would cost a fifth of the scan's time.
    if path.is_symlink() and not is_inside(path, folder):
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
    """Add Image rows for new (path, content) pairs and this job's JobImage rows, in bulk.

    Returns how many files were new to this job. Idempotent: a rescan after a crash adds
    nothing twice (JobImage is unique on (job, image)).
    """
    now = utcnow()
    paths = [r.path for r in records]

    def known_images() -> dict[tuple[str, str | None], int]:
        rows = session.execute(
            select(Image.path, Image.sha256, Image.id).where(Image.path.in_(paths))
        )
        return {(path, sha): image_id for path, sha, image_id in rows}

    ids = known_images()
    fresh = {(r.path, r.sha256): r for r in records if (r.path, r.sha256) not in ids}
    if fresh:
        insert_ignoring_conflicts(
            session,
            Image,
            [
                {
                    "path": r.path, "sha256": r.sha256, "size_bytes": r.size_bytes,
                    "mtime": r.mtime, "width": r.width, "height": r.height, "format": r.format,
                    "captured_at": r.captured_at, "gps_lat": r.gps_lat, "gps_lon": r.gps_lon,
                    "created_at": now, "updated_at": now,
                }
                for r in fresh.values()
            ],
            ["path", "sha256"],
        )  # fmt: skip
        ids = known_images()
    by_image = {ids[(r.path, r.sha256)]: r for r in records}
    already = set(
        session.scalars(
            select(JobImage.image_id).where(
                JobImage.job_id == job.id, JobImage.image_id.in_(list(by_image))
            )
        )
    )
    rows = [
        {
            "job_id": job.id,
            "image_id": image_id,
            "rel_path": r.rel_path,
            "status": ItemStatus.FAILED if r.failure_reason else ItemStatus.PENDING,
            "failure_reason": r.failure_reason,
            "failure_detail": r.failure_detail,
        }
        for image_id, r in by_image.items()
        if image_id not in already
    ]
    insert_ignoring_conflicts(session, JobImage, rows, ["job_id", "image_id"])
    failed = sum(1 for row in rows if row["failure_reason"])
    session.execute(
        update(ScanJob)
        .where(ScanJob.id == job.id)
        .values(total=ScanJob.total + len(rows), failed=ScanJob.failed + failed)
    )
    return len(rows)


def plan_chunks(
    sizes: Sequence[int], first_seq: int, max_files: int, max_bytes: int, final: bool
) -> list[int]:
    """How many of the pending files (in order, with their sizes in bytes) go in each new chunk.

    A chunk's fixed cost (a message, two transactions, about 15 statements: 20-40 ms) is
    2-4 small photos of a fast model, 3 % of a 128-photo chunk, so chunks grow: the job's
    first FIRST_CHUNKS chunks hold FIRST_CHUNK_FILES each
    and are cut as soon as they are full, so that the scoring processes start while the
    scan has hashed only a few files; each next chunk holds twice as many, up to
    `max_files`. A chunk also closes at `max_bytes`, so chunks of 12-megapixel photos hold
    fewer files and stay minutes short. After the first chunks, one chunk's worth stays
    uncut until the scan is final; the final cut splits the rest into halving pieces
    (see TAIL_MIN_FILES), so that the workers finish together instead of one of them
    running a last big chunk while the others wait.
    """
    counts: list[int] = []
    start, seq, total = 0, first_seq, len(sizes)
    while start < total:
        remaining = total - start
        cap = min(max_files, FIRST_CHUNK_FILES << min(max(seq - FIRST_CHUNKS, 0), 30))
        if final:
            mean_size = max(sum(sizes[start:]) // remaining, 1)
            floor = max(2, min(TAIL_MIN_FILES, TAIL_MIN_BYTES // mean_size))
            cap = min(cap, max(floor, -(-remaining // 2)))
        n, used = 0, 0
        while n < remaining and n < cap and (n == 0 or used + sizes[start + n] <= max_bytes):
            used += sizes[start + n]
            n += 1
        closed = n == cap or n < remaining  # a cap closed it, not the end of the list
        if not final and not (closed and (seq <= FIRST_CHUNKS or remaining - n >= n)):
            break
        counts.append(n)
        start, seq = start + n, seq + 1
    return counts


def cut_chunks(session: Session, job: ScanJob, settings: Settings, final: bool) -> list[int]:
    """Group the job's unchunked pending images into chunks (see `plan_chunks`)."""
    pending = session.execute(
        select(JobImage.id, Image.size_bytes)
        .join(Image, Image.id == JobImage.image_id)
        .where(
            JobImage.job_id == job.id,
            JobImage.chunk_id.is_(None),
            JobImage.status == ItemStatus.PENDING,
        )
        .order_by(JobImage.id)
    ).all()
    next_seq = (session.scalar(select(func.max(Chunk.seq)).where(Chunk.job_id == job.id)) or 0) + 1
    counts = plan_chunks(
        [size or 0 for _, size in pending],
        next_seq,
        settings.chunk_size,
        settings.chunk_megabytes * 1024 * 1024,
        final,
    )
    if not counts:
        return []
    groups, start = [], 0
    for count in counts:
        groups.append([job_image_id for job_image_id, _ in pending[start : start + count]])
        start += count
    now = utcnow()
    chunk_ids = list(
        session.scalars(
            insert(Chunk).returning(Chunk.id, sort_by_parameter_order=True),
            [
                {"job_id": job.id, "seq": next_seq + i, "size": len(g), "enqueued_at": now}
                for i, g in enumerate(groups)
            ],
        )
    )
    for chunk_id, group in zip(chunk_ids, groups, strict=True):
        session.execute(update(JobImage).where(JobImage.id.in_(group)).values(chunk_id=chunk_id))
    session.execute(
        update(ScanJob)
        .where(ScanJob.id == job.id)
        .values(chunks_total=ScanJob.chunks_total + len(chunk_ids))
    )
    return chunk_ids


def queued_chunk_ids(session: Session, job_id: int) -> list[int]:
    """The job's chunks that no worker has finished yet."""
    return list(
        session.scalars(
            select(Chunk.id)
            .where(Chunk.job_id == job_id, Chunk.status == ChunkStatus.QUEUED)
            .order_by(Chunk.seq)
        )
    )


def run_scan(settings: Settings, job_id: int, enqueue: Callable[[list[int]], None]) -> None:
    """Scan a job's folder in batches: each batch commits, then its full chunks are enqueued.

    Scoring starts while the scan goes on. The scan is resumable: running it again after a
    crash skips files it already recorded. It owns several short transactions on purpose,
    so that hashing never holds a database lock and workers see chunks early.
    """
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        # A redelivered scan (its worker died) may have committed chunks whose messages
        # were never sent: send every queued chunk again. Duplicates are harmless.
        unsent = queued_chunk_ids(session, job_id) if job.status != JobStatus.QUEUED else []
        if job.status == JobStatus.SCORING:  # the scan itself had finished
            resume_only = True
        elif job.status in FINISHED or not transition(session, job, JobStatus.SCANNING):
            log.info("job %s is %s; scan skipped", job_id, job.status.value)
            return
        else:
            resume_only = False
        folder, recursive, extensions = Path(job.folder), job.recursive, list(job.extensions)
    enqueue(unsent)
    if resume_only:
        return
    problem = None
    if not folder.is_dir():
        problem = f"folder {folder} no longer exists"
    elif folder.resolve() != folder:  # inspect_file trusts the walk to stay inside `folder`
        problem = f"folder {folder} now leads elsewhere through a symlink: {folder.resolve()}"
    if problem is not None:
        with session_scope(settings.db_url) as session:
            transition(session, get_job(session, job_id), JobStatus.FAILED, error=problem)
        return
    files = iter_image_files(folder, recursive, extensions)
    for batch in scan_batches(files, min(settings.chunk_size, FIRST_CHUNK_FILES)):
        records = [inspect_file(path, folder, settings) for path in batch]
        with session_scope(settings.db_url) as session:
            job = get_job(session, job_id)
            if job.status != JobStatus.SCANNING:
                return  # cancelled while scanning
            record_files(session, job, records)
            chunk_ids = cut_chunks(session, job, settings, final=False)
        enqueue(chunk_ids)
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id)
        if job.status != JobStatus.SCANNING:
            return
        chunk_ids = cut_chunks(session, job, settings, final=True)
        job.scan_complete = True
        session.flush()
        transition(session, job, JobStatus.SCORING)
        maybe_finish(session, job_id)
    enqueue(chunk_ids)
