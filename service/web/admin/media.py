"""Photos and thumbnails, served only for images the database knows inside the allowed roots."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flask import Response, abort, current_app, request, send_file
from flask.typing import ResponseReturnValue

from service import display, thumbnails
from service.imaging import ImageError
from service.models import Image, Role
from service.paths import is_inside
from service.settings import Settings
from service.web.admin import bp, role_required
from service.web.context import current_settings, db_read

log = logging.getLogger(__name__)

IMAGE_MAX_AGE = 3600
THUMBNAIL_MAX_AGE = 7 * 24 * 3600
PLACEHOLDER_MAX_AGE = 60  # a file that failed may be fixed; do not cache the failure long
MIMETYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}


@dataclass(frozen=True)
class ServableImage:
    path: Path  # resolved, inside an allowed root
    sha256: str | None
    format: str | None


def servable_image(settings: Settings, image_id: int) -> ServableImage:
    """The image's file if the database knows the id and the file still resolves inside an
    allowed root with the size the scan saw; a 404 for every refusal."""
    with db_read() as session:
        image = session.get(Image, image_id)
        if image is None:
            abort(404, f"image {image_id} does not exist")
        path, sha256, fmt, size = Path(image.path), image.sha256, image.format, image.size_bytes
    try:
        resolved = path.resolve(strict=True) if path.is_absolute() else None
    except (OSError, RuntimeError):  # gone, unreadable, or a symlink loop
        resolved = None
    if resolved is None or not any(is_inside(resolved, root) for root in settings.resolved_roots):
        abort(404, f"image {image_id} is not available")
    try:
        changed = size is not None and resolved.stat().st_size != size
    except OSError:
        changed = True
    if changed:
        abort(404, f"image {image_id} changed on disk since it was scanned")
    return ServableImage(resolved, sha256, fmt)


def _cache_privately(response: Response, etag: str | None, max_age: int) -> Response:
    if etag:
        response.set_etag(etag)
    response.cache_control.public = False
    response.cache_control.private = True
    response.cache_control.max_age = max_age
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    return response


def _not_modified(etag: str) -> Response | None:
    if etag in request.if_none_match:
        return _cache_privately(Response(status=304), etag, THUMBNAIL_MAX_AGE)
    return None


@bp.get("/images/<id:image_id>")
@role_required(Role.VIEWER)
def image_file(image_id: int) -> ResponseReturnValue:
    """The original photo, as the browser can show it."""
    image = servable_image(current_settings(), image_id)
    mimetype = MIMETYPES.get(image.format or "")
    if mimetype is None or image.sha256 is None:
        abort(404, f"image {image_id} is not a viewable picture")
    if cached := _not_modified(image.sha256):
        return cached
    response = send_file(image.path, mimetype=mimetype, conditional=False, etag=False)
    return _cache_privately(response, image.sha256, IMAGE_MAX_AGE)


@bp.get("/images/<id:image_id>/thumbnail.jpg")
@role_required(Role.VIEWER)
def image_thumbnail(image_id: int) -> ResponseReturnValue:
    """A small JPEG made once per content; a placeholder when the photo cannot be decoded."""
    return _rendered_copy(image_id, thumbnails.THUMBNAIL_SIDE, thumbnails.ensure_thumbnail)


@bp.get("/images/<id:image_id>/display.jpg")
@role_required(Role.VIEWER)
def image_display(image_id: int) -> ResponseReturnValue:
    """A screen-sized JPEG (the review page's photo) made once per content."""
    return _rendered_copy(image_id, display.DISPLAY_SIDE, display.ensure_display_copy)


def _rendered_copy(
    image_id: int, side: int, ensure: Callable[[Settings, Path, str], Path]
) -> ResponseReturnValue:
    settings = current_settings()
    image = servable_image(settings, image_id)
    if image.sha256 is None:
        return _placeholder()
    etag = f"{image.sha256}-{side}"
    if cached := _not_modified(etag):
        return cached
    try:
        body = ensure(settings, image.path, image.sha256).read_bytes()
    except (ImageError, OSError) as exc:  # a corrupt photo or an unwritable cache folder
        log.info("no %s px copy of image %s: %s", side, image_id, exc)
        return _placeholder()
    # At most a few hundred kilobytes: read whole, so no file handle outlives the request.
    response = Response(body, mimetype="image/jpeg")
    return _cache_privately(response, etag, THUMBNAIL_MAX_AGE)


def _placeholder() -> Response:
    svg = Path(current_app.static_folder or "", "placeholder.svg").read_bytes()
    response = Response(svg, mimetype="image/svg+xml")
    response.headers["X-Herpscore-Thumbnail"] = "placeholder"
    return _cache_privately(response, None, PLACEHOLDER_MAX_AGE)
