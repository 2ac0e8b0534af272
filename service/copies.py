"""Copies the web shows (thumbnails, display copies) rendered by the workers, never by the web.

The scoring worker writes them as it scores (service/scoring.py). One still missing (an old
job, a failed write, a wiped cache) is asked for here by the web view: a render task goes to
the maintenance queue once, a `.pending` marker beside the copy keeps repeated page views
from queuing it again, and a `.failed` marker keeps a photo that cannot be decoded from
being tried on every view. The scheduler's check sweeps markers past their lifetime away,
and the temporary files of copy writes whose process was killed before the rename.
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from service import display, thumbnails
from service.db import read_scope
from service.errors import BadInput, NotFound
from service.imaging import ImageError
from service.models import Image
from service.paths import scanned_file
from service.settings import Settings
from service.tasks_client import RENDER_DISPLAY_TASK, RENDER_THUMBNAIL_TASK

log = logging.getLogger(__name__)

RENDER_TASKS = {
    thumbnails.THUMBNAIL_SIDE: RENDER_THUMBNAIL_TASK,
    display.DISPLAY_SIDE: RENDER_DISPLAY_TASK,
}
_DRAFTS = {thumbnails.THUMBNAIL_SIDE: None, display.DISPLAY_SIDE: display.DISPLAY_DRAFT}
PENDING_SECONDS = 60  # a render asked for this recently is not asked for again
FAILED_SECONDS = 3600  # nor one that failed: an undecodable photo stays a placeholder
TEMP_SECONDS = 3600  # a write_atomically temporary file this old lost its writer (a kill)
LIFETIMES = {".pending": PENDING_SECONDS, ".failed": FAILED_SECONDS, ".tmp": TEMP_SECONDS}
FANOUT = 256  # the cache's folders, one per first two hex digits (thumbnails.thumbnail_file)
SWEEP_FOLDERS = 8  # folders looked through per sweep: every one within 32 scheduler checks
_SWEEP_CURSOR = ".marker-sweep"  # the folder the next sweep starts at


class CopyState(enum.Enum):
    READY = "ready"
    PENDING = "pending"  # a worker was asked to render it
    FAILED = "failed"  # the photo could not be rendered


def copy_file(settings: Settings, sha256: str, side: int) -> Path:
    """Where the copy of this content at this side lives."""
    return thumbnails.thumbnail_file(settings, sha256, side)


def _marker(settings: Settings, sha256: str, side: int, kind: str) -> Path:
    return copy_file(settings, sha256, side).with_suffix(f".{kind}")


def _younger_than(marker: Path, seconds: float) -> bool:
    try:
        return time.time() - marker.stat().st_mtime < seconds
    except FileNotFoundError:
        return False


def ask_for_copy(settings: Settings, sha256: str, side: int, send: Callable[[], bool]) -> CopyState:
    """The copy's state; a missing copy nobody asked for lately is marked pending and
    `send` is called to queue its render (False: the broker did not take it, so the next
    view asks again). Raises OSError when the cache folder cannot be written."""
    if thumbnails.is_stored(copy_file(settings, sha256, side)):
        return CopyState.READY
    if _younger_than(_marker(settings, sha256, side, "failed"), FAILED_SECONDS):
        return CopyState.FAILED
    pending = _marker(settings, sha256, side, "pending")
    if _claim(pending) and not send():
        pending.unlink(missing_ok=True)
    return CopyState.PENDING


def _claim(pending: Path) -> bool:
    """True when this caller is the one to queue the render (no fresh marker existed)."""
    pending.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(pending, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        if _younger_than(pending, PENDING_SECONDS):
            return False
        os.utime(pending)  # a message lost with a broker outage: ask once more
        return True


def render_copy(settings: Settings, image_id: int, side: int) -> bool:
    """Render one image's missing copy (the task behind `ask_for_copy`); True when written.

    A photo that cannot be decoded, or is no longer servable, gets a `.failed` marker.
    """
    if side not in RENDER_TASKS:
        raise BadInput(f"no copy is made at {side} px")
    with read_scope(settings.db_url) as session:
        image = session.get(Image, image_id)
        if image is None or image.sha256 is None:
            return False
        path, sha256, size = image.path, image.sha256, image.size_bytes
    pending = _marker(settings, sha256, side, "pending")
    if thumbnails.is_stored(copy_file(settings, sha256, side)):
        pending.unlink(missing_ok=True)
        return False
    try:
        source = scanned_file(path, size, settings.resolved_roots)
        thumbnails.ensure_thumbnail(settings, source, sha256, side, draft=_DRAFTS[side])
    except (ImageError, NotFound) as exc:
        log.info("no %s px copy of image %s: %s", side, image_id, exc)
        _marker(settings, sha256, side, "failed").touch()
        pending.unlink(missing_ok=True)
        return False
    # An OSError (an unwritable cache) leaves the pending marker: asked again in a minute.
    pending.unlink(missing_ok=True)
    return True


def sweep_markers(settings: Settings, folders: int = SWEEP_FOLDERS) -> int:
    """Delete the markers past their lifetime, and temporary files of writes killed before
    their rename, in the next `folders` fan-out folders of the cache, so neither piles up;
    how many deleted.

    A marker past its lifetime already counts as absent, so this changes no answer; one
    refreshed between the look and the unlink costs at most one more render request.
    """
    root = settings.thumbnails_path
    if not root.is_dir():
        return 0
    cursor = root / _SWEEP_CURSOR
    try:
        start = int(cursor.read_text(), 16) % FANOUT
    except (FileNotFoundError, ValueError):
        start = 0
    now = time.time()
    deleted = 0
    for n in range(start, start + folders):
        deleted += _sweep_folder(root / f"{n % FANOUT:02x}", now)
    try:
        cursor.write_text(f"{(start + folders) % FANOUT:02x}")
    except OSError as exc:  # housekeeping: the next sweep starts over, nothing is lost
        log.warning("cannot record where the next marker sweep starts: %s", exc)
    return deleted


def _sweep_folder(folder: Path, now: float) -> int:
    try:
        with os.scandir(folder) as listing:
            entries = list(listing)
    except FileNotFoundError:
        return 0
    except OSError as exc:  # unreadable, or not a folder: the rest of the sweep goes on
        log.warning("marker sweep skipped %s: %s", folder, exc)
        return 0
    deleted = 0
    for entry in entries:
        lifetime = LIFETIMES.get(os.path.splitext(entry.name)[1])
        if lifetime is None:
            continue
        try:
            if now - entry.stat().st_mtime >= lifetime:
                os.unlink(entry.path)
                deleted += 1
        except FileNotFoundError:  # a render or another sweep removed it first
            continue
    return deleted
