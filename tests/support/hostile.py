"""A folder of hostile and awkward files, with what herpscore must make of each."""

from __future__ import annotations

import os
import socket
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.photos import write_photo

# file name -> expected outcome: a label ("scored:<colour>") or a failure reason
EXPECTED: dict[str, str] = {
    "truncated.jpg": "corrupt",
    "empty.jpg": "empty_file",
    "notes.jpg": "not_an_image",
    "bomb.png": "too_many_pixels",
    "cmyk.jpg": "scored:red",
    "sixteen_bit.png": "scored:any",
    "palette_alpha.png": "scored:green",
    "rotated.jpg": "scored:blue",
    "escape.jpg": "outside_folder",
    "pipe.jpg": "not_a_file",  # a FIFO: opening it to hash it would wait forever
    "link to pipe.jpg": "not_a_file",
    "socket.jpg": "not_a_file",  # a Unix socket: open() fails with ENXIO, it is not unreadable
    "caf\\xe9.jpg": "undecodable_name",  # Latin-1 bytes in the name, shown escaped
    "two\nlines.jpg": "scored:green",
    "with space (1).jpg": "scored:red",
    "Ñaja ünïcode 蛇.jpeg": "scored:green",
    "UPPER.JPG": "scored:blue",
}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb(path: Path, side: int = 30000) -> None:
    """A tiny PNG whose header declares side x side pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * (side + 1) * 4)  # a few rows; the rest is missing
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples a pixel


def write_big_png(
    path: Path, width: int, height: int, colour_type: int = 6, bit_depth: int = 8
) -> None:
    """A valid, uniform PNG of width x height, written a row at a time (a small file and
    little memory to make, however many pixels it declares). Colour type 3 (palette) gets
    a 256-colour palette with a transparent entry."""
    channels = _PNG_CHANNELS[colour_type]
    row = b"\x00" + bytes([0x5A]) * (width * channels * bit_depth // 8)  # filter 0
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header)]
    if colour_type == 3:
        chunks.append(_png_chunk(b"PLTE", bytes(range(256)) * 3))
        chunks.append(_png_chunk(b"tRNS", b"\xff" * 0x5A + b"\x80"))
    with path.open("wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + b"".join(chunks))
        squeeze = zlib.compressobj(9)
        block: list[bytes] = []
        for _ in range(height):
            block.append(squeeze.compress(row))
            if len(block) >= 256:
                data = b"".join(block)
                if data:
                    out.write(_png_chunk(b"IDAT", data))
                block = []
        out.write(_png_chunk(b"IDAT", b"".join(block) + squeeze.flush()))
        out.write(_png_chunk(b"IEND", b""))


def make_hostile_folder(folder: Path, outside: Path) -> Path:
    """Write every case of EXPECTED into `folder`; `outside` receives the symlink's target."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_photo(folder / "tmp_good.jpg", "red", (120, 90))
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    good.unlink()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("field notes, not a photo\n", encoding="utf-8")
    write_bomb(folder / "bomb.png")
    Image.new("RGB", (80, 60), (200, 30, 30)).convert("CMYK").save(folder / "cmyk.jpg")
    grey16 = np.full((40, 50), 40000, dtype=np.uint16)
    Image.fromarray(grey16).save(folder / "sixteen_bit.png")
    palette = Image.new("P", (64, 64))
    palette.putpalette([30, 200, 30] + [0, 0, 0] * 255)
    palette.paste(0, (0, 0, 64, 64))
    palette.info["transparency"] = 255
    palette.save(folder / "palette_alpha.png", transparency=255)
    # EXIF orientation 6: stored sideways, blue once rotated upright
    exif = Image.Exif()
    exif[0x0112] = 6
    write_photo(folder / "rotated.jpg", "blue", (90, 60), exif=exif.tobytes())
    outside.mkdir(parents=True, exist_ok=True)
    target = write_photo(outside / "secret.jpg", "red")
    (folder / "escape.jpg").symlink_to(target)
    os.mkfifo(folder / "pipe.jpg")
    with socket.socket(socket.AF_UNIX) as sock:  # bound by a relative name: paths max 108 bytes
        here = os.getcwd()
        os.chdir(folder)
        try:
            sock.bind("socket.jpg")
        finally:
            os.chdir(here)
    write_photo(folder / os.fsdecode(b"caf\xe9.jpg"), "red")
    write_photo(folder / "two\nlines.jpg", "green")
    (folder / "link to pipe.jpg").symlink_to(folder / "pipe.jpg")
    write_photo(folder / "with space (1).jpg", "red")
    write_photo(folder / "Ñaja ünïcode 蛇.jpeg", "green")
    write_photo(folder / "UPPER.JPG", "blue")
    return folder
