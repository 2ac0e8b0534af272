"""A/B of a big job's filtered and deep pages on one 1M database: two trees take turns.

`scale.py` runs each tree on a database of its own, one after the other, and on a shared
machine the load moves between the runs. Here one database (filled by `scale.fill`) is put
at each tree's schema in turn (`alembic downgrade 0012` for the old tree, `upgrade head`
for the new one, then ANALYZE), and each tree times `results.query_results` for every
filter of the job page in its own process, rounds alternating which tree goes first.

    PYTHONPATH=$PWD python benchmarks/pages_ab.py --old /work/main --rounds 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale

log = logging.getLogger("pages_ab")
CASES = {
    "no filter, offset 80%": ({}, 480_000),
    "label": ({"label": "Species_03"}, 0),
    "label, rare": ({"label": scale.RARE_LABEL}, 0),
    "label, absent": ({"label": "Nobody"}, 0),
    "site": ({"site": "site13"}, 0),
    "min_confidence 0.95": ({"min_confidence": 0.95}, 0),
    "needs_review": ({"needs_review": True}, 0),
    "reviewed": ({"reviewed": True}, 0),
    "final_label": ({"final_label": "Species_03"}, 0),
}


def probe(url: str, reps: int) -> dict[str, Any]:
    """Time every case with the tree on PYTHONPATH (a statement over the database's timeout
    is reported as timed out)."""
    from service import results
    from service.db import session_factory

    factory = session_factory(url)
    out: dict[str, Any] = {}
    for name, (filters, offset) in CASES.items():
        times: list[float] = []
        for _ in range(reps + 1):  # the first run warms the cache
            session = factory()
            t = time.perf_counter()
            try:
                results.query_results(session, 1, results.ResultFilters(**filters), 100, offset)
            except Exception as exc:  # noqa: BLE001  # the timeout: reported, not fatal
                out[name] = {"n": 0, "error": str(exc).splitlines()[0][:120]}
                break
            finally:
                session.close()
            times.append((time.perf_counter() - t) * 1000)
        else:
            out[name] = scale.percentiles(times[1:])
    return out


def run_tree(tree: str, new: str, url: str, revision: str, reps: int) -> dict[str, Any]:
    """Put the database at `revision` (with the new tree's migrations, which know both),
    then time the cases with `tree`'s code."""
    migrate = f"from service.migrate import upgrade; upgrade({url!r}, {revision!r})"
    if revision != "head":
        migrate = (
            "from alembic import command; from service.migrate import alembic_config; "
            f"command.downgrade(alembic_config({url!r}), {revision!r})"
        )
    subprocess.run(
        [sys.executable, "-c", migrate], env={**os.environ, "PYTHONPATH": new}, cwd=new,
        check=True, capture_output=True,
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": tree}
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE job_images")
        conn.execute("VACUUM ANALYZE predictions")
    done = subprocess.run(  # the script's folder, then `tree`, on the path: not the cwd
        [sys.executable, os.path.abspath(__file__), "--probe", url, "--reps", str(reps)],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="/work/main", help="the old tree (at migration 0012)")
    parser.add_argument("--new", default=os.getcwd())
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pages_ab.json"))
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.reps)))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from service.migrate import upgrade

    name = f"herpscore_pages_ab_{os.getpid()}"
    with psycopg.connect(scale.ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    rounds: list[dict[str, Any]] = []
    try:
        upgrade(url, "0012")
        scale.fill(url, args.size)
        scale.timeout(name, f"{scale.STATEMENT_TIMEOUT_S}s")
        for n in range(args.rounds):
            order = [("old", args.old, "0012"), ("new", args.new, "head")]
            for label, tree, revision in order if n % 2 == 0 else order[::-1]:
                measured = run_tree(tree, args.new, url, revision, args.reps)
                rounds.append({"round": n, "tree": label, "load": os.getloadavg(), **measured})
                log.info("round %d %s %s", n, label, measured)
    finally:
        with psycopg.connect(scale.ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    args.out.write_text(json.dumps({"size": args.size, "rounds": rounds}, indent=1) + "\n")


if __name__ == "__main__":
    main()
