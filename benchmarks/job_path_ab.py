"""A/B of the job path: the same jobs through this checkout and through an older commit.

A single 5-second job is too noisy to judge a 5-10 % change, so this runs N jobs through
each tree, alternating, on the same photos and model, and reports the medians. The old
tree is a `git worktree` of COMMIT; its worker runs with PYTHONPATH pointing at it.

    .venv/bin/python benchmarks/job_path_ab.py a6c7195 --model mobilenet_v3_small --jobs 3

Photos and models come from benchmarks/_work (run bench_scoring.py once to create them).
Results are appended to benchmarks/results/job_path_ab.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "_work"
RESULTS = ROOT / "benchmarks" / "results" / "job_path_ab.md"

ONE_JOB = """
import json, sys
from pathlib import Path
from benchmarks.job_path import measure_job_path
folder, model, work = (Path(a) for a in sys.argv[1:4])
print(json.dumps(measure_job_path(folder, model, work)["rate"]))
"""


def one_job(tree: Path, folder: Path, model: Path) -> float:
    """One job through `tree`'s code (parent and worker), in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", ONE_JOB, str(folder), str(model), str(WORK / "ab")],
        cwd=tree, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> dict[str, list[float]]:
    folder = WORK / f"photos-{args.photos}"
    model = WORK / "models" / args.model
    if not folder.is_dir() or not (model / "metadata.json").is_file():
        sys.exit(f"missing {folder} or {model}: run benchmarks/bench_scoring.py once first")
    rates: dict[str, list[float]] = {args.commit: [], "HEAD": []}
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(
            ["git", "worktree", "add", "-q", str(old), args.commit], cwd=ROOT, check=True
        )
        try:
            for _ in range(args.jobs):
                rates[args.commit].append(one_job(old, folder, model))
                rates["HEAD"].append(one_job(ROOT, folder, model))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False
            )
    medians = {k: statistics.median(v) for k, v in rates.items()}
    line = (
        f"| {datetime.now(UTC):%Y-%m-%d %H:%M} | {args.model} | {args.photos} | {args.commit} | "
        f"{', '.join(f'{r:.1f}' for r in rates[args.commit])} | "
        f"{', '.join(f'{r:.1f}' for r in rates['HEAD'])} | "
        f"{medians['HEAD'] / medians[args.commit]:.2f} |"
    )
    if not RESULTS.is_file():
        RESULTS.write_text(
            "# Job path A/B (photos/s per job; ratio = median HEAD / median old)\n\n"
            "| when (UTC) | model | photos | old commit | old | HEAD | ratio |\n"
            "|---|---|---|---|---|---|---|\n"
        )
    with RESULTS.open("a") as fh:
        fh.write(line + "\n")
    print(json.dumps(rates))
    return rates


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the older commit to compare against")
    parser.add_argument("--model", default="mobilenet_v3_small")
    parser.add_argument("--photos", default="1024x768", choices=["1024x768", "4000x3000"])
    parser.add_argument("--jobs", type=int, default=3)
    main(parser.parse_args())
