"""The frozen test set: one export's verified test split that every promotion is judged on."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.errors import InvalidState
from service.exports.folder import read_manifest
from service.exports.records import exports_root, get_export
from service.models import DatasetExport, ExportStatus, utcnow
from service.settings import Settings

TEST_SET_FILE = "test_set.json"


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
