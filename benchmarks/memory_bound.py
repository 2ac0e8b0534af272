"""Peak RSS per process for hostile images: inference worker, scan worker, web process.

Generates each hostile file in benchmarks/_work/memory_bound (none is committed), then,
for each file and each process kind, runs the work that process does on it in a fresh
interpreter and reads its peak resident size (VmHWM) and its resident size before the
work (the base: interpreter, imports, ONNX session, Flask app):

- inference: a batch of two paths to the file (two decode threads decoding it at once,
  the worst case of one pool process, each also cutting the thumbnail from its decode),
  then its display copy, as a scoring process does; the maintenance worker's render of a
  missing copy is the same decode (service/copies.py);
- scan: `inspect_file` (hash in 1 MB reads, header probe), as the scan does per file;
- web: `create_app()` on a migrated database that knows the file, then two request
  threads asking for its thumbnail and its display copy at once (a gthread worker has 4),
  as a viewer's first look at it does when no worker made them yet: the web process never
  decodes, it queues the renders and answers at once.

Writes benchmarks/results/memory_bound.md (and .json).

    PYTHONPATH=. python benchmarks/memory_bound.py [--only NAME ...] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from service.settings import Settings  # noqa: E402
from tests.support.hostile import write_big_png, write_bomb  # noqa: E402
from tests.support.models import make_model_folder  # noqa: E402
from tests.support.photos import write_photo  # noqa: E402

WORK = ROOT / "benchmarks" / "_work" / "memory_bound"
RESULTS = ROOT / "benchmarks" / "results"
KINDS = ("inference", "scan", "web")

# Each probe prints one JSON line: {"base_mb", "peak_mb", "outcome"}.
_PROBE_HEAD = """
import json, os, re, sys
from pathlib import Path
def _status(field):
    text = open("/proc/self/status").read()
    return int(re.search(field + r":\\s+(\\d+) kB", text).group(1)) // 1024
from service.settings import Settings
settings = Settings(data_dir=Path(sys.argv[2]), database_url="sqlite:///" + sys.argv[2] + "/x.db")
path = sys.argv[1]
"""
PROBES = {
    "inference": """
from service.display import DISPLAY_DRAFT, DISPLAY_SIDE
from service.imaging import ImageError
from service.thumbnails import render_thumbnail
from workers.engine import get_engine
from workers.pipeline import score_paths
engine = get_engine(Path(sys.argv[3]), threads=1)
engine.warmup([1, 2])
twin = sys.argv[2] + "/twin" + Path(path).suffix
if not os.path.exists(twin):
    os.link(path, twin)
base = _status("VmRSS")
limits = dict(max_pixels=settings.max_image_pixels, max_bytes=settings.max_file_bytes,
              max_decoded=settings.max_decoded_megabytes * 2**20)
results = score_paths(engine, [path, twin], batch_size=2, decode_threads=2, k=1,
                      thumbnail_side=256, **limits)
outcome = results[0].failure_reason or "scored"
if results[0].failure_reason is None:
    try:
        render_thumbnail(Path(path), DISPLAY_SIDE, limits["max_pixels"], limits["max_bytes"],
                         limits["max_decoded"], draft=DISPLAY_DRAFT)
    except ImageError as exc:
        outcome += f", display copy {exc.reason}"
""",
    "scan": """
from service.scanning import inspect_file
base = _status("VmRSS")
record = inspect_file(Path(path), Path(path).parent, settings)
outcome = record.failure_reason or f"recorded {record.width}x{record.height}"
""",
    "web": """
os.environ.setdefault("HERPSCORE_SECRET_KEY", "memory-bound-benchmark-" + "x" * 40)
import threading
from PIL import Image as PILImage
from service import users
from service.db import session_scope
from service.imaging import sha256_file
from service.migrate import upgrade
from service.models import Image, Role
from service.web import create_app
settings = settings.model_copy(update={"allowed_roots": [Path(path).parent]})
upgrade(settings.db_url)
with PILImage.open(path) as header:  # what the scan recorded (no pixel decoded)
    fmt = header.format
with session_scope(settings.db_url) as session:
    user_id = users.create_user(session, "probe", "probe-password-1234", Role.VIEWER).id
    image = Image(path=path, sha256=sha256_file(path), format=fmt,
                  size_bytes=os.path.getsize(path))
    session.add(image)
    session.flush()
    image_id = image.id
app = create_app(settings)
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the peak from here on: not the migration's, which gunicorn never runs
base = _status("VmRSS")
outcomes = {}
def ask(copy):  # two request threads at once: a contact sheet's thumbnail, the review photo
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"], session["_fresh"] = f"{user_id}:0", True
    response = client.get(f"/images/{image_id}/{copy}.jpg")
    outcomes[copy] = f"{response.status_code} {response.headers.get('X-Herpscore-Thumbnail')}"
threads = [threading.Thread(target=ask, args=(copy,)) for copy in ("thumbnail", "display")]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
outcome = ", ".join(f"{copy} {got}" for copy, got in sorted(outcomes.items()))
""",
}
_PROBE_TAIL = """
print(json.dumps({"base_mb": base, "peak_mb": _status("VmHWM"), "outcome": outcome}))
"""


@dataclass
class Hostile:
    name: str
    what: str
    make: Callable[[Path], object]
    suffix: str


def _pil(mode: str, size: tuple[int, int], fill: object, fmt: str, **save: object) -> Callable:
    def make(path: Path) -> None:
        Image.new(mode, size, fill).save(path, fmt, **save)  # type: ignore[arg-type]

    return make


def _png(width: int, height: int, colour_type: int, depth: int) -> Callable[[Path], None]:
    return lambda path: write_big_png(path, width, height, colour_type, depth)


def hostile_inputs() -> list[Hostile]:
    """Each near a limit (120 MP, 384 MB decoded) from the side that is let through."""
    return [
        Hostile("photo_12mp", "an ordinary 12 MP camera JPEG (reference)",
                lambda p: write_photo(p, "green", size=(4000, 3000)), ".jpg"),
        Hostile("png16_grey_118mp", "16-bit grey PNG, 10,860 x 10,860 (118 MP, 236 MB)",
                _png(10860, 10860, 0, 16), ".png"),
        Hostile("png16_rgb_118mp", "16-bit RGB PNG, 10,860 x 10,860 (118 MP; RGB 354 MB)",
                _png(10860, 10860, 2, 16), ".png"),
        Hostile("png16_rgba_118mp", "16-bit RGBA PNG, 10,860 x 10,860 (472 MB: refused)",
                _png(10860, 10860, 6, 16), ".png"),
        Hostile("png_rgba_94mp", "RGBA PNG, 9,700 x 9,700 (94 MP, 376 MB)",
                _png(9700, 9700, 6, 8), ".png"),
        Hostile("png_palette_alpha_94mp", "palette PNG with transparency, 9,700 x 9,700",
                _png(9700, 9700, 3, 8), ".png"),
        Hostile("bomb_900mp", "decompression bomb: a 30,000 x 30,000 PNG header, 200 bytes",
                write_bomb, ".png"),
        Hostile("jpeg_rgb_118mp", "baseline JPEG, 10,860 x 10,860",
                _pil("RGB", (10860, 10860), (40, 160, 60), "JPEG", quality=90), ".jpg"),
        Hostile("jpeg_progressive_118mp", "progressive JPEG, 10,860 x 10,860 (4:2:0)",
                _pil("RGB", (10860, 10860), (40, 160, 60), "JPEG", quality=90,
                     progressive=True), ".jpg"),
        Hostile("jpeg_progressive444_118mp", "progressive JPEG, 10,860 x 10,860, no chroma "
                "subsampling (4:4:4)",
                _pil("RGB", (10860, 10860), (40, 160, 60), "JPEG", quality=90,
                     progressive=True, subsampling=0), ".jpg"),
        Hostile("jpeg_progressive_cmyk_100mp", "progressive CMYK JPEG, 10,000 x 10,000",
                _pil("CMYK", (10000, 10000), (0, 200, 0, 30), "JPEG", quality=90,
                     progressive=True), ".jpg"),
        Hostile("jpeg_cmyk_100mp", "CMYK JPEG, 10,000 x 10,000",
                _pil("CMYK", (10000, 10000), (0, 200, 0, 30), "JPEG", quality=90), ".jpg"),
        Hostile("tiff_float_81mp", "32-bit float TIFF (deflate), 9,000 x 9,000 (324 MB)",
                _pil("F", (9000, 9000), 0.5, "TIFF", compression="tiff_adobe_deflate"),
                ".tif"),
        Hostile("webp_rgb_24mp", "lossless WebP, 6,000 x 4,000 (24 MP)",
                _pil("RGB", (6000, 4000), (40, 160, 60), "WEBP", lossless=True), ".webp"),
        Hostile("webp_rgb_100mp", "lossless WebP, 10,000 x 10,000 (RGB 300 MB)",
                _pil("RGB", (10000, 10000), (40, 160, 60), "WEBP", lossless=True), ".webp"),
    ]  # fmt: skip


@dataclass
class Measure:
    input: str
    what: str
    file_bytes: int
    kind: str
    base_mb: int
    peak_mb: int
    outcome: str
    seconds: float


def measure(hostile: Hostile, path: Path, kind: str, model: Path, scratch: Path) -> Measure:
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("HERPSCORE_")}
    code = _PROBE_HEAD + PROBES[kind] + _PROBE_TAIL
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), str(scratch), str(model)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    seconds = round(time.monotonic() - began, 1)
    got: dict[str, Any]
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        got = {"base_mb": 0, "peak_mb": 0, "outcome": f"probe failed: {tail[0]}"}
    else:
        got = json.loads(done.stdout.strip().splitlines()[-1])
    return Measure(
        input=hostile.name, what=hostile.what, file_bytes=path.stat().st_size, kind=kind,
        seconds=seconds, **got,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="input names to run (default: all)")
    parser.add_argument("--kinds", nargs="*", choices=KINDS, help="process kinds (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    model = make_model_folder(WORK / "model", labels=["red", "green", "blue"])
    results: list[Measure] = []
    for hostile in hostile_inputs():
        if args.only and hostile.name not in args.only:
            continue
        path = WORK / f"{hostile.name}{hostile.suffix}"
        if not path.exists():
            hostile.make(path)
        for kind in args.kinds or KINDS:
            results.append(measure(hostile, path, kind, model, WORK / "scratch"))
            print(asdict(results[-1]), file=sys.stderr, flush=True)
        if not args.keep:
            path.unlink()
    if args.only or args.kinds:  # a partial run replaces its rows of the last full one
        done = {(r.input, r.kind) for r in results}
        last = json.loads((RESULTS / "memory_bound.json").read_text())["results"]
        kept = [Measure(**r) for r in last if (r["input"], r["kind"]) not in done]
        order = [h.name for h in hostile_inputs()]
        results = sorted(kept + results, key=lambda r: (order.index(r.input), KINDS.index(r.kind)))
    write(results)


def write(results: list[Measure]) -> None:
    defaults = Settings(data_dir=WORK, database_url="sqlite://")
    meta = {
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "pillow": Image.__version__,
        "max_image_pixels": defaults.max_image_pixels,
        "max_decoded_megabytes": defaults.max_decoded_megabytes,
        "worker_kill_memory_megabytes": defaults.worker_kill_memory_megabytes,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory_bound.json").write_text(
        json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2) + "\n"
    )
    by_input: dict[str, dict[str, Measure]] = {}
    for r in results:
        by_input.setdefault(r.input, {})[r.kind] = r
    lines = [
        "# Peak RSS per process for hostile images",
        "",
        "`benchmarks/memory_bound.py`: each input in a fresh interpreter per process kind; "
        "peak = VmHWM, base = VmRSS before the work (interpreter, imports, the tiny test "
        "model's ONNX session, the Flask app). Inference decodes two paths to the file at "
        "once (two decode threads, each cutting the thumbnail from its decode) and then makes "
        "its display copy; web asks for the thumbnail and the display copy in two request "
        "threads at once, before any worker made them (it queues their renders and answers "
        "pending: it never decodes). Default limits: "
        f"{meta['max_image_pixels']:,} pixels, {meta['max_decoded_megabytes']} MB decoded. "
        f"Pillow {meta['pillow']}, Python {meta['python']}, {meta['cpus']} shared cores.",
        "",
        "| Input | File | Inference base / peak MB | Scan base / peak MB | "
        "Web base / peak MB | Outcome (inference; web) |",
        "|---|---|---|---|---|---|",
    ]
    for kinds in by_input.values():
        cells = [
            f"{kinds[k].base_mb} / **{kinds[k].peak_mb}**" if k in kinds else "-" for k in KINDS
        ]
        first = next(iter(kinds.values()))
        outcome = "; ".join(kinds[k].outcome for k in ("inference", "web") if k in kinds)
        lines.append(
            f"| {first.what} | {_size(first.file_bytes)} | {' | '.join(cells)} | {outcome} |"
        )
    (RESULTS / "memory_bound.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


if __name__ == "__main__":
    main()
