"""Decoding and preprocessing: hand-computed expectations, EXIF, draft, modes, hostile files."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from service.imaging import (
    ImageError,
    InputSpec,
    load_rgb,
    preprocess,
    probe,
    resize_and_crop,
    sha256_file,
    to_array,
    to_rgb,
    upright,
)

BIG = 10**9
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# No resizing: size-8 squash of an 8x8 file keeps every pixel, so colours can be exact.
EXACT = InputSpec(size=8, resize="squash", interpolation="nearest")


def _normalise(hwc: np.ndarray) -> np.ndarray:
    mean, std = np.array(MEAN).reshape(3, 1, 1), np.array(STD).reshape(3, 1, 1)
    return (hwc.transpose(2, 0, 1) / 255.0 - mean) / std


def _rgb(path: Path, spec: InputSpec = EXACT) -> np.ndarray:
    return np.asarray(load_rgb(path, spec, BIG, BIG))


def test_shorter_side_matches_hand_computed_crop(tmp_path: Path) -> None:
    # 40x20 with a distinct colour per 4-px column block and per row: 16 / 0.8 = 20, so the
    # short side is already 20 (no resampling) and the centre crop is rows 2..18, cols 12..28.
    ys, xs = np.mgrid[0:20, 0:40]
    pixels = np.stack([(xs // 4) * 25, ys * 12, np.full_like(xs, 200)], axis=-1).astype(np.uint8)
    Image.fromarray(pixels, "RGB").save(tmp_path / "blocks.png")
    spec = InputSpec(size=16, resize="shorter_side", crop_pct=0.8, mean=MEAN, std=STD)
    assert spec.resize_to == 20

    got = preprocess(tmp_path / "blocks.png", spec)

    assert got.shape == (3, 16, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, _normalise(pixels[2:18, 12:28].astype(float)), atol=1e-5)


def test_shorter_side_resizes_portrait_then_crops(tmp_path: Path) -> None:
    # 10x30 uniform halves (top red, bottom blue) -> short side 20 -> 20x60 -> rows 22..38.
    pixels = np.zeros((30, 10, 3), dtype=np.uint8)
    pixels[:15, :, 0], pixels[15:, :, 2] = 255, 255
    Image.fromarray(pixels, "RGB").save(tmp_path / "portrait.png")
    spec = InputSpec(size=16, crop_pct=0.8, interpolation="nearest", mean=MEAN, std=STD)

    got = np.asarray(load_rgb(tmp_path / "portrait.png", spec, BIG, BIG))

    # Resized rows 22..29 come from the red half, 30..37 from the blue half (nearest, x2).
    expected = np.zeros((16, 16, 3), dtype=np.uint8)
    expected[:8, :, 0], expected[8:, :, 2] = 255, 255
    np.testing.assert_array_equal(got, expected)


def test_squash_nearest_is_exact(tmp_path: Path) -> None:
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    colours = {(0, 0): (255, 0, 0), (0, 1): (0, 255, 0), (1, 0): (0, 0, 255), (1, 1): (9, 9, 9)}
    for (row, col), colour in colours.items():
        pixels[row * 16 : row * 16 + 16, col * 32 : col * 32 + 32] = colour
    Image.fromarray(pixels, "RGB").save(tmp_path / "quadrants.png")
    spec = InputSpec(size=8, resize="squash", interpolation="nearest", mean=MEAN, std=STD)

    got = preprocess(tmp_path / "quadrants.png", spec)

    expected = np.zeros((8, 8, 3))
    for (row, col), colour in colours.items():
        expected[row * 4 : row * 4 + 4, col * 4 : col * 4 + 4] = colour
    np.testing.assert_allclose(got, _normalise(expected), atol=1e-5)


def test_squash_bilinear_keeps_a_uniform_image_exact(tmp_path: Path) -> None:
    Image.new("RGB", (50, 30), (10, 128, 250)).save(tmp_path / "flat.png")
    spec = InputSpec(size=16, resize="squash", mean=MEAN, std=STD)

    got = preprocess(tmp_path / "flat.png", spec)

    np.testing.assert_allclose(got, _normalise(np.full((16, 16, 3), (10, 128, 250.0))), atol=1e-5)


def test_to_array_writes_into_the_given_buffer() -> None:
    spec = InputSpec(size=8)
    out = np.full((3, 8, 8), np.nan, dtype=np.float32)

    result = to_array(Image.new("RGB", (8, 8), (255, 0, 128)), spec, out=out)

    assert result is out
    np.testing.assert_allclose(out[:, 0, 0], [1.0, -1.0, 128 / 127.5 - 1], atol=1e-6)


def _exif_jpeg(path: Path, orientation: int | None = None, **ifds: dict[int, object]) -> None:
    """A 40x20 JPEG, left half red, right half green, with the given EXIF."""
    img = Image.new("RGB", (40, 20), (0, 255, 0))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    for name, tags in ifds.items():
        exif.get_ifd({"exif": 0x8769, "gps": 0x8825}[name]).update(tags)
    img.save(path, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    _exif_jpeg(tmp_path / "upright.jpg")
    _exif_jpeg(tmp_path / "rotated.jpg", orientation=6)
    spec = InputSpec(size=16, resize="squash", interpolation="nearest")

    upright = _rgb(tmp_path / "upright.jpg", spec).astype(int)
    rotated = _rgb(tmp_path / "rotated.jpg", spec).astype(int)

    # Without rotation: red on the left, green on the right.
    assert upright[:, :6, 0].min() > 200 and upright[:, 10:, 1].min() > 200
    # Orientation 6 (rotate 90 degrees clockwise to view): the left half ends up on top.
    assert rotated[:6, :, 0].min() > 200 and rotated[:6, :, 1].max() < 60
    assert rotated[10:, :, 1].min() > 200 and rotated[10:, :, 0].max() < 60


def test_probe_reads_capture_time_gps_and_rotated_size(tmp_path: Path) -> None:
    _exif_jpeg(
        tmp_path / "field.jpg",
        orientation=6,
        exif={36867: "2024:05:17 06:42:13"},
        gps={1: "S", 2: (14.0, 35.0, 24.0), 3: "E", 4: (121.0, 2.0, 6.0)},
    )

    info = probe(tmp_path / "field.jpg", BIG, BIG)

    assert (info.width, info.height, info.format) == (20, 40, "JPEG")
    assert info.captured_at == datetime(2024, 5, 17, 6, 42, 13)
    assert info.gps_lat == pytest.approx(-(14 + 35 / 60 + 24 / 3600))
    assert info.gps_lon == pytest.approx(121 + 2 / 60 + 6 / 3600)


def test_probe_without_exif(tmp_path: Path) -> None:
    Image.new("RGB", (30, 10)).save(tmp_path / "plain.png")

    info = probe(tmp_path / "plain.png", BIG, BIG)

    assert (info.width, info.height, info.captured_at, info.gps_lat) == (30, 10, None, None)


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smooth 4000x3000 camera-sized JPEG."""
    path = tmp_path_factory.mktemp("big") / "big.jpg"
    small = np.zeros((30, 40, 3), dtype=np.uint8)
    ys, xs = np.mgrid[0:30, 0:40]
    small[..., 0], small[..., 1], small[..., 2] = xs * 6, ys * 8, 255 - xs * 6
    Image.fromarray(small, "RGB").resize((4000, 3000), Image.Resampling.BILINEAR).save(
        path, "JPEG", quality=90
    )
    return path


@pytest.mark.parametrize("fmt", ["JPEG", "MPO"])
def test_big_jpeg_is_decoded_in_draft_mode(
    big_jpeg: Path, tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = big_jpeg
    if fmt == "MPO":  # cameras embed an MPF preview; Pillow opens those files as MPO
        path = tmp_path / "camera.jpg"
        with Image.open(big_jpeg) as img:
            img.save(path, "MPO", save_all=True, append_images=[Image.new("RGB", (160, 120))])
    sizes: list[tuple[int, int]] = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: object) -> object:
        result = draft(self, mode, size)  # type: ignore[arg-type]
        sizes.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    spec = InputSpec(size=224, resize="shorter_side")

    got = _rgb(path, spec).astype(float)

    # 256 / 3000 allows DCT scaling by 1/8: libjpeg decodes 500x375, not 12 megapixels.
    assert sizes == [(500, 375)]
    with Image.open(big_jpeg) as img:
        full = np.asarray(resize_and_crop(img.convert("RGB"), spec)).astype(float)
    assert got.shape == (224, 224, 3)
    assert np.abs(got - full).mean() < 2.0 and np.abs(got - full).max() < 16


def _save(img: Image.Image, path: Path, **params: Any) -> Path:
    img.save(path, **params)
    return path


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path) -> None:
    img = Image.new("CMYK", (8, 8), (0, 0, 0, 0))
    img.paste((255, 0, 0, 0), (0, 0, 8, 4))  # top half cyan
    path = _save(img, tmp_path / "cmyk.jpg", quality=100)

    got = _rgb(path).astype(int)

    assert np.abs(got[5:] - 255).max() <= 3  # no ink: white
    assert np.abs(got[:3] - (0, 255, 255)).max() <= 3


@pytest.mark.parametrize(("value", "expected"), [(32768, 128), (65535, 255), (200, 1), (0, 0)])
def test_16_bit_png_is_scaled_by_its_bit_depth(tmp_path: Path, value: int, expected: int) -> None:
    img = Image.fromarray(np.full((8, 8), value, dtype=np.uint16))
    path = _save(img, tmp_path / "deep.png")
    with Image.open(path) as check:
        assert check.mode == "I;16"

    np.testing.assert_array_equal(_rgb(path), np.full((8, 8, 3), expected))


def test_palette_png_transparency_becomes_white(tmp_path: Path) -> None:
    img = Image.new("P", (8, 8), 1)
    img.putpalette([255, 0, 0, 0, 200, 0] + [0] * 762)
    img.paste(0, (0, 0, 8, 4))  # top half: index 0, declared transparent
    path = _save(img, tmp_path / "palette.png", transparency=0)

    got = _rgb(path)

    assert (got[:4] == 255).all()
    assert (got[4:] == (0, 200, 0)).all()


def test_alpha_modes_composite_over_white(tmp_path: Path) -> None:
    la = Image.new("LA", (8, 8), (0, 255))
    la.paste((0, 0), (0, 0, 8, 4))  # top half fully transparent black
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 128))

    got_la = _rgb(_save(la, tmp_path / "la.png"))
    got_rgba = _rgb(_save(rgba, tmp_path / "rgba.png")).astype(int)

    assert (got_la[:4] == 255).all() and (got_la[4:] == 0).all()
    assert np.abs(got_rgba - (255, 127, 127)).max() <= 1  # half red over white


@pytest.mark.parametrize(
    ("mode", "fill", "expected"), [("1", 1, 255), ("1", 0, 0), ("L", 77, 77), ("RGB", 5, 5)]
)
def test_bilevel_and_grey_become_rgb(tmp_path: Path, mode: str, fill: int, expected: int) -> None:
    img = Image.new(mode, (8, 8), fill if mode != "RGB" else (fill, fill, fill))

    got = _rgb(_save(img, tmp_path / f"{mode}.png"))

    assert got.shape == (8, 8, 3) and (got == expected).all()


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A valid PNG signature and IHDR declaring width x height, plus a token IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _truncated_jpeg(path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise, "RGB").save(path, "JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _text(path: Path) -> Path:
    path.write_text("these are field notes, not a photo\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_truncated_jpeg, "corrupt"),
        (_empty, "empty_file"),
        (_text, "not_an_image"),
        (lambda p: _png_header_only(p, 30_000, 30_000), "too_many_pixels"),
        (lambda p: _png_header_only(p, 20_000, 1), "extreme_aspect_ratio"),
        (lambda p: p.parent / "missing.jpg", "unreadable"),
    ],
    ids=["truncated", "zero-byte", "text", "bomb", "sliver", "missing"],
)
def test_hostile_files_fail_with_their_reason(
    tmp_path: Path, make: Callable[[Path], Path], reason: str
) -> None:
    path = make(tmp_path / "photo.jpg")

    with pytest.raises(ImageError) as caught:
        load_rgb(path, InputSpec(size=16), max_pixels=100_000_000, max_bytes=BIG)

    assert caught.value.reason == reason


@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_being_opened_for_reading(tmp_path: Path) -> None:
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)  # no writer: a plain open() would block forever

    for read in (
        sha256_file,
        lambda p: probe(p, max_pixels=BIG, max_bytes=BIG),
        lambda p: load_rgb(p, InputSpec(size=16), max_pixels=BIG, max_bytes=BIG),
    ):
        with pytest.raises(ImageError) as caught:
            read(path)
        assert caught.value.reason == "not_a_file"


def test_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    path = _png_header_only(tmp_path / "bomb.png", 30_000, 30_000)
    assert path.stat().st_size < 200

    with pytest.raises(ImageError) as caught:
        probe(path, max_pixels=100_000_000, max_bytes=BIG)

    assert caught.value.reason == "too_many_pixels"


def test_file_over_max_bytes(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (8, 8)), tmp_path / "ok.png")

    with pytest.raises(ImageError) as caught:
        load_rgb(path, EXACT, max_pixels=BIG, max_bytes=path.stat().st_size - 1)

    assert caught.value.reason == "file_too_large"


def _exif_with_a_mistyped_tag(orientation: int) -> bytes:
    """EXIF whose DateTime (ASCII by the standard) holds a DOUBLE, as fuzzing produced:
    re-encoding it (what ImageOps.exif_transpose does) raised AttributeError."""
    ifd_end = 8 + 2 + 2 * 12 + 4
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)  # Orientation, SHORT
    tiff += struct.pack("<HHII", 0x0132, 12, 1, ifd_end)  # DateTime, DOUBLE (wrong type)
    tiff += struct.pack("<I", 0) + struct.pack("<d", 1.5)
    return b"Exif\x00\x00" + tiff


def test_mistyped_exif_still_turns_the_photo_upright(tmp_path: Path) -> None:
    path = tmp_path / "mistyped.jpg"
    Image.new("RGB", (40, 20), (200, 30, 30)).save(path, exif=_exif_with_a_mistyped_tag(6))

    with Image.open(path) as img:
        img.load()
        assert upright(img).size == (20, 40)
    rgb = load_rgb(path, InputSpec(size=16, resize="squash"), max_pixels=BIG, max_bytes=BIG)
    assert rgb.size == (16, 16)
    assert probe(path, max_pixels=BIG, max_bytes=BIG).width == 20


def test_an_upright_photo_is_not_copied(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (8, 6)), tmp_path / "plain.png")
    with Image.open(path) as img:
        img.load()
        assert upright(img) is img


@pytest.mark.parametrize(
    "mode",
    [
        *("1", "L", "LA", "La", "P", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB"),
        *("HSV", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"),
    ],
)
def test_every_pillow_mode_becomes_rgb_or_an_unsupported_mode_error(mode: str) -> None:
    try:
        out = to_rgb(Image.new(mode, (8, 6)))
    except ImageError as exc:
        assert exc.reason == "unsupported_mode"
    else:
        assert (out.mode, out.size) == ("RGB", (8, 6))
