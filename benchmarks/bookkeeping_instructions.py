"""The scoring worker's per-chunk bookkeeping in instructions, for A/B runs on a busy machine.

`job_overhead.py` times the bookkeeping in CPU seconds, which another process on the same
cores inflates by 50-150 % here. This counts the instructions instead, under valgrind's
callgrind, which repeats to within a fraction of a percent whatever else the machine runs:
one job of `job_overhead.py` (its scan, then `score_chunk` on every chunk with the model
replaced by stored outcomes), counted only inside `score_chunk` and from the second chunk on
(the first compiles each statement for the job's new database engine, which a long-lived
worker does once). PostgreSQL's server work and the kernel's file writes are not counted,
nor other threads: callgrind's toggle counts the calling thread only, which is enough here
(the bookkeeping runs in one thread) but not for the threaded decode of `score_paths`.

    PYTHONPATH=$PWD python benchmarks/bookkeeping_instructions.py --trees /path/to/old .

Each tree is a checkout of herpscore; the same photos and model serve all of them. Needs
valgrind and gcc (callgrind's toggle is a C macro). A job of 400 photos takes 2-3 minutes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOGGLE_C = "#include <valgrind/callgrind.h>\nvoid toggle(void) { CALLGRIND_TOGGLE_COLLECT; }\n"


def inner(photo_set: str, backend: str, work: Path, toggle_lib: str) -> None:
    """Run under callgrind: one job, counting only chunks 2 and later."""
    sys.path.insert(0, os.getcwd())  # the tree under test, not this file's
    from PIL import Image

    import benchmarks.job_overhead as jo
    import service.scoring as scoring
    from benchmarks.scoring_inputs import build_model
    from service.thumbnails import encode_jpeg

    toggle = ctypes.CDLL(toggle_lib).toggle
    model_dir = build_model("efficientnet_lite0", work)
    labels = list(json.loads((model_dir / "class_map.json").read_text()))
    thumbnail = encode_jpeg(Image.new("RGB", (250, 188), (90, 120, 60)))
    real = scoring.score_chunk
    seen = {"chunks": 0, "photos": 0}

    def counted(settings: object, chunk_id: int, scorer: object) -> object:
        seen["chunks"] += 1
        if seen["chunks"] == 1:
            return real(settings, chunk_id, scorer)  # type: ignore[arg-type]
        toggle()
        try:
            result = real(settings, chunk_id, scorer)  # type: ignore[arg-type]
        finally:
            toggle()
        seen["photos"] += result.scored + result.failed
        return result

    scoring.score_chunk = counted  # type: ignore[assignment]
    jo.job_pieces(work / f"photos-{photo_set}-small" / "survey", model_dir, backend, thumbnail,
                  labels)  # fmt: skip
    print("COUNTED_PHOTOS", seen["photos"])


def count(tree: Path, photo_set: str, backend: str, work: Path, toggle_lib: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--callgrind-out-file=/dev/null",
         sys.executable, str(Path(__file__).resolve()), "--inner", "--set", photo_set,
         "--backend", backend, "--work", str(work), "--toggle-lib", toggle_lib],
        cwd=tree, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    collected = int(re.search(r"Collected : (\d+)", out.stderr).group(1))  # type: ignore[union-attr]
    photos = int(re.search(r"COUNTED_PHOTOS (\d+)", out.stdout).group(1))  # type: ignore[union-attr]
    return {"tree": str(tree), "backend": backend, "photos": photos, "instructions": collected,
            "per_photo": round(collected / photos)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", type=Path, default=[ROOT])
    parser.add_argument("--set", dest="photo_set", default="1024x768",
                        choices=["1024x768", "4000x3000"])  # fmt: skip
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"],
                        choices=["sqlite", "postgres"])  # fmt: skip
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_work")
    parser.add_argument("--out", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--toggle-lib", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        inner(args.photo_set, args.backend, args.work, args.toggle_lib)
        return

    sys.path.insert(0, str(ROOT))
    from benchmarks.job_overhead import SETS
    from benchmarks.scoring_inputs import build_model, make_photos

    size, photos = SETS[args.photo_set]
    make_photos(args.work / f"photos-{args.photo_set}-small", size, photos)  # outside valgrind
    build_model("efficientnet_lite0", args.work)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lib = os.path.join(tmp, "toggle.so")
        Path(tmp, "toggle.c").write_text(TOGGLE_C)
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", lib, f"{tmp}/toggle.c"], check=True)
        for backend in args.backends:
            for tree in args.trees:
                rows.append(count(tree.resolve(), args.photo_set, backend, args.work, lib))
                print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"set": args.photo_set, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
