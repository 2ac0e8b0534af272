"""Image decoding and preprocessing shared by the workers and training's evaluation.

What is served is what was trained: both sides call `load_rgb` + `to_array` with the
`InputSpec` read from a model's metadata.json, never with constants.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from service.decode_memory import (
    DECODES,
    DEFAULT_MAX_DECODED_BYTES,
    decoded_bytes,
    jpeg_coefficient_bytes,
)

# herpscore enforces its own, configurable pixel limit (see `open_checked`) before any pixel
# is decoded; Pillow's global bomb check would otherwise raise or warn at its own fixed limit.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

ResizeRule = Literal["shorter_side", "squash"]
_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}
MAX_ASPECT_RATIO = 50
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_BLOCK_PIXELS = 1 << 20  # wide modes are converted this many pixels at a time
_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825
_DATETIME_ORIGINAL = 36867
_DATETIME = 306
_OFFSET_TIME_ORIGINAL = 0x9011
_OFFSET_TIME = 0x9010
MAX_OFFSET_MINUTES = 14 * 60
_OFFSET = re.compile(r"^\s*([+-])(\d{1,2}):?(\d{2})\s*$")


class ImageError(Exception):
    """An image that cannot be used; `reason` is a short stable code stored with the row."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its input: the `input` block of metadata.json."""

    size: int = 224
    resize: ResizeRule = "shorter_side"
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if not 8 <= self.size <= 4096:
            raise ValueError(f"input size {self.size} is out of range 8..4096")
        if self.resize not in ("shorter_side", "squash"):
            raise ValueError(f"resize must be 'shorter_side' or 'squash', not {self.resize!r}")
        if not 0.05 < self.crop_pct <= 1.0:
            raise ValueError(f"crop_pct {self.crop_pct} is out of range (0.05, 1]")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values, std all positive")

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> InputSpec:
        """Read the `input` block of a model's metadata.json."""
        block = metadata.get("input")
        if not isinstance(block, dict):
            raise ValueError("metadata.json has no 'input' object")
        try:
            return cls(
                size=int(block["size"]),
                resize=block.get("resize", "shorter_side"),
                crop_pct=float(block.get("crop_pct", 0.875)),
                interpolation=str(block.get("interpolation", "bilinear")),
                mean=tuple(float(v) for v in block.get("mean", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
                std=tuple(float(v) for v in block.get("std", (0.5, 0.5, 0.5))),  # type: ignore[arg-type]
            )
        except KeyError as exc:
            raise ValueError(f"metadata.json input block lacks {exc.args[0]!r}") from None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"], data["std"] = list(self.mean), list(self.std)
        return data

    @property
    def resize_to(self) -> int:
        """Shorter-side target before the centre crop (timm's floor(size / crop_pct))."""
        return math.floor(self.size / self.crop_pct)

    @property
    def draft_side(self) -> int:
        """The least short side a JPEG may be decoded at for this input (`decode_upright`)."""
        return self.resize_to if self.resize == "shorter_side" else self.size


@dataclass
class ImageInfo:
    """What the scan records of a file without decoding its pixels."""

    width: int
    height: int
    format: str
    captured_at: datetime | None = None  # camera-local (EXIF DateTimeOriginal), no zone
    captured_offset_minutes: int | None = None  # from OffsetTimeOriginal, when present
    exif_datetime_raw: str | None = None
    gps_lat: float | None = None
    gps_lon: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


NOT_A_FILE = "not a regular file (a FIFO, socket or device): never opened"


def open_checked(path: str | os.PathLike[str], max_pixels: int, max_bytes: int) -> Image.Image:
    """Open an image lazily, refusing empty, oversized, unknown or over-pixelled files."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise ImageError("unreadable", f"cannot stat file: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):  # opening a FIFO would wait for a writer forever
        raise ImageError("not_a_file", NOT_A_FILE)
    size = info.st_size
    if size == 0:
        raise ImageError("empty_file", "file has zero bytes")
    if size > max_bytes:
        raise ImageError("file_too_large", f"{size} bytes exceeds the limit of {max_bytes}")
    try:
        img = Image.open(path)
    except UnidentifiedImageError:
        raise ImageError("not_an_image", "not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError("corrupt", f"cannot read image header: {exc}") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        img.close()
        raise ImageError("corrupt", f"invalid dimensions {width}x{height}")
    if width * height > max_pixels:
        img.close()
        raise ImageError(
            "too_many_pixels", f"{width}x{height} exceeds the limit of {max_pixels} pixels"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        # The shorter-side resize scales the longer side with it: a 100-byte 20000x1 PNG
        # would become 5 million x 256 pixels (5 GB) before the centre crop.
        img.close()
        raise ImageError(
            "extreme_aspect_ratio", f"{width}x{height} is more than {MAX_ASPECT_RATIO:g}:1"
        )
    return img


def probe(path: str | os.PathLike[str], max_pixels: int, max_bytes: int) -> ImageInfo:
    """Header-only look at a file: dimensions (after EXIF rotation), capture time, GPS."""
    with open_checked(path, max_pixels, max_bytes) as img:
        width, height = img.size
        info = ImageInfo(width=width, height=height, format=img.format or "")
        if img.format == "PNG" and "exif" not in img.info:
            # Pillow would decode every pixel to look for an eXIf chunk after the image
            # data (a 94 MP RGBA PNG took the scan to 432 MB): such a PNG is probed
            # without EXIF. An eXIf chunk before the image data is read as usual.
            return info
        try:
            exif = img.getexif()
        except Exception:  # noqa: BLE001 - malformed EXIF must not make a photo unusable
            return info
        if exif.get(0x0112) in (5, 6, 7, 8):
            info.width, info.height = height, width
        info.exif_datetime_raw, info.captured_at, info.captured_offset_minutes = _capture_time(exif)
        info.gps_lat, info.gps_lon = _gps(exif)
        return info


def decode_upright(
    path: str | os.PathLike[str],
    max_pixels: int,
    max_bytes: int,
    at_least: int | None = None,
    finish: Callable[[Image.Image], Image.Image] = lambda img: img,
    max_decoded: int | None = None,
) -> Image.Image:
    """Decode a file to an upright RGB image, then apply `finish` (resize, crop, thumbnail).

    With `at_least`, a JPEG is decoded at 1/2, 1/4 or 1/8 scale by libjpeg (DCT scaling)
    while both sides stay >= at_least. Malformed EXIF leaves the image as stored rather
    than losing the photo. Every decoding problem becomes an ImageError with a reason.
    An image that would decode to more than `max_decoded` bytes (default
    DEFAULT_MAX_DECODED_BYTES; bytes per pixel by its mode) is refused before decoding.
    """
    source = open_checked(path, max_pixels, max_bytes)
    limit = max_decoded or DEFAULT_MAX_DECODED_BYTES
    try:
        coefficients = jpeg_coefficient_bytes(source)  # at full size, whatever the draft
        if at_least and source.format in ("JPEG", "MPO"):  # MPO: camera JPEG + preview
            source.draft("RGB", (at_least, at_least))
        if (size := decoded_bytes(source) + coefficients) > limit:
            raise ImageError(
                "too_many_pixels",
                f"{source.width}x{source.height} {source.mode} decodes to "
                f"{size / 2**20:.0f} MB, over the limit of {limit / 2**20:.0f} MB",
            )
        with DECODES.hold(size, limit):
            source.load()
            # Grey stays one byte a pixel until `finish` has shrunk it: same pixels, a third
            # of the memory.
            out = finish(_rgb_or_grey(upright(source)))
            if out.mode != "RGB":
                out = out.convert("RGB")
            if out is source:
                out = out.copy()  # never hand out the file-backed image closed below
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError("corrupt", f"cannot decode image data: {exc}") from None
    finally:
        source.close()
    return out


_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def upright(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; the image itself when upright.

    Unlike ImageOps.exif_transpose, nothing is copied for an upright photo and the EXIF
    block is not rewritten (only pixels leave here): its re-encoding raised AttributeError
    on EXIF values of the wrong type, which fuzzing found. Malformed EXIF leaves the image
    as stored rather than losing the photo.
    """
    try:
        orientation = img.getexif().get(_ORIENTATION)
    except Exception:  # noqa: BLE001 - any parse error in metadata means "as stored"
        return img
    method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    return img.transpose(method) if method is not None else img


def load_rgb(
    path: str | os.PathLike[str],
    spec: InputSpec,
    max_pixels: int,
    max_bytes: int,
    max_decoded: int | None = None,
    on_upright: Callable[[Image.Image], None] | None = None,
) -> Image.Image:
    """Decode a file to an RGB image of spec.size x spec.size (EXIF-rotated, resized, cropped).

    `on_upright` sees the upright decode before the model's resize (the scoring worker cuts
    the photo's thumbnail from it, so the file is decoded once).
    """

    def finish(img: Image.Image) -> Image.Image:
        if on_upright is not None:
            on_upright(img)
        return resize_and_crop(img, spec)

    return decode_upright(
        path,
        max_pixels,
        max_bytes,
        at_least=spec.draft_side,
        finish=finish,
        max_decoded=max_decoded,
    )


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha over white, 16-bit scaled, palette expanded."""
    out = _rgb_or_grey(img)
    return out if out.mode == "RGB" else out.convert("RGB")


def _grey_from_wide(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer or float grey to 8-bit, a block of rows at a time: the whole
    image at once holds several float64 copies of it in memory."""
    mode, (width, height) = img.mode, img.size
    high = 0.0 if mode.startswith("I;16") else img.getextrema()[1]
    high = max(float(high), 0.0) if isinstance(high, int | float) else 0.0
    if mode.startswith("I;16"):
        top = 65535.0  # the mode says 16-bit: a dark frame must stay dark
    elif mode == "F":
        top = 1.0 if high <= 1.0 else 255.0
    else:
        top = 65535.0 if high > 255 else 255.0
    grey = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _BLOCK_PIXELS // max(width, 1))
    for top_row in range(0, height, rows):
        bottom = min(height, top_row + rows)
        block = np.asarray(img.crop((0, top_row, width, bottom)), dtype=np.float64)
        grey[top_row:bottom] = np.clip(block * (255.0 / top), 0, 255).round()
    return Image.fromarray(grey, "L")


def _rgb_or_grey(img: Image.Image) -> Image.Image:
    """`to_rgb`, except that grey images stay 8-bit grey ("L")."""
    mode = img.mode
    if mode in ("RGB", "L"):
        return img
    if mode in _WIDE_MODES:
        return _grey_from_wide(img)
    if mode == "1":
        return img.convert("L")
    try:
        if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            mode == "P" and "transparency" in img.info
        ):
            return _over_white(img)
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError("unsupported_mode", f"cannot convert mode {mode} to RGB: {exc}") from None


def _over_white(img: Image.Image) -> Image.Image:
    """Composite an image with alpha over white, a block of rows at a time: the whole image
    at once holds several full-size RGBA copies in memory."""
    width, height = img.size
    out = Image.new("RGB", img.size, (255, 255, 255))
    rows = max(1, _BLOCK_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        box = (0, top, width, min(height, top + rows))
        block = img.crop(box).convert("RGBA")  # a crop keeps the palette and transparency
        white = Image.new("RGBA", block.size, (255, 255, 255, 255))
        out.paste(Image.alpha_composite(white, block).convert("RGB"), box[:2])
    return out


def resize_and_crop(img: Image.Image, spec: InputSpec) -> Image.Image:
    """Apply the model's resize rule: `shorter_side` + centre crop, or `squash`."""
    resample = _INTERPOLATIONS[spec.interpolation]
    size = spec.size
    if spec.resize == "squash":
        return img if img.size == (size, size) else img.resize((size, size), resample)
    width, height = img.size
    short = spec.resize_to
    # torchvision's Resize(int): the shorter side becomes `short`, the longer keeps the ratio.
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), resample)
    left = round((new_w - size) / 2.0)
    top = round((new_h - size) / 2.0)
    return img.crop((left, top, left + size, top + size))


def to_array(img: Image.Image, spec: InputSpec, out: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 HWC -> normalised float32 CHW, written into `out` when given."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.shape != (spec.size, spec.size, 3):
        raise ValueError(f"expected {(spec.size, spec.size, 3)}, got {arr.shape}")
    std = np.asarray(spec.std, dtype=np.float32)
    scale = (1.0 / (255.0 * std)).reshape(3, 1, 1)
    offset = (-np.asarray(spec.mean, dtype=np.float32) / std).reshape(3, 1, 1)
    if out is None:
        out = np.empty((3, spec.size, spec.size), dtype=np.float32)
    np.multiply(arr.transpose(2, 0, 1), scale, out=out, casting="unsafe")
    out += offset
    return out


def preprocess(
    path: str | os.PathLike[str],
    spec: InputSpec,
    max_pixels: int = 120_000_000,
    max_bytes: int = 256 * 1024 * 1024,
) -> np.ndarray:
    """File -> model input (3, size, size) float32; raises ImageError for unusable files."""
    return to_array(load_rgb(path, spec, max_pixels, max_bytes), spec)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes (hashlib.file_digest: no Python-level read loop).

    Only a regular file is read: a FIFO (or a link to one) would block the open forever,
    so it is opened without blocking and refused as ImageError("not_a_file").
    """
    import hashlib

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError("not_a_file", NOT_A_FILE)
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _capture_time(exif: Image.Exif) -> tuple[str | None, datetime | None, int | None]:
    """(raw EXIF text, camera-local time, UTC offset in minutes when the file gives one)."""
    ifd = exif.get_ifd(_EXIF_IFD)
    original = ifd.get(_DATETIME_ORIGINAL)
    raw = original or exif.get(_DATETIME)
    if not isinstance(raw, str):
        return None, None, None
    raw = raw.strip("\x00 ").strip()[:64]
    try:
        local = datetime.strptime(raw, "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return raw, None, None
    offset = parse_offset(ifd.get(_OFFSET_TIME_ORIGINAL if original else _OFFSET_TIME))
    return raw, local, offset


def parse_offset(text: Any) -> int | None:
    """An EXIF/ISO UTC offset (`+08:00`, `-0530`, `Z`) in minutes; None when absent or bad."""
    if not isinstance(text, str):
        return None
    text = text.strip("\x00 ").strip()
    if text.upper() == "Z":
        return 0
    match = _OFFSET.match(text)
    if not match:
        return None
    minutes = int(match[2]) * 60 + int(match[3])
    if minutes > MAX_OFFSET_MINUTES or int(match[3]) >= 60:
        return None
    return -minutes if match[1] == "-" else minutes


def _gps(exif: Image.Exif) -> tuple[float | None, float | None]:
    gps = exif.get_ifd(_GPS_IFD)
    try:
        lat = _dms(gps[2], gps.get(1, "N"))
        lon = _dms(gps[4], gps.get(3, "E"))
    except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
        return None, None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None, None
    return lat, lon


def _dms(values: Any, ref: Any) -> float:
    deg, minutes, seconds = (float(v) for v in values)
    decimal = deg + minutes / 60.0 + seconds / 3600.0
    if isinstance(ref, bytes):
        ref = ref.decode("ascii", "ignore")
    return -decimal if str(ref).strip().upper() in ("S", "W") else decimal


def is_image_name(path: Path, extensions: list[str]) -> bool:
    """True when the file's extension is one of the configured image extensions."""
    return path.suffix.lower().lstrip(".") in extensions
