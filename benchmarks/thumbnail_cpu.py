"""CPU per photo of the scoring worker's thumbnail: `thumbnails.shrink` and `encode_jpeg`
against the Pillow calls they replaced (a bilinear resize with reducing_gap 1.0, and JPEG
with Pillow's `optimize` pass), on the upright decode the model asked for (draft 256 px).

    PYTHONPATH=$PWD python benchmarks/thumbnail_cpu.py  # -> results/thumbnail_cpu.{json,md}

CPU time (time.process_time), best of 5 passes over each set, so other work on the machine
moves it less than wall time.
"""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from benchmarks.scoring_inputs import make_photos  # noqa: E402
from service import thumbnails  # noqa: E402
from service.imaging import decode_upright  # noqa: E402

SETS = (((1024, 768), 60), ((4000, 3000), 30))
DRAFT = 256  # the draft side of a 224 px model (InputSpec.draft_side)


def cpu_ms(fn: Callable[[Image.Image], object], images: list[Image.Image]) -> float:
    best = float("inf")
    for _ in range(5):
        began = time.process_time()
        for img in images:
            fn(img)
        best = min(best, time.process_time() - began)
    return round(1000 * best / len(images), 3)


def previous_shrink(img: Image.Image, side: int = thumbnails.THUMBNAIL_SIDE) -> Image.Image:
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=1.0)


def previous_encode(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=thumbnails.JPEG_QUALITY, optimize=True)
    return out.getvalue()


def main() -> None:
    rows = []
    for size, count in SETS:
        folder = ROOT / "benchmarks" / "_work" / f"thumbnail-cpu-{size[0]}x{size[1]}"
        paths = make_photos(folder, size, count)
        decoded = [decode_upright(p, 10**9, 2**30, at_least=DRAFT) for p in paths]
        small = [thumbnails.shrink(img) for img in decoded]
        rows.append(
            {
                "photos": f"{size[0]}x{size[1]} n={count}",
                "decoded": "x".join(map(str, decoded[0].size)),
                "thumbnail": "x".join(map(str, small[0].size)),
                "shrink_previous_ms": cpu_ms(previous_shrink, decoded),
                "shrink_ms": cpu_ms(thumbnails.shrink, decoded),
                "encode_previous_ms": cpu_ms(previous_encode, small),
                "encode_ms": cpu_ms(thumbnails.encode_jpeg, small),
                "bytes_previous": sum(len(previous_encode(t)) for t in small) // len(small),
                "bytes": sum(len(thumbnails.encode_jpeg(t)) for t in small) // len(small),
            }
        )
        print(rows[-1], flush=True)
    out = ROOT / "benchmarks" / "results" / "thumbnail_cpu"
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# The scoring worker's thumbnail: CPU ms per photo",
        "",
        "`benchmarks/thumbnail_cpu.py`: best of 5 passes, process CPU time.",
        "",
        "| photos | decoded at | thumbnail | shrink before | after | JPEG before | after "
        "| bytes before | after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['photos']} | {r['decoded']} | {r['thumbnail']} | {r['shrink_previous_ms']} "
            f"| {r['shrink_ms']} | {r['encode_previous_ms']} | {r['encode_ms']} "
            f"| {r['bytes_previous']} | {r['bytes']} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
