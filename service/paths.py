"""Which folders and files herpscore may read: everything must resolve under an allowed root."""

from __future__ import annotations

import os
from pathlib import Path

from service.errors import BadInput, Forbidden, NotFound

MAX_NAME_BYTES = 255  # NAME_MAX on Linux, macOS and Windows' NTFS


def resolve_job_folder(folder: str, roots: list[Path]) -> Path:
    """Resolve a requested folder (symlinks, `..`) and check it lies under an allowed root.

    A relative folder is taken relative to the first allowed root. The root check comes
    before the existence check, so a refusal tells nothing about folders outside the roots.
    """
    if not folder or not folder.strip() or "\x00" in folder:
        raise BadInput("folder must be a non-empty path")
    if not roots:
        raise Forbidden(
            "no allowed roots are configured: set HERPSCORE_ALLOWED_ROOTS to the folders "
            "that herpscore may read"
        )
    outside = Forbidden(
        f"folder {folder!r} is outside the allowed roots",
        {"allowed_roots": [str(r) for r in roots]},
    )
    # The OS refuses such a name (ENAMETOOLONG) wherever it is.
    if any(len(os.fsencode(part)) > MAX_NAME_BYTES for part in Path(folder).parts):
        raise BadInput(f"folder has a name longer than {MAX_NAME_BYTES} bytes")
    try:
        requested = Path(folder).expanduser()
    except RuntimeError:  # `~nosuchuser`: the same answer as `~root`, so no OS user leaks
        raise outside from None
    try:  # RuntimeError: a symlink loop
        if not requested.is_absolute():
            requested = roots[0] / requested
        resolved = requested.resolve(strict=False)
    except (OSError, RuntimeError) as exc:
        raise BadInput(f"folder cannot be resolved: {exc}") from None
    if not any(resolved.is_relative_to(root) for root in roots):
        raise outside
    try:
        is_dir = resolved.is_dir()
    except OSError:  # e.g. a path longer than PATH_MAX
        is_dir = False
    if not is_dir:
        raise BadInput(f"folder {folder!r} does not exist or is not a folder")
    if not is_utf8(str(resolved)):
        raise BadInput(
            f"folder '{printable(str(resolved))}' has a name that is not valid UTF-8: rename it"
        )
    return resolved


def is_utf8(path: str) -> bool:
    """False for a name whose bytes are not UTF-8 (Python holds them as lone surrogates,
    which a database cannot store)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str) -> str:
    """A name as UTF-8 text, its undecodable bytes written as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_inside(path: Path, folder: Path) -> bool:
    """True when `path`, with every symlink resolved, lies inside `folder` (already resolved)."""
    try:
        return path.resolve(strict=True).is_relative_to(folder)
    except (OSError, RuntimeError):
        return False


def scanned_file(path: str, size_bytes: int | None, roots: list[Path]) -> Path:
    """A scanned image's file, resolved, while it still lies inside an allowed root with
    the size the scan saw; NotFound otherwise (gone, moved out by a symlink, or changed)."""
    candidate = Path(path)
    try:
        resolved = candidate.resolve(strict=True) if candidate.is_absolute() else None
    except (OSError, RuntimeError):  # gone, unreadable, or a symlink loop
        resolved = None
    if resolved is None or not any(is_inside(resolved, root) for root in roots):
        raise NotFound("is not available")
    try:
        changed = size_bytes is not None and resolved.stat().st_size != size_bytes
    except OSError:
        changed = True
    if changed:
        raise NotFound("changed on disk since it was scanned")
    return resolved
