"""A/B of the job path: the same jobs through this checkout and through an older commit.

A single 5-second job is too noisy to judge a 5-10 % change, so this runs N rounds, each
one job through each tree (the order alternates: old-new, then new-old), on the same
photos, model and backend, with L (decode and inference alone, benchmarks/bench_scoring.py)
measured before and after each round, and reports c/L for each tree: medians, the spread,
and the ratio new/old within each round. The old tree is a `git worktree` of COMMIT; its
worker runs with PYTHONPATH pointing at it.

    .venv/bin/python benchmarks/job_path_ab.py a6c7195 --model efficientnet_lite0 \\
        --photos photos-1024x768-small --backend embedded --rounds 5

Photos and models come from benchmarks/_work (run bench_scoring.py once to create them).
Results are appended to benchmarks/results/job_path_ab.md (and .jsonl).
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
sys.path.insert(0, str(ROOT))
WORK = ROOT / "benchmarks" / "_work"
RESULTS = ROOT / "benchmarks" / "results" / "job_path_ab.md"

ONE_JOB = """
import json, sys
from pathlib import Path
from benchmarks.job_path import measure_job_path
folder, model, work = (Path(a) for a in sys.argv[1:4])
overrides = {"display_copies_when_scoring": False}
job = measure_job_path(folder, model, work, backend=sys.argv[4], overrides=overrides)
print(json.dumps(job["rate"]))
"""


def one_job(tree: Path, folder: Path, model: Path, backend: str) -> float:
    """One job through `tree`'s code (parent and worker), in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", ONE_JOB, str(folder), str(model), str(WORK / "ab"), backend],
        cwd=tree, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(out.stdout.strip().splitlines()[-1])


def measure_l(folder: Path, model: Path) -> float:
    """L = 1/(1/a + 1/b) for these photos and this model, as bench_scoring.py measures it."""
    from benchmarks.bench_scoring import measure_decode, measure_model_only
    from service.modelspec import load_artifact

    files = sorted(str(p) for p in folder.rglob("*.jpg"))
    a = measure_model_only(model, 40, repeats=1)
    b = measure_decode(files, load_artifact(model, check_onnx=False).spec, False, repeats=1)
    return 1.0 / (1.0 / a + 1.0 / b)


def main(args: argparse.Namespace) -> dict[str, object]:
    folder = WORK / args.photos
    model = WORK / "models" / args.model
    if not folder.is_dir() or not (model / "metadata.json").is_file():
        sys.exit(f"missing {folder} or {model}: run benchmarks/bench_scoring.py once first")
    old_key, new_key = args.commit, "HEAD"
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(old), args.commit],
            cwd=ROOT,
            check=True,
        )
        try:
            for r in range(args.rounds):
                l_before = measure_l(folder, model)
                order = [(old_key, old), (new_key, ROOT)]
                rates = {key: one_job(tree, folder, model, args.backend)
                         for key, tree in (order if r % 2 == 0 else order[::-1])}  # fmt: skip
                ell = (l_before + measure_l(folder, model)) / 2
                rounds.append({"L": ell, **{f"c_{k}": v for k, v in rates.items()}})
                print(json.dumps(rounds[-1]), flush=True)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False
            )
    old_cl = [r[f"c_{old_key}"] / r["L"] for r in rounds]
    new_cl = [r[f"c_{new_key}"] / r["L"] for r in rounds]
    within = [n / o for n, o in zip(new_cl, old_cl, strict=True)]
    summary = {
        "when": f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
        "model": args.model,
        "photos": args.photos,
        "backend": args.backend,
        "old": args.commit,
        "new": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "rounds": rounds,
        "old_c_over_L": statistics.median(old_cl),
        "new_c_over_L": statistics.median(new_cl),
        "new_over_old": statistics.median(within),
        "loadavg_end": os.getloadavg(),
    }
    line = (
        f"| {summary['when']} | {args.model} | {args.photos} | {args.backend} | "
        f"{args.commit} -> {summary['new']} | {len(rounds)} | "
        f"{summary['old_c_over_L']:.2f} ({min(old_cl):.2f}-{max(old_cl):.2f}) | "
        f"{summary['new_c_over_L']:.2f} ({min(new_cl):.2f}-{max(new_cl):.2f}) | "
        f"{summary['new_over_old']:.2f} ({min(within):.2f}-{max(within):.2f}) |"
    )
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else ""
    header = "## c/L A/B (median (min-max) over rounds; new/old taken within each round)"
    if header not in text:
        text += (
            f"\n{header}\n\n"
            "| when (UTC) | model | photos | backend | old -> new | rounds | old c/L | new c/L "
            "| new/old |\n|---|---|---|---|---|---|---|---|---|\n"
        )
    RESULTS.write_text(text + line + "\n", encoding="utf-8")
    with RESULTS.with_suffix(".jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(summary) + "\n")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", help="the older commit to compare against")
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--photos", default="photos-1024x768-small", help="folder in _work")
    parser.add_argument("--backend", choices=["postgres", "embedded"], default="embedded")
    parser.add_argument("--rounds", type=int, default=5)
    main(parser.parse_args())
