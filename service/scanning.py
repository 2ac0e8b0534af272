"""The scan: walk a job's folder, hash and probe each file, record Image rows, cut chunks."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain, islice
from pathlib import Path
from stat import S_ISREG
from typing import Any, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from service.db import in_values, insert_ignoring_conflicts, session_scope
from service.imaging import NOT_A_FILE, ImageError, is_image_name, probe, sha256_file
from service.jobs import FINISHED, get_job, maybe_finish, transition
from service.models import (
    Chunk,
    ChunkStatus,
    Image,
    JobImage,
    JobImageStatus,
    JobStatus,
    ScanJob,
    folder_of,
    utcnow,
)
from service.paths import is_inside, is_utf8, printable
from service.settings import Settings
from service.sites import site_of

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
    captured_at: datetime | None = None  # camera-local
    captured_offset_minutes: int | None = None
    exif_datetime_raw: str | None = None
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


def iter_image_files(
    folder: Path,
    recursive: bool,
    extensions: list[str],
    on_error: Callable[[OSError], None] | None = None,
) -> Iterator[Path]:
    """Image files under `folder` in a stable order; hidden files and folders are skipped.

    Symlinked folders are not followed (a loop or an escape cannot start here); symlinked
    files are yielded and checked by `inspect_file`. A folder that cannot be listed goes
    to `on_error` (its subtree is skipped).
    """
    for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error, followlinks=False):
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
        if not S_ISREG(stat.st_mode):  # a socket cannot be opened; a FIFO would block
            raise ImageError("not_a_file", NOT_A_FILE)
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
    record.captured_offset_minutes = info.captured_offset_minutes
    record.exif_datetime_raw = info.exif_datetime_raw
    return record


def unlisted_folder(error: OSError, folder: Path) -> FileRecord:
    """The failure row of a folder the walk could not enter (its files are never seen)."""
    path = Path(os.fsdecode(error.filename)) if error.filename is not None else folder
    try:
        rel = str(path.relative_to(folder))
    except ValueError:
        rel = str(path)
    record = FileRecord(path=str(path), rel_path=f"{rel.rstrip('/')}/")
    if not is_utf8(record.path):
        record.path, record.rel_path = printable(record.path), printable(record.rel_path)
    record.failure_reason = "unreadable_folder"
    record.failure_detail = f"cannot list this folder, its files were skipped: {error.strerror}"
    return record


def utc_instant(local: datetime | None, offset_minutes: int | None) -> datetime | None:
    """The UTC instant of a camera-local time, known only when its offset is."""
    if local is None or offset_minutes is None:
        return None
    return (local - timedelta(minutes=offset_minutes)).replace(tzinfo=UTC)


def record_images(session: Session, records: Sequence[FileRecord]) -> list[int]:
    """The Image id of each record, in order; rows are added for new (path, content) pairs.

    A file whose path and content are known (a folder scored before) keeps its row, and so
    its predictions; a file whose bytes changed is a new row.
    """

    def lookup(paths: list[str]) -> dict[tuple[str, str | None], int]:
        rows = session.execute(
            select(Image.path, Image.sha256, Image.id).where(in_values(session, Image.path, paths))
        )
        return {(path, sha): image_id for path, sha, image_id in rows}

    ids = lookup([r.path for r in records])
    fresh = {(r.path, r.sha256): r for r in records if (r.path, r.sha256) not in ids}
    if fresh:
        now = utcnow()
        inserted = insert_ignoring_conflicts(
            session,
            Image,
            [
                {
                    "path": r.path, "sha256": r.sha256, "size_bytes": r.size_bytes,
                    "mtime": r.mtime, "width": r.width, "height": r.height, "format": r.format,
                    "captured_at": utc_instant(r.captured_at, r.captured_offset_minutes),
                    "captured_local": r.captured_at,
                    "captured_offset_minutes": r.captured_offset_minutes,
                    "exif_datetime_raw": r.exif_datetime_raw,
                    "gps_lat": r.gps_lat, "gps_lon": r.gps_lon,
                    "created_at": now, "updated_at": now,
                }
                for r in fresh.values()
            ],
            ["path", "sha256"],
            returning=("path", "sha256", "id"),
        )  # fmt: skip
        ids.update({(path, sha): image_id for path, sha, image_id in inserted})
        if raced := [path for path, sha in fresh if (path, sha) not in ids]:
            ids.update(lookup(raced))  # added by another job's scan since the first look
    return [ids[(r.path, r.sha256)] for r in records]


def already_recorded(session: Session, job_id: int, image_ids: Iterable[int]) -> set[int]:
    """Which of these images have a row in this job (a scan that runs again after a crash)."""
    return set(
        session.scalars(
            select(JobImage.image_id).where(
                JobImage.job_id == job_id, in_values(session, JobImage.image_id, image_ids)
            )
        )
    )


Scanned = tuple[int, FileRecord]  # (image id, what the scan learned about the file)


def record_job_files(
    session: Session, job: ScanJob, settings: Settings, files: list[Scanned], final: bool
) -> tuple[list[int], list[Scanned]]:
    """Add the job's rows for `files`, each readable file in its chunk (see `plan_chunks`).

    Returns the new chunks' ids and the readable files held back for a later chunk. Those
    get no row yet, so that every row is written once, with its chunk: job images are the
    biggest table a job writes, and setting each row's chunk afterwards rewrote the row and
    its five index entries. A scan that dies before it records them scans them again.
    Unreadable files are recorded at once, failed with their reason.
    """
    failed = [(image_id, r) for image_id, r in files if r.failure_reason]
    readable = [(image_id, r) for image_id, r in files if not r.failure_reason]
    first_seq = job.chunks_total + 1  # seq numbers run 1, 2, ... in the order chunks are cut
    counts = plan_chunks(
        [r.size_bytes or 0 for _, r in readable],
        first_seq,
        settings.chunk_size,
        settings.chunk_megabytes * 1024 * 1024,
        final,
    )
    chunk_ids: list[int] = []
    if counts:
        now = utcnow()
        chunk_ids = list(
            session.scalars(
                insert(Chunk).returning(Chunk.id, sort_by_parameter_order=True),
                [
                    {"job_id": job.id, "seq": first_seq + i, "size": count,
                     "enqueued_at": now}
                    for i, count in enumerate(counts)
                ],
            )
        )  # fmt: skip

    def row(image_id: int, r: FileRecord, chunk_id: int | None) -> dict[str, Any]:
        return {
            "job_id": job.id,
            "image_id": image_id,
            "chunk_id": chunk_id,
            "rel_path": r.rel_path,
            "folder": folder_of(r.rel_path),
            "site": site_of(r.rel_path, job.folder, settings.site_depth)[:200],
            "status": JobImageStatus.FAILED if r.failure_reason else JobImageStatus.PENDING,
            "failure_reason": r.failure_reason,
            "failure_detail": r.failure_detail,
        }

    rows = [row(image_id, r, None) for image_id, r in failed]
    start = 0
    for chunk_id, count in zip(chunk_ids, counts, strict=True):
        rows += [row(image_id, r, chunk_id) for image_id, r in readable[start : start + count]]
        start += count
    insert_ignoring_conflicts(session, JobImage, rows, ["job_id", "image_id"])
    session.execute(
        update(ScanJob)
        .where(ScanJob.id == job.id)
        .values(
            total=ScanJob.total + len(rows),
            failed=ScanJob.failed + len(failed),
            chunks_total=ScanJob.chunks_total + len(chunk_ids),
        )
    )
    return chunk_ids, readable[start:]


def plan_chunks(
    sizes: Sequence[int], first_seq: int, max_files: int, max_bytes: int, final: bool
) -> list[int]:
    """How many of the pending files (in order, with their sizes in bytes) go in each new chunk.

    Chunks grow to spread a chunk's fixed cost (a message, two transactions; see
    docs/performance.md): the job's first FIRST_CHUNKS chunks hold FIRST_CHUNK_FILES each
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


def queued_chunk_ids(session: Session, job_id: int) -> list[int]:
    """The job's chunks that no worker has finished yet."""
    return list(
        session.scalars(
            select(Chunk.id)
            .where(Chunk.job_id == job_id, Chunk.status == ChunkStatus.QUEUED)
            .order_by(Chunk.seq)
        )
    )


def owns_scan(job: ScanJob, attempt: int) -> bool:
    """Is this scan run still the job's current one (not cancelled, not superseded)?"""
    return job.status == JobStatus.SCANNING and job.scan_attempts == attempt


def run_scan(settings: Settings, job_id: int, enqueue: Callable[[list[int]], object]) -> None:
    """Scan a job's folder in batches: each batch commits, then its full chunks are enqueued.

    Scoring starts while the scan goes on. The scan is resumable: running it again after a
    crash skips files it already recorded. It owns several short transactions on purpose,
    so that hashing never holds a database lock and workers see chunks early.
    """
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id, lock=True)
        # A redelivered scan (its worker died) may have committed chunks whose messages
        # were never sent: send every queued chunk again. Duplicates are harmless.
        unsent = queued_chunk_ids(session, job_id) if job.status != JobStatus.QUEUED else []
        resumed = job.status == JobStatus.SCANNING  # the scan's worker died: it runs again
        if job.status == JobStatus.SCORING:  # the scan itself had finished
            resume_only = True
        elif job.status in FINISHED or not transition(session, job, JobStatus.SCANNING):
            log.info("job %s is %s; scan skipped", job_id, job.status.value)
            return
        else:
            resume_only = False
        # This run owns the scan from now on: a stalled run that wakes up finds a newer
        # attempt at its next batch and stops (the scheduler re-sends silent scans).
        job.scan_attempts += 1
        job.heartbeat_at = utcnow()
        attempt = job.scan_attempts
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
    walk_errors: list[OSError] = []
    files = iter_image_files(folder, recursive, extensions, walk_errors.append)
    held: list[Scanned] = []  # readable files recorded as images, not yet in a chunk
    for batch in chain(scan_batches(files, min(settings.chunk_size, FIRST_CHUNK_FILES)), [()]):
        records = [inspect_file(path, folder, settings) for path in batch]
        records += [unlisted_folder(error, folder) for error in walk_errors]
        walk_errors.clear()
        if not records:
            continue
        with session_scope(settings.db_url) as session:
            job = get_job(session, job_id, lock=True)
            if not owns_scan(job, attempt):
                return  # cancelled while scanning, or superseded
            job.heartbeat_at = utcnow()
            scanned = list(zip(record_images(session, records), records, strict=True))
            if resumed:  # the files a dead scan recorded keep their rows and chunks
                known = already_recorded(session, job_id, [image_id for image_id, _ in scanned])
                scanned = [s for s in scanned if s[0] not in known]
            chunk_ids, held = record_job_files(session, job, settings, held + scanned, False)
        enqueue(chunk_ids)
    with session_scope(settings.db_url) as session:
        job = get_job(session, job_id, lock=True)
        if not owns_scan(job, attempt):
            return
        chunk_ids, _ = record_job_files(session, job, settings, held, final=True)
        job.scan_complete = True
        session.flush()
        transition(session, job, JobStatus.SCORING)
        maybe_finish(session, job_id, settings.review_order)
    enqueue(chunk_ids)
