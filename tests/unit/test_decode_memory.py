"""Decoding is bounded by decoded bytes (mode-aware), and a wide image converts in blocks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from service.decode_memory import WEBP_BYTES_PER_PIXEL, decoded_bytes, jpeg_coefficient_bytes
from service.imaging import ImageError, InputSpec, load_rgb, probe
from tests.support.hostile import write_big_png

MAKE = """
import sys
from PIL import Image
mode, side, fill = sys.argv[2], int(sys.argv[3]), eval(sys.argv[4])
Image.new(mode, (side, side), fill).save(sys.argv[1])
"""
# VmHWM, not ru_maxrss: the latter survives exec, so it would count the forking pytest.
DECODE = """
import re, sys
from service.imaging import InputSpec, load_rgb
img = load_rgb(sys.argv[1], InputSpec(size=224), 120_000_000, 256 * 2**20)
assert img.size == (224, 224) and img.getpixel((0, 0)) == eval(sys.argv[2]), img.getpixel((0, 0))
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
@pytest.mark.parametrize(
    ("mode", "side", "fill", "pixel", "old_peak_mb"),
    [
        ("I;16", 8000, "40000", "(156, 156, 156)", 1617),  # 128 MB decoded
        ("RGBA", 6000, "(10, 200, 30, 128)", "(132, 227, 142)", 717),  # 144 MB decoded
    ],
)
def test_a_wide_or_alpha_png_decodes_in_a_small_multiple_of_its_size(
    tmp_path: Path, mode: str, side: int, fill: str, pixel: str, old_peak_mb: int
) -> None:
    # Whole-image conversions held several full-size copies (float64 arrays for 16-bit,
    # RGBA + background + composite for alpha); now they run a block of rows at a time.
    # Each step runs in a fresh interpreter, so its peak RSS is the decode's.
    path = tmp_path / "wide.png"
    subprocess.run([sys.executable, "-c", MAKE, str(path), mode, str(side), fill], check=True)
    assert path.stat().st_size < 2_000_000  # a small file...
    done = subprocess.run(
        [sys.executable, "-c", DECODE, str(path), pixel],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    peak_mb = int(done.stdout.strip())
    assert peak_mb < 500 < old_peak_mb, f"peak RSS {peak_mb} MB"  # ...that took GBs


def test_the_decoded_size_limit_counts_the_bytes_of_the_mode(tmp_path: Path) -> None:
    spec = InputSpec(size=32)
    grey, rgba = tmp_path / "grey.png", tmp_path / "rgba.png"
    Image.new("L", (600, 600), 128).save(grey)
    Image.new("RGBA", (600, 600), (1, 2, 3, 255)).save(rgba)
    with Image.open(rgba) as img:
        assert decoded_bytes(img) == 600 * 600 * 4
    limit = 1_000_000  # over 600 x 600 x 1 byte, under 600 x 600 x 4
    assert load_rgb(grey, spec, 10**9, 10**9, max_decoded=limit).size == (32, 32)
    with pytest.raises(ImageError) as caught:
        load_rgb(rgba, spec, 10**9, 10**9, max_decoded=limit)
    assert caught.value.reason == "too_many_pixels"
    assert "RGBA decodes to 1 MB" in caught.value.message


PROBE = """
import re, sys
from service.imaging import probe
info = probe(sys.argv[1], 120_000_000, 256 * 2**20)
assert (info.width, info.height) == (9000, 9000), info
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
def test_the_scan_probes_a_huge_png_without_decoding_it(tmp_path: Path) -> None:
    # Pillow's PNG getexif() loaded every pixel to look for an eXIf chunk after the image
    # data: 324 MB of RGBA for a 300 KB file, in a scan that should read headers only.
    path = tmp_path / "huge.png"
    write_big_png(path, 9000, 9000, colour_type=6)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], check=True, capture_output=True, text=True
    )
    assert int(done.stdout.strip()) < 150, f"peak RSS {done.stdout.strip()} MB"


def test_a_png_with_exif_before_its_pixels_keeps_its_capture_time(tmp_path: Path) -> None:
    path = tmp_path / "dated.png"
    exif = Image.Exif()
    exif[306] = "2024:05:01 10:20:30"
    Image.new("RGB", (40, 30), (1, 2, 3)).save(path, exif=exif)
    assert probe(path, 10**6, 10**6).exif_datetime_raw == "2024:05:01 10:20:30"


@pytest.mark.parametrize(
    ("save", "coefficient_mb", "refused"),
    [
        ({}, 0.0, False),  # baseline: decoded at 1/8 scale, nothing held at full size
        ({"progressive": True}, 3.0, False),  # 4:2:0: 1.5 coefficients a pixel
        ({"progressive": True, "subsampling": 0}, 6.0, True),  # 4:4:4: 3 a pixel
    ],
)
def test_a_progressive_jpeg_counts_its_full_size_coefficients(
    tmp_path: Path, save: dict[str, object], coefficient_mb: float, refused: bool
) -> None:
    # libjpeg holds every DCT coefficient of a progressive JPEG at full size, whatever the
    # draft scale: a 118 MP one without subsampling held 680 MB for a 224 px input while
    # its draft counted 5 MB.
    path = tmp_path / "photo.jpg"
    Image.new("RGB", (1000, 1000), (200, 30, 30)).save(path, quality=90, **save)
    with Image.open(path) as img:
        assert jpeg_coefficient_bytes(img) == int(coefficient_mb * 1_000_000)
    limit = 4_500_000  # over 3 MB + the draft's pixels, under 6 MB
    spec = InputSpec(size=32)
    if refused:
        with pytest.raises(ImageError) as caught:
            load_rgb(path, spec, 10**9, 10**9, max_decoded=limit)
        assert caught.value.reason == "too_many_pixels"
    else:
        assert load_rgb(path, spec, 10**9, 10**9, max_decoded=limit).size == (32, 32)


def test_a_webp_counts_what_its_decoder_holds(tmp_path: Path) -> None:
    # libwebp's animation decoder (Pillow's only WebP path) holds an RGBA canvas and frame,
    # and Pillow a bytes copy and the image: a 100 MP WebP of 4 KB took 1.5 GB to decode.
    path = tmp_path / "photo.webp"
    Image.new("RGB", (500, 400), (200, 30, 30)).save(path, lossless=True)
    with Image.open(path) as img:
        assert decoded_bytes(img) == 500 * 400 * WEBP_BYTES_PER_PIXEL
    spec = InputSpec(size=32)
    with pytest.raises(ImageError) as caught:  # 0.6 MB as RGB, 3.2 MB as decoded
        load_rgb(path, spec, 10**9, 10**9, max_decoded=1_000_000)
    assert caught.value.reason == "too_many_pixels"
    assert load_rgb(path, spec, 10**9, 10**9, max_decoded=4_000_000).size == (32, 32)
