"""Decoding is bounded by decoded bytes (mode-aware), and a wide image converts in blocks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from service.imaging import ImageError, InputSpec, decoded_bytes, load_rgb

MAKE = """
import sys
from PIL import Image
Image.new("I;16", (8000, 8000), 40000).save(sys.argv[1])
"""
DECODE = """
import resource, sys
from service.imaging import InputSpec, load_rgb
img = load_rgb(sys.argv[1], InputSpec(size=224), 120_000_000, 256 * 2**20)
assert img.size == (224, 224) and img.getpixel((0, 0)) == (156, 156, 156), img.getpixel((0, 0))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_a_16_bit_png_decodes_in_a_small_multiple_of_its_pixels(tmp_path: Path) -> None:
    # 64 MP at 2 bytes a pixel is 128 MB decoded; converting it as float64 arrays at once
    # took 1.6 GB. Each step runs in a fresh interpreter, so its peak is the decode's.
    path = tmp_path / "sixteen.png"
    subprocess.run([sys.executable, "-c", MAKE, str(path)], check=True)
    assert path.stat().st_size < 2_000_000  # a small file...
    done = subprocess.run(
        [sys.executable, "-c", DECODE, str(path)], check=True, capture_output=True, text=True
    )
    peak_mb = int(done.stdout.strip())
    assert peak_mb < 600, f"peak RSS {peak_mb} MB"  # ...that once took 1.6 GB


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
