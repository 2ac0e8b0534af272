"""Label matching: one normalisation (case, spaces, hyphens, underscores, diacritics) for labels.

The review page's script (static/review-labels.js, `key`) folds text the same way, so what the
reviewer sees matched is what the server matches.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

_SEPARATORS = re.compile(r"[\s_\-]+")


def label_key(text: str) -> str:
    """The form two labels are compared in: `Crotalus-atrox` and `crotalus atrox` are one."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(ch for ch in decomposed if not unicodedata.category(ch).startswith("M"))
    return _SEPARATORS.sub(" ", bare.lower()).strip()


def canonical_label(
    typed: str, known: Iterable[str], names: Mapping[str, Iterable[str]] | None = None
) -> str:
    """The known label that `typed` matches under label_key, else the known label one of whose
    `names` (common or scientific, from the species table) it matches, else `typed` as given."""
    key = label_key(typed)
    known = list(known)
    for label in known:
        if label_key(label) == key:
            return label
    for label in known:
        if any(name and label_key(name) == key for name in (names or {}).get(label, ())):
            return label
    return typed
