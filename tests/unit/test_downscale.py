"""benchmarks/downscale.py: the small-photo copy of a set keeps names, format and aspect."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from benchmarks.downscale import downscale_tree


def _photo(path: Path, size: tuple[int, int], fmt: str, exif_orientation: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, (200, 40, 40))
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(path, fmt, exif=exif)
    else:
        img.save(path, fmt)


def test_downscale_tree_keeps_names_formats_and_aspect(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    _photo(src / "train" / "a" / "wide.jpeg", (400, 200), "JPEG")
    _photo(src / "train" / "a" / "small.jpg", (100, 80), "JPEG")
    _photo(src / "test" / "b" / "shot.png", (256, 256), "PNG")
    # Stored 400x200 but turned a quarter by its EXIF: served as 200x400.
    _photo(src / "test" / "b" / "turned.jpg", (400, 200), "JPEG", exif_orientation=6)
    (src / "notes.txt").write_text("not a photo")

    downscale_tree(src, dest, 128)

    with Image.open(dest / "train" / "a" / "wide.jpeg") as img:
        assert (img.format, img.size) == ("JPEG", (128, 64))
    with Image.open(dest / "train" / "a" / "small.jpg") as img:
        assert img.size == (100, 80)  # never enlarged
    with Image.open(dest / "test" / "b" / "shot.png") as img:
        assert (img.format, img.size) == ("PNG", (128, 128))
    with Image.open(dest / "test" / "b" / "turned.jpg") as img:
        assert img.size == (128, 256)
    assert not (dest / "notes.txt").exists()


def test_downscale_tree_is_deterministic_and_reused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _photo(src / "x" / "one.jpg", (300, 300), "JPEG")
    downscale_tree(src, tmp_path / "d1", 128)
    downscale_tree(src, tmp_path / "d2", 128)
    first = (tmp_path / "d1" / "x" / "one.jpg").read_bytes()
    assert first == (tmp_path / "d2" / "x" / "one.jpg").read_bytes()
    assert downscale_tree(src, tmp_path / "d1", 128) == {"reused": 1}
    assert downscale_tree(src, tmp_path / "d1", 64) == {"written": 1, "skipped": 0}
