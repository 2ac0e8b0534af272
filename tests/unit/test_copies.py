"""Render markers: the sweep deletes the ones past their lifetime, a few folders at a time."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from service import copies, display, thumbnails
from service.settings import Settings


@pytest.fixture()
def settings(tmp_path: Path, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("sqlite://", thumbnails_dir=tmp_path / "thumbs")


def marker(settings: Settings, sha256: str, side: int, kind: str, age: float) -> Path:
    """A marker file last touched `age` seconds ago."""
    path = copies.copy_file(settings, sha256, side).with_suffix(f".{kind}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_only_markers_past_their_lifetime_are_swept(settings: Settings) -> None:
    thumb, shown = thumbnails.THUMBNAIL_SIDE, display.DISPLAY_SIDE
    stale = [
        marker(settings, "a" * 64, thumb, "pending", copies.PENDING_SECONDS + 5),
        marker(settings, "a" * 64, shown, "failed", copies.FAILED_SECONDS + 5),
    ]
    kept = [
        marker(settings, "a1" + "0" * 62, thumb, "pending", copies.PENDING_SECONDS - 30),
        # Old enough to be a stale pending marker, young enough for a failed one.
        marker(settings, "a2" + "0" * 62, thumb, "failed", copies.PENDING_SECONDS + 5),
    ]
    copy = thumbnails.thumbnail_file(settings, "a" * 64)
    copy.write_bytes(b"jpeg")
    os.utime(copy, (0, 0))  # a copy is never a marker, however old

    swept = copies.sweep_markers(settings, folders=copies.FANOUT)

    assert swept == len(stale)
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept) and copy.exists()


def test_each_sweep_looks_at_a_few_folders_and_all_are_reached_in_turn(
    settings: Settings,
) -> None:
    old = copies.FAILED_SECONDS + 5
    markers = [
        marker(settings, f"{n:02x}" + "0" * 62, thumbnails.THUMBNAIL_SIDE, "failed", old)
        for n in range(copies.FANOUT)
    ]
    per_sweep = 16
    assert copies.sweep_markers(settings, folders=per_sweep) == per_sweep
    assert sum(path.exists() for path in markers) == copies.FANOUT - per_sweep
    for _ in range(copies.FANOUT // per_sweep - 1):
        assert copies.sweep_markers(settings, folders=per_sweep) == per_sweep
    assert not any(path.exists() for path in markers)


def test_a_missing_cache_is_nothing_to_sweep(settings: Settings) -> None:
    assert copies.sweep_markers(settings) == 0
    assert not settings.thumbnails_path.exists()


def test_temporary_files_a_killed_writer_left_are_swept_after_an_hour(settings: Settings) -> None:
    copy = thumbnails.thumbnail_file(settings, "b" * 64)
    copy.parent.mkdir(parents=True)
    # What write_atomically leaves when its process is killed between mkstemp and rename.
    left = copy.parent / f".{copy.stem}.k1l2l3ed.tmp"
    writing = copy.parent / f".{copy.stem}.w0r1k2ng.tmp"
    for path, age in ((left, copies.TEMP_SECONDS + 5), (writing, 30)):
        path.write_bytes(b"half a jpeg")
        os.utime(path, (time.time() - age,) * 2)

    assert copies.sweep_markers(settings, folders=copies.FANOUT) == 1
    assert not left.exists()
    assert writing.exists()  # a write in progress keeps its file


def test_a_folder_the_sweep_cannot_read_is_skipped_and_the_rest_swept(settings: Settings) -> None:
    """The sweep runs in the scheduler's check after its re-sends: one bad cache folder
    must not fail that task every ten seconds."""
    settings.thumbnails_path.mkdir(parents=True)
    (settings.thumbnails_path / "00").write_bytes(b"")  # a file where a folder belongs
    stale = marker(settings, "01" + "0" * 62, thumbnails.THUMBNAIL_SIDE, "failed",
                   copies.FAILED_SECONDS + 5)  # fmt: skip

    assert copies.sweep_markers(settings, folders=2) == 1
    assert not stale.exists()
