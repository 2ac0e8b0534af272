"""Dataset exports: curated labels -> an immutable, versioned, leak-free training folder.

An export folder (`<data>/exports/<id>-<timestamp>/`) is what `python -m training fit
--data` reads: `train|val|test/<label>/<file>`, `class_map.json`, `manifest.csv` (one row
per file with its provenance) and a dataset card (`card.json` + `README.md`). It is
written into a hidden temporary folder, renamed into place, then made read-only.

Splits never leak: byte-identical files (same sha256) appear once, and when the photos
carry a site (by default the top-level folder of the image's path within its job, or the
job folder itself for photos at its top level) whole sites go to one split, assigned
greedily per class towards the target fractions. Machine labels (confident predictions)
only ever train: a frozen test set must be human-verified.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import random
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path, PurePath
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service import sites
from service.decisions import current_decisions
from service.errors import BadInput, InvalidState, NotFound
from service.imaging import sha256_file
from service.models import (
    DatasetExport,
    Decision,
    ExportStatus,
    Image,
    JobImage,
    Prediction,
    ScanJob,
    utcnow,
)
from service.settings import Settings

log = logging.getLogger(__name__)

EXPORT_TASK = "herpscore.export"
SPLITS = ("train", "val", "test")
HUMAN, MACHINE = "human", "prediction"
MANIFEST_COLUMNS = [
    "export_id", "path", "sha256", "label", "source", "annotator", "time", "confidence",
    "split", "site", "image_id", "original_path",
]  # fmt: skip
TEST_SET_FILE = "test_set.json"
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ExportOptions:
    """What goes into an export; stored on the DatasetExport row and in the card."""

    include_confident: float | None = None
    min_per_class: int = 10
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    group_by_site: bool = True

    def __post_init__(self) -> None:
        if self.include_confident is not None and not 0.0 < self.include_confident <= 1.0:
            raise BadInput("include_confident must be in (0, 1]")
        if self.min_per_class < 1:
            raise BadInput("min_per_class must be at least 1")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) <= 0.5:
                raise BadInput(f"{name} must be between 0 and 0.5")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ExportOptions:
        values: dict[str, Any] = {
            "include_confident": settings.export_include_confident,
            "min_per_class": settings.export_min_per_class,
            "val_fraction": settings.export_val_fraction,
            "test_fraction": settings.export_test_fraction,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExportOptions:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def fractions(self) -> dict[str, float]:
        return {
            "train": 1.0 - self.val_fraction - self.test_fraction,
            "val": self.val_fraction,
            "test": self.test_fraction,
        }


@dataclass(frozen=True)
class Candidate:
    """One labelled image that may go into the export."""

    image_id: int
    path: str
    sha256: str
    label: str
    source: str  # HUMAN or MACHINE
    annotator: str  # the reviewer, or "model:<version id>"
    time: str
    site: str
    rel_path: str
    confidence: float | None = None


@dataclass
class SplitPlan:
    """Which split each sha256 goes to, how it was decided, and what was held out."""

    split_of: dict[str, str]
    mode: str
    held_out: list[str] = field(default_factory=list)  # machine labels at evaluation sites
    forced_test: int = 0


# ---------------------------------------------------------------- rows and queue


def create_export(session: Session, options: ExportOptions, created_by: str = "") -> DatasetExport:
    """Record a queued export; send it with `enqueue_export` after the commit."""
    export = DatasetExport(
        status=ExportStatus.QUEUED, options=asdict(options), created_by=created_by
    )
    session.add(export)
    session.flush()
    return export


def enqueue_export(settings: Settings, export_id: int) -> None:
    """Queue an export task; call only after the row committed."""
    from service.tasks_client import celery_client

    celery_client(settings).send_task(EXPORT_TASK, args=[export_id])


def get_export(session: Session, export_id: int) -> DatasetExport:
    export = session.get(DatasetExport, export_id)
    if export is None:
        raise NotFound(f"export {export_id} does not exist")
    return export


def list_exports(
    session: Session, limit: int = 100, offset: int = 0
) -> tuple[list[DatasetExport], int]:
    total = session.scalar(select(func.count()).select_from(DatasetExport)) or 0
    rows = session.scalars(
        select(DatasetExport).order_by(DatasetExport.id.desc()).limit(limit).offset(offset)
    )
    return list(rows), total


def export_to_dict(export: DatasetExport) -> dict[str, Any]:
    """The public JSON shape of an export (its folder name, not the server path)."""
    return {
        "id": export.id,
        "status": export.status.value,
        "folder": Path(export.path).name if export.path else None,
        "options": export.options,
        "counts": export.counts,
        "error": export.error,
        "created_by": export.created_by,
        "created_at": export.created_at.isoformat(),
        "finished_at": export.finished_at.isoformat() if export.finished_at else None,
    }


def exports_root(settings: Settings) -> Path:
    return settings.data_path / "exports"


# ---------------------------------------------------------------- what is labelled


def _first_sighting() -> Any:
    """Per image, the job image row that first saw it (its rel_path gives the site)."""
    return (
        select(JobImage.image_id, func.min(JobImage.id).label("job_image_id"))
        .group_by(JobImage.image_id)
        .subquery()
    )


def site_of(rel_path: str, job_folder: str) -> str:
    """The top-level folder of rel_path; the job folder's name for photos at its top level."""
    return sites.site_of(rel_path, job_folder)


def collect_candidates(
    session: Session, options: ExportOptions
) -> tuple[list[Candidate], Counter[str], set[str]]:
    """Human labels, plus confident predictions when asked; what was left out and why.

    Returns (candidates, exclusion counts, sha256 of content a human ruled out).
    """
    decided = current_decisions().subquery()
    first = _first_sighting()
    rows = session.execute(
        select(
            decided.c.image_id, decided.c.decision, decided.c.label, decided.c.reviewer,
            decided.c.created_at, Image.path, Image.sha256, JobImage.rel_path, ScanJob.folder,
        )
        .join(Image, Image.id == decided.c.image_id)
        .outerjoin(first, first.c.image_id == decided.c.image_id)
        .outerjoin(JobImage, JobImage.id == first.c.job_image_id)
        .outerjoin(ScanJob, ScanJob.id == JobImage.job_id)
    ).all()  # fmt: skip
    excluded: Counter[str] = Counter()
    candidates: list[Candidate] = []
    ruled_out: set[str] = set()
    human_ids: set[int] = set()
    for image_id, decision, label, reviewer, at, path, sha, rel_path, folder in rows:
        human_ids.add(image_id)
        if decision != Decision.LABEL or not label:
            excluded[f"human_{Decision(decision).value}"] += 1
            if sha:
                ruled_out.add(sha)
            continue
        if not sha:
            excluded["not_hashed"] += 1
            continue
        candidates.append(
            _candidate(image_id, path, sha, label, HUMAN, reviewer, at, rel_path, folder)
        )
    if options.include_confident is not None:
        candidates += _confident_predictions(session, options.include_confident, human_ids)
    return candidates, excluded, ruled_out


def _confident_predictions(
    session: Session, threshold: float, human_ids: set[int]
) -> list[Candidate]:
    """Each image's newest prediction, when at least `threshold` sure and no human decided."""
    newest = (
        select(Prediction.image_id, func.max(Prediction.id).label("prediction_id"))
        .group_by(Prediction.image_id)
        .subquery()
    )
    first = _first_sighting()
    rows = session.execute(
        select(
            Prediction.image_id, Prediction.label, Prediction.model_version_id,
            Prediction.confidence, Prediction.created_at, Image.path, Image.sha256,
            JobImage.rel_path, ScanJob.folder,
        )
        .join(newest, newest.c.prediction_id == Prediction.id)
        .join(Image, Image.id == Prediction.image_id)
        .outerjoin(first, first.c.image_id == Prediction.image_id)
        .outerjoin(JobImage, JobImage.id == first.c.job_image_id)
        .outerjoin(ScanJob, ScanJob.id == JobImage.job_id)
        .where(Prediction.confidence >= threshold)
    ).all()  # fmt: skip
    out = []
    for image_id, label, model_id, confidence, at, path, sha, rel_path, folder in rows:
        if image_id in human_ids or not sha:
            continue
        who = f"model:{model_id}"
        out.append(
            _candidate(image_id, path, sha, label, MACHINE, who, at, rel_path, folder, confidence)
        )
    return out


def _candidate(
    image_id: int,
    path: str,
    sha: str,
    label: str,
    source: str,
    annotator: str,
    at: datetime | None,
    rel_path: str | None,
    job_folder: str | None,
    confidence: float | None = None,
) -> Candidate:
    rel = rel_path or Path(path).name
    site = site_of(rel, job_folder or str(Path(path).parent))
    conf = None if confidence is None else float(confidence)
    return Candidate(image_id, path, sha, label, source, annotator, _iso(at), site, rel, conf)


def deduplicate(
    candidates: Iterable[Candidate], ruled_out: set[str]
) -> tuple[list[Candidate], Counter[str]]:
    """One candidate per sha256: humans beat machines; disagreeing humans drop the content."""
    by_sha: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_sha[c.sha256].append(c)
    kept: list[Candidate] = []
    excluded: Counter[str] = Counter()
    for sha, group in sorted(by_sha.items()):
        humans = [c for c in group if c.source == HUMAN]
        chosen = humans or [c for c in group if c.source == MACHINE]
        if sha in ruled_out:
            # A copy of this content was marked unknown/unusable by a reviewer.
            excluded["conflicting_human_decisions" if humans else "machine_label_ruled_out"] += len(
                chosen
            )
            continue
        if len({c.label for c in chosen}) > 1:
            excluded["conflicting_human_labels" if humans else "conflicting_predictions"] += len(
                chosen
            )
            continue
        kept.append(min(chosen, key=lambda c: c.image_id))
        excluded["duplicate_files"] += len(group) - 1
    return kept, excluded


def is_safe_label(label: str) -> bool:
    """A label must be usable as one folder name (training reads classes from folders)."""
    return (
        bool(label.strip())
        and label == label.strip()
        and not label.startswith(".")
        and not any(ch in label for ch in "/\\\x00")
        and len(label.encode()) <= 200
    )


# ---------------------------------------------------------------- splitting


def plan_splits(
    candidates: list[Candidate],
    options: ExportOptions,
    forced_test: set[str] = frozenset(),  # type: ignore[assignment]
) -> SplitPlan:
    """Assign every sha256 a split: stratified by label, grouped by site, test fixed.

    Human-labelled images are split: by whole sites when there are at least two (and
    options.group_by_site), else image by image. Groups holding a frozen test image go to
    test. The other groups, largest first (ties in seeded random order), go to the split
    whose per-class targets they fill best (relative deficit). Machine-labelled images
    only train: at a site that went to val/test they are held out.
    """
    fractions = options.fractions()
    humans = [c for c in candidates if c.source == HUMAN]
    sites = {c.site for c in humans}
    grouped = options.group_by_site and len(sites) >= 2
    mode = "site-grouped" if grouped else "image-stratified"

    def group_key(c: Candidate) -> str:
        return f"site:{c.site}" if grouped else f"sha:{c.sha256}"

    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in humans:
        groups[group_key(c)].append(c)
    totals = Counter(c.label for c in humans)
    target = {s: {lab: fractions[s] * n for lab, n in totals.items()} for s in SPLITS}
    current: dict[str, Counter[str]] = {s: Counter() for s in SPLITS}
    split_of_group: dict[str, str] = {}
    forced = {k for k, members in groups.items() if any(c.sha256 in forced_test for c in members)}
    for key in sorted(forced):
        split_of_group[key] = "test"
        current["test"].update(c.label for c in groups[key])

    order = sorted(k for k in groups if k not in forced)
    random.Random(options.seed).shuffle(order)
    order.sort(key=lambda k: -len(groups[k]))  # stable: the shuffle breaks ties
    open_splits = [s for s in SPLITS if fractions[s] > 0]
    for key in order:
        counts = Counter(c.label for c in groups[key])

        def score(split: str, counts: Counter[str] = counts) -> float:
            return sum(
                n * (target[split][lab] - current[split][lab]) / target[split][lab]
                for lab, n in counts.items()
            )

        best = max(open_splits, key=score)  # max keeps the first of equals: train, val, test
        split_of_group[key] = best
        current[best].update(counts)

    plan = SplitPlan(
        {c.sha256: split_of_group[group_key(c)] for c in humans}, mode,
        forced_test=sum(len(groups[k]) for k in forced),
    )  # fmt: skip
    site_split = {c.site: plan.split_of[c.sha256] for c in humans} if grouped else {}
    for c in candidates:
        if c.source != MACHINE:
            continue
        if site_split.get(c.site, "train") == "train":
            plan.split_of[c.sha256] = "train"
        else:
            plan.held_out.append(c.sha256)
    return plan


# ---------------------------------------------------------------- the folder


def run_export(settings: Settings, export_id: int) -> DatasetExport:
    """Build a queued (or interrupted) export's folder and record the result; idempotent."""
    from service.db import session_scope

    with session_scope(settings.db_url) as session:
        export = get_export(session, export_id)
        if export.status == ExportStatus.DONE:
            return export
        export.status = ExportStatus.RUNNING
        export.error = None
        options = ExportOptions.from_dict(export.options)
        snapshot_at = utcnow()
        candidates, excluded, ruled_out = collect_candidates(session, options)
        test_set = frozen_test_set(session, settings)
    try:
        path, card = write_export(
            settings, export_id, options, candidates, excluded, ruled_out, snapshot_at,
            set(test_set.sha256) if test_set else set(),
        )  # fmt: skip
    except Exception as exc:
        with session_scope(settings.db_url) as session:
            export = get_export(session, export_id)
            export.status, export.error = ExportStatus.FAILED, str(exc)[:2000]
            export.finished_at = utcnow()
        raise
    with session_scope(settings.db_url) as session:
        export = get_export(session, export_id)
        export.status, export.path = ExportStatus.DONE, str(path)
        export.counts = {
            "total": card["total"],
            "splits": card["splits"],
            "classes": card["classes"],
            "sources": card["sources"],
            "split_mode": card["split_mode"],
            "snapshot_at": card["snapshot_at"],
        }
        export.finished_at = utcnow()
        return export


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
            writer.writerows(rows)
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


# ---------------------------------------------------------------- the card


def build_card(
    export_id: int,
    options: ExportOptions,
    rows: list[dict[str, Any]],
    plan: SplitPlan,
    excluded: Counter[str],
    dropped: dict[str, int],
    unsafe: dict[str, int],
    snapshot_at: datetime,
    linked: int,
    manifest_sha256: str,
) -> dict[str, Any]:
    """The dataset card: what is in the export, how it was split, what was left out."""
    classes: dict[str, dict[str, int]] = {}
    for r in rows:
        per = classes.setdefault(r["label"], {s: 0 for s in (*SPLITS, "total")})
        per[r["split"]] += 1
        per["total"] += 1
    sites: dict[str, list[str]] = {
        s: sorted({r["site"] for r in rows if r["split"] == s}) for s in SPLITS
    }
    warnings = [
        f"class {lab!r} has no {split} image"
        for lab, per in sorted(classes.items())
        for split in SPLITS
        if per[split] == 0 and options.fractions()[split] > 0
    ]
    return {
        "format": "herpscore-dataset/1",
        "export_id": export_id,
        "created_at": utcnow().isoformat(timespec="seconds"),
        "snapshot_at": snapshot_at.isoformat(),
        "options": asdict(options),
        "split_mode": plan.mode,
        "split_rule": (
            "whole sites (top-level folder within the job) per split, greedy per class"
            if plan.mode == "site-grouped"
            else "image by image, stratified by label (fewer than two sites)"
        ),
        "total": len(rows),
        "splits": {s: sum(1 for r in rows if r["split"] == s) for s in SPLITS},
        "classes": dict(sorted(classes.items())),
        "sources": dict(Counter(r["source"] for r in rows)),
        "sites": sites,
        "frozen_test_images": plan.forced_test,
        "dropped_classes": dict(sorted(dropped.items())),
        "unsafe_labels": unsafe,
        "excluded": {k: v for k, v in sorted(excluded.items()) if v},
        "files": {"hard_links": linked, "copies": len(rows) - linked},
        "manifest_sha256": manifest_sha256,
        "warnings": warnings,
    }


def render_card(card: dict[str, Any]) -> str:
    """README.md: the card for humans."""
    lines = [
        f"# Dataset export {card['export_id']}",
        "",
        f"Labels as of {card['snapshot_at']}; written {card['created_at']}.",
        f"Split: {card['split_mode']} ({card['split_rule']}).",
        f"Options: `{json.dumps(card['options'])}`.",
        "",
        "| class | train | val | test | total |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, per in card["classes"].items():
        lines.append(
            f"| {label} | {per['train']} | {per['val']} | {per['test']} | {per['total']} |"
        )
    s = card["splits"]
    lines += [
        f"| **all** | {s['train']} | {s['val']} | {s['test']} | {card['total']} |",
        "",
        f"Sources: {card['sources']}. Sites per split: "
        + ", ".join(f"{k} {len(v)}" for k, v in card["sites"].items())
        + ".",
    ]
    if card["dropped_classes"]:
        lines.append(
            f"Dropped classes (fewer than {card['options']['min_per_class']} images): "
            + ", ".join(f"{k} ({v})" for k, v in card["dropped_classes"].items())
        )
    if card["excluded"]:
        lines.append("Left out: " + ", ".join(f"{k} {v}" for k, v in card["excluded"].items()))
    lines += [f"Warning: {w}" for w in card["warnings"]]
    lines.append("")
    return "\n".join(lines)


def read_manifest(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- the frozen test set


@dataclass(frozen=True)
class TestSet:
    """The verified images every promotion is judged on: one export's test split, frozen."""

    export_id: int
    folder: str
    items: list[dict[str, str]]  # {"path" (relative to folder), "sha256", "label"}
    pinned: bool
    frozen_at: str

    @property
    def sha256(self) -> list[str]:
        return [i["sha256"] for i in self.items]

    @property
    def digest(self) -> str:
        """sha256 of the sorted sha256 list: one value that names the set."""
        return hashlib.sha256("\n".join(sorted(self.sha256)).encode()).hexdigest()

    def summary(self) -> dict[str, Any]:
        return {
            "export_id": self.export_id,
            "n": len(self.items),
            "labels": dict(sorted(Counter(i["label"] for i in self.items).items())),
            "sha256_digest": self.digest,
            "pinned": self.pinned,
            "frozen_at": self.frozen_at,
        }


def frozen_test_set(session: Session, settings: Settings) -> TestSet | None:
    """The frozen test set; the first time, freeze the first export that has a test split."""
    path = exports_root(settings) / TEST_SET_FILE
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        return TestSet(**data)
    for export in session.scalars(
        select(DatasetExport)
        .where(DatasetExport.status == ExportStatus.DONE)
        .order_by(DatasetExport.id)
    ):
        if export.path and (export.counts or {}).get("splits", {}).get("test"):
            return _freeze(settings, export, pinned=False)
    return None


def pin_test_set(session: Session, settings: Settings, export_id: int) -> TestSet:
    """An admin's choice: judge promotions on this export's test split from now on."""
    export = get_export(session, export_id)
    if export.status != ExportStatus.DONE or not export.path:
        raise InvalidState(f"export {export_id} is not finished")
    if not (export.counts or {}).get("splits", {}).get("test"):
        raise InvalidState(f"export {export_id} has no test split")
    return _freeze(settings, export, pinned=True)


def _freeze(settings: Settings, export: DatasetExport, pinned: bool) -> TestSet:
    assert export.path is not None
    items = [
        {"path": r["path"], "sha256": r["sha256"], "label": r["label"]}
        for r in read_manifest(Path(export.path))
        if r["split"] == "test"
    ]
    test_set = TestSet(
        export.id, export.path, items, pinned, utcnow().isoformat(timespec="seconds")
    )
    target = exports_root(settings) / TEST_SET_FILE
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(test_set), indent=1) + "\n", encoding="utf-8")
    tmp.replace(target)
    return test_set


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds") if value else ""
