"""What decoding an image holds in memory, counted from its header before any pixel is
decoded, and each process's budget for the decodes in flight (docs/reliability.md)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageMode

# Largest decoded image (width x height x bytes per pixel of its mode) by default: an RGB
# photo of 128 MP. Checked before any pixel is decoded (see `imaging.decode_upright`).
DEFAULT_MAX_DECODED_BYTES = 384 * 1024 * 1024
WEBP_BYTES_PER_PIXEL = 16  # what decoding a WebP holds at once (see `decoded_bytes`)


def decoded_bytes(img: Image.Image) -> int:
    """The bytes Pillow holds for this image once decoded (at its mode's pixel size; a
    palette image at its expanded size)."""
    if img.format == "WEBP":
        # Pillow decodes WebP through libwebp's animation decoder: its RGBA canvas and frame,
        # the frame copied out as bytes, then the image. A 100 MP lossless WebP of 4 KB
        # took 1.5 GB per decode (benchmarks/results/memory_bound.md).
        return img.width * img.height * WEBP_BYTES_PER_PIXEL
    if img.mode == "P":
        return img.width * img.height * 4  # palette images are expanded to RGB(A) at once
    try:
        mode = ImageMode.getmode(img.mode)
        per_pixel = np.dtype(mode.typestr).itemsize * len(mode.bands)
    except (KeyError, TypeError, ValueError):
        per_pixel = 8  # an exotic mode: assume the widest
    return img.width * img.height * max(per_pixel, 1)


def jpeg_coefficient_bytes(img: Image.Image) -> int:
    """What libjpeg holds besides the pixels while it decodes a progressive JPEG: every DCT
    coefficient of the whole image (2 bytes each, one per pixel of each component at its
    sampling), at full size whatever the draft scale. 0 for anything else.

    A 118 MP progressive JPEG without chroma subsampling held 680 MB to make a 224 px input
    (benchmarks/results/memory_bound.md) while its 1/8-scale draft counted 5 MB. Call it
    before `draft`, which shrinks `size`.
    """
    if img.format not in ("JPEG", "MPO") or not img.info.get("progressive"):
        return 0
    layers = getattr(img, "layer", None) or []
    if not layers:
        return 0
    h_max = max(int(layer[1]) for layer in layers) or 1
    v_max = max(int(layer[2]) for layer in layers) or 1
    width, height = img.size
    share = sum(int(layer[1]) * int(layer[2]) for layer in layers) / (h_max * v_max)
    return int(2 * width * height * share)


class DecodeBudget:
    """The decoded bytes a process lets be in flight at once, across its threads.

    Each decode holds its size (as `decoded_bytes` counts it) while it runs, and waits while
    other decodes hold so much that its own would pass the limit; a decode alone always
    runs. So the decode threads of a scoring process (the web never decodes: it asks the
    workers for copies) hold at most one limit's worth of decoded images at once however
    many of them meet big files together, while small photos (a 12 MP JPEG decodes at a
    quarter or an eighth of its size) never wait for each other.
    """

    def __init__(self) -> None:
        self._used = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, size: int, limit: int) -> Iterator[None]:
        with self._changed:
            while self._used and self._used + size > limit:
                self._changed.wait()
            self._used += size
        try:
            yield
        finally:
            with self._changed:
                self._used -= size
                self._changed.notify_all()

    @property
    def in_flight(self) -> int:
        return self._used


DECODES = DecodeBudget()  # this process's, shared by every decode in it
