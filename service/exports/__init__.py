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

from service.exports.candidates import (
    HUMAN,
    MACHINE,
    Candidate,
    collect_candidates,
    current_decisions,
    deduplicate,
    is_safe_label,
    site_of,
)
from service.exports.card import build_card, render_card
from service.exports.folder import MANIFEST_COLUMNS, read_manifest, write_export
from service.exports.options import SPLITS, ExportOptions
from service.exports.records import (
    create_export,
    export_to_dict,
    exports_root,
    get_export,
    list_exports,
)
from service.exports.run import run_export
from service.exports.splits import SplitPlan, plan_splits
from service.exports.test_set import TEST_SET_FILE, TestSet, frozen_test_set, pin_test_set

__all__ = [
    "HUMAN",
    "MACHINE",
    "MANIFEST_COLUMNS",
    "SPLITS",
    "TEST_SET_FILE",
    "Candidate",
    "ExportOptions",
    "SplitPlan",
    "TestSet",
    "build_card",
    "collect_candidates",
    "create_export",
    "current_decisions",
    "deduplicate",
    "export_to_dict",
    "exports_root",
    "frozen_test_set",
    "get_export",
    "is_safe_label",
    "list_exports",
    "pin_test_set",
    "plan_splits",
    "read_manifest",
    "render_card",
    "run_export",
    "site_of",
    "write_export",
]
