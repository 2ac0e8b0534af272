"""Thumbnails: upright, RGB, bounded, written once and atomically; bad files raise ImageError."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from service import thumbnails
from service.imaging import ImageError
from service.settings import Settings
from tests.support.photos import write_photo


@pytest.fixture()
def settings(tmp_path: Path, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("sqlite://", thumbnails_dir=tmp_path / "thumbs")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_thumbnail_is_an_upright_rgb_jpeg_within_the_size(
    settings: Settings, tmp_path: Path
) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees to show it upright
    photo = write_photo(tmp_path / "turned.jpg", "red", size=(800, 400), exif=exif.tobytes())
    out = thumbnails.ensure_thumbnail(settings, photo, _sha(photo))
    assert out == thumbnails.thumbnail_file(settings, _sha(photo))
    with Image.open(out) as thumb:
        assert (thumb.format, thumb.mode) == ("JPEG", "RGB")
        assert thumb.size == (128, 256)  # portrait after the EXIF rotation, longest side 256


@pytest.mark.parametrize("mode", ["RGBA", "P", "L", "I;16", "CMYK"])
def test_every_mode_becomes_rgb(settings: Settings, tmp_path: Path, mode: str) -> None:
    suffix = ".tif" if mode == "CMYK" else ".png"
    photo = tmp_path / f"img{suffix}"
    Image.new(mode, (40, 30)).save(photo)
    with Image.open(thumbnails.ensure_thumbnail(settings, photo, _sha(photo))) as thumb:
        assert thumb.mode == "RGB" and thumb.size == (40, 30)  # small images are not enlarged


def test_made_once_then_reused(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = write_photo(tmp_path / "a.jpg", size=(600, 300))
    first = thumbnails.ensure_thumbnail(settings, photo, _sha(photo))
    monkeypatch.setattr(thumbnails, "render_thumbnail", lambda *a: pytest.fail("re-rendered"))
    assert thumbnails.ensure_thumbnail(settings, photo, _sha(photo)) == first
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary files left


def test_an_empty_copy_is_rendered_again(settings: Settings, tmp_path: Path) -> None:
    # What a power cut can leave of a copy written without fsync (write_atomically).
    photo = write_photo(tmp_path / "a.jpg", size=(600, 300))
    empty = thumbnails.thumbnail_file(settings, _sha(photo))
    empty.parent.mkdir(parents=True)
    empty.touch()
    with Image.open(thumbnails.ensure_thumbnail(settings, photo, _sha(photo))) as thumb:
        assert thumb.size == (256, 128)


@pytest.mark.parametrize(
    "content", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 64]
)
def test_undecodable_files_raise_image_error_and_write_nothing(
    settings: Settings, tmp_path: Path, content: bytes
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    with pytest.raises(ImageError):
        thumbnails.ensure_thumbnail(settings, bad, "f" * 64)
    assert not thumbnails.thumbnail_file(settings, "f" * 64).exists()


def test_truncated_jpeg_raises_image_error(settings: Settings, tmp_path: Path) -> None:
    good = write_photo(tmp_path / "good.jpg", size=(400, 300))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:400])
    with pytest.raises(ImageError):
        thumbnails.ensure_thumbnail(settings, cut, _sha(cut))


def test_pixel_limits_apply(settings: Settings, tmp_path: Path) -> None:
    photo = write_photo(tmp_path / "big.png", size=(300, 300))
    small = settings.model_copy(update={"max_image_pixels": 1000})
    with pytest.raises(ImageError, match="too_many_pixels"):
        thumbnails.ensure_thumbnail(small, photo, _sha(photo))


@pytest.mark.parametrize("bad", ["", "../../etc/passwd", "A" * 64, "a" * 63])
def test_only_hex_digests_name_files(settings: Settings, bad: str) -> None:
    with pytest.raises(ValueError):
        thumbnails.thumbnail_file(settings, bad)


def test_the_scoring_worker_stores_what_the_pipeline_made(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = write_photo(tmp_path / "made.jpg", "red", size=(600, 400))
    small = write_photo(tmp_path / "small.jpg", "green", size=(64, 48))
    kept = write_photo(tmp_path / "kept.jpg", "blue", size=(600, 400))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    old = thumbnails.ensure_thumbnail(settings, kept, _sha(kept)).read_bytes()
    jpeg = thumbnails.encode_jpeg(thumbnails.shrink(Image.new("RGB", (600, 400), "red")))

    written, rendered = thumbnails.store_thumbnails(
        settings,
        [
            (_sha(made), str(made), jpeg),  # the pipeline's bytes, written as they are
            (_sha(small), str(small), None),  # none made: rendered from the file
            (_sha(kept), str(kept), jpeg),  # already there: left alone
            ("f" * 64, str(broken), None),  # cannot be rendered: the web shows a placeholder
            (None, str(made), jpeg),  # no digest, no file name
        ],
    )

    assert (written, rendered) == (1, 1)
    assert thumbnails.thumbnail_file(settings, _sha(made)).read_bytes() == jpeg
    with Image.open(thumbnails.thumbnail_file(settings, _sha(small))) as thumb:
        assert thumb.size == (64, 48)
    assert thumbnails.thumbnail_file(settings, _sha(kept)).read_bytes() == old
    assert not thumbnails.thumbnail_file(settings, "f" * 64).exists()


@pytest.mark.parametrize(("size", "expected"), [((800, 600), (256, 192)), ((90, 120), (90, 120))])
def test_shrink_keeps_the_aspect_and_never_enlarges(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    for mode in ("RGB", "L"):
        thumb = thumbnails.shrink(Image.new(mode, size))
        assert (thumb.mode, thumb.size) == ("RGB", expected)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((500, 375), (250, 188)),  # a 12 MP JPEG's 1/8 decode: halved, 2 % under the side
        ((375, 500), (188, 250)),
        ((512, 384), (256, 192)),  # exactly twice the side
        ((3000, 2000), (250, 167)),  # a twelfth
        ((530, 400), (256, 193)),  # halving lands 3.5 % over: resized
        ((460, 300), (256, 167)),  # halving lands 10 % under: resized
        ((200, 100), (200, 100)),  # never enlarged
    ],
)
def test_shrink_reduces_by_a_whole_factor_when_that_lands_near_the_side(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    img = Image.new("L", size, 90)
    thumb = thumbnails.shrink(img, 256)
    assert (thumb.mode, thumb.size) == ("RGB", expected)
    assert thumb.getpixel((thumb.width // 2, thumb.height // 2)) == (90, 90, 90)
