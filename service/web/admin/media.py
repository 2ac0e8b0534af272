"""Photos and thumbnails, served only for images the database knows inside the allowed roots."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from flask import Response, abort, current_app, redirect, request, send_file, url_for
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as BaseResponse

from service import copies, display, thumbnails
from service.errors import NotFound
from service.models import Image, Role
from service.paths import scanned_file
from service.settings import Settings
from service.tasks_client import enqueue
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
BROWSER_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP"}  # an <img> shows them as they are


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
        path, sha256, fmt, size = image.path, image.sha256, image.format, image.size_bytes
    try:
        resolved = scanned_file(path, size, settings.resolved_roots)
    except NotFound as exc:
        abort(404, f"image {image_id} {exc}")
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
    """The small JPEG a worker made; while it is missing, a placeholder and a render queued."""
    return _rendered_copy(image_id, thumbnails.THUMBNAIL_SIDE)


@bp.get("/images/<id:image_id>/display.jpg")
@role_required(Role.VIEWER)
def image_display(image_id: int) -> ResponseReturnValue:
    """The screen-sized JPEG (the review page's photo); while it is missing, the original."""
    return _rendered_copy(image_id, display.DISPLAY_SIDE)


def _rendered_copy(image_id: int, side: int) -> ResponseReturnValue:
    # Never decodes: a photo can take a decode's worth of memory (hundreds of MB), which
    # the workers budget for and a web process must not (docs/reliability.md).
    settings = current_settings()
    image = servable_image(settings, image_id)
    if image.sha256 is None:
        return _placeholder()
    etag = f"{image.sha256}-{side}"
    if cached := _not_modified(etag):
        return cached
    try:
        state = copies.ask_for_copy(
            settings, image.sha256, side, lambda: _send_render(settings, image_id, side)
        )
        if state is copies.CopyState.READY:
            # A few hundred kilobytes at most: read whole, so no handle outlives the request.
            body = copies.copy_file(settings, image.sha256, side).read_bytes()
            response = Response(body, mimetype="image/jpeg")
            return _cache_privately(response, etag, THUMBNAIL_MAX_AGE)
    except OSError as exc:  # an unwritable cache folder, or the copy wiped meanwhile
        log.info("no %s px copy of image %s: %s", side, image_id, exc)
        return _placeholder()
    if state is copies.CopyState.FAILED:
        return _placeholder()
    if side == display.DISPLAY_SIDE and image.format in BROWSER_FORMATS:
        # The browser shows the original as it is (bytes, no decode here) until the copy exists.
        return _pending(redirect(url_for("admin.image_file", image_id=image_id)))
    return _pending(_placeholder("pending.svg"))


def _send_render(settings: Settings, image_id: int, side: int) -> bool:
    return enqueue(settings, copies.RENDER_TASKS[side], [image_id]).queued


def _pending(response: BaseResponse) -> BaseResponse:
    # Not cached: the page's script asks again once the worker has had a few seconds.
    response.headers["X-Herpscore-Thumbnail"] = "pending"
    response.cache_control.max_age = None
    response.cache_control.no_store = True
    return response


def _placeholder(name: str = "placeholder.svg") -> Response:
    svg = Path(current_app.static_folder or "", name).read_bytes()
    response = Response(svg, mimetype="image/svg+xml")
    response.headers["X-Herpscore-Thumbnail"] = "placeholder"
    return _cache_privately(response, None, PLACEHOLDER_MAX_AGE)
