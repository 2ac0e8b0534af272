"""The export folder: files linked or copied into split/label/, manifest, card; made read-only."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

from service.errors import InvalidState
from service.exports.candidates import Candidate, deduplicate, is_safe_label
from service.exports.card import build_card, render_card
from service.exports.options import ExportOptions
from service.exports.records import exports_root
from service.exports.splits import SplitPlan, plan_splits
from service.imaging import sha256_file
from service.results import safe_cell, unsafe_cell
from service.settings import Settings

log = logging.getLogger(__name__)


MANIFEST_COLUMNS = [
    "export_id", "path", "sha256", "label", "source", "annotator", "time", "confidence",
    "split", "site", "image_id", "original_path",
]  # fmt: skip


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def write_export(
    settings: Settings,
    export_id: int,
    options: ExportOptions,
    candidates: list[Candidate],
    excluded: Counter[str],
    ruled_out: set[str],
    snapshot_at: datetime,
    forced_test: set[str],
) -> tuple[Path, dict[str, Any]]:
    """Filter, split and write the folder atomically; returns (folder, card)."""
    excluded = Counter(excluded)
    kept, dup_excluded = deduplicate(candidates, ruled_out)
    excluded.update(dup_excluded)
    unsafe = Counter(c.label for c in kept if not is_safe_label(c.label))
    kept = [c for c in kept if c.label not in unsafe]
    missing = [c for c in kept if not os.path.isfile(c.path)]
    excluded["file_missing"] += len(missing)
    kept = [c for c in kept if os.path.isfile(c.path)]
    per_class = Counter(c.label for c in kept)
    dropped = {lab: n for lab, n in per_class.items() if n < options.min_per_class}
    kept = [c for c in kept if c.label not in dropped]
    plan = plan_splits(kept, options, forced_test)
    held = set(plan.held_out)
    excluded["machine_label_at_evaluation_site"] += len(held)
    kept = [c for c in kept if c.sha256 not in held]

    root = exports_root(settings)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".incoming-{export_id}-*"):
        _make_writable(stale)
        shutil.rmtree(stale, ignore_errors=True)  # an earlier attempt that died
    stamp = snapshot_at.strftime("%Y%m%dT%H%M%SZ")
    staging = Path(tempfile.mkdtemp(prefix=f".incoming-{export_id}-", dir=root))
    try:
        rows, changed, linked = _place_files(staging, export_id, kept, plan, settings)
        excluded["file_changed_since_scan"] += changed
        labels = sorted({r["label"] for r in rows})
        (staging / "class_map.json").write_text(
            json.dumps({str(i): lab for i, lab in enumerate(labels)}, indent=2, ensure_ascii=False)
            + "\n",
            encoding="utf-8",
        )
        with (staging / "manifest.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows({k: safe_cell(v) for k, v in row.items()} for row in rows)
        card = build_card(
            export_id, options, rows, plan, excluded, dropped, dict(unsafe), snapshot_at,
            linked, sha256_file(staging / "manifest.csv"),
        )  # fmt: skip
        (staging / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
        (staging / "README.md").write_text(render_card(card), encoding="utf-8")
        final = root / f"{export_id}-{stamp}"
        if final.exists():
            raise InvalidState(f"export folder {final} already exists")
        staging.rename(final)
    except BaseException:
        _make_writable(staging)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _make_read_only(final)
    log.info("export %d: %d images in %s", export_id, card["total"], final)
    return final, card


def _place_files(
    staging: Path, export_id: int, kept: list[Candidate], plan: SplitPlan, settings: Settings
) -> tuple[list[dict[str, Any]], int, int]:
    """Link (or copy) each file to split/label/name, checking its bytes against its sha256."""
    rows: list[dict[str, Any]] = []
    changed = linked = 0
    for c in sorted(kept, key=lambda c: (plan.split_of[c.sha256], c.label, c.sha256)):
        split = plan.split_of[c.sha256]
        rel = Path(split) / c.label / _file_name(c)
        dest = staging / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        how = _link_or_copy(Path(c.path), dest, settings.export_hardlinks)
        if sha256_file(dest) != c.sha256:
            # The photo was edited or replaced after the scan: its label may not fit it.
            dest.unlink()
            changed += 1
            continue
        linked += how == "link"
        rows.append(
            {
                "export_id": export_id, "path": rel.as_posix(), "sha256": c.sha256,
                "label": c.label, "source": c.source, "annotator": c.annotator, "time": c.time,
                "confidence": "" if c.confidence is None else f"{c.confidence:.6f}",
                "split": split, "site": c.site, "image_id": c.image_id, "original_path": c.path,
            }
        )  # fmt: skip
    return rows, changed, linked


def _file_name(c: Candidate) -> str:
    """Unique (sha256 prefix) and safe (ASCII letters, digits, . _ -) file name."""
    source = PurePath(c.rel_path)
    stem = _UNSAFE_NAME.sub("_", source.stem).strip("._")[:60] or "image"
    suffix = _UNSAFE_NAME.sub("", source.suffix.lower())[:10]
    return f"{c.sha256[:16]}_{stem}{suffix}"


def _link_or_copy(source: Path, dest: Path, hardlink: bool) -> str:
    """A hard link when the original is already read-only, else a copy made read-only.

    A hard link shares the original's inode: changing its mode would change the user's
    photo, and a writable original could later change the export's bytes. So herpscore
    links only photos that nobody may write already, and never touches an original.
    """
    if hardlink and not source.stat().st_mode & 0o222:
        try:
            os.link(source, dest)
            return "link"
        except OSError:
            pass  # another filesystem, or links not allowed: copy instead
    shutil.copyfile(source, dest)
    os.chmod(dest, 0o444)
    return "copy"


def _make_read_only(folder: Path) -> None:
    """Remove write bits from the export's own files and folders (never a linked original)."""
    for path in folder.rglob("*"):
        if path.is_file() and path.stat().st_nlink == 1:
            os.chmod(path, path.stat().st_mode & ~0o222)
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        os.chmod(path, 0o555)
    os.chmod(folder, 0o555)


def _make_writable(folder: Path) -> None:
    """Give back write permission on folders (only), so a failed attempt can be removed."""
    if not folder.exists():
        return
    for path in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        os.chmod(path, 0o755)


def read_manifest(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return [{k: unsafe_cell(v) for k, v in row.items()} for row in csv.DictReader(fh)]
