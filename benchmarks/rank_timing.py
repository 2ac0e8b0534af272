"""rank_job_queue alone: the review order a job gets when it finishes, on 100k pending items.

A throwaway PostgreSQL database is filled as `scale.py` fills it (200,000 predictions, the
big job 120,000 of them), the big job is topped up to 100,000 pending review items with
skewed labels, and each order is timed once, and once more under tracemalloc
(`scale.rank_timing`). The code measured is the one on PYTHONPATH, so an A/B runs this
from two trees in turns:

    for i in 1 2; do for tree in /path/to/old /path/to/new; do
      PYTHONPATH=$tree python $tree/benchmarks/rank_timing.py \
          --label "$(git -C $tree rev-parse --short HEAD)" --out rank_timing.jsonl
    done; done
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import psycopg

from benchmarks import scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=200_000)
    parser.add_argument("--label", default="", help="recorded with the row (e.g. the commit)")
    parser.add_argument("--out", type=Path, help="append one JSON line here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from service.db import dispose_engines
    from service.migrate import upgrade

    name = f"herpscore_rank_{os.getpid()}"
    with psycopg.connect(scale.ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        upgrade(url)
        row = {"label": args.label, **scale.rank_timing(url, scale.fill(url, args.predictions))}
        row["load_average"] = [round(x, 1) for x in os.getloadavg()]
    finally:
        dispose_engines()
        with psycopg.connect(scale.ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    print(json.dumps(row))
    if args.out:
        with args.out.open("a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
