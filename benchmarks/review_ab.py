"""Review next and decision, two code trees taking turns on one 1M-prediction database.

On a shared machine the load moves by several times within minutes, so two `scale.py`
runs made one after the other compare the load more than the code. Here one database is
filled once (`scale.fill`), then each round runs `--reps` claim + decide cycles through
the Flask test client with one tree, then with the other, alternating which goes first;
each tree's numbers are its rounds' samples pooled. The load average is recorded per round.

    PYTHONPATH=$PWD nice -n 10 python benchmarks/review_ab.py --old /path/to/old/tree \\
        --new $PWD --rounds 4 --reps 60 --size 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).parent))
from scale import ADMIN, fill, percentiles


def cycles(url: str, reps: int) -> dict[str, Any]:
    """`reps` review next + decision cycles with this process's code (after one warm-up)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from service import apikeys
    from service.db import session_scope
    from service.models import Role
    from service.settings import Settings
    from service.web import create_app

    work = Path(tempfile.mkdtemp(prefix="review-ab-"))
    settings = Settings(
        data_dir=work, database_url=url, allowed_roots=[work], broker_url="memory://",
        secret_key="review-ab-benchmark-secret-key-0123456789",
    )  # fmt: skip
    with session_scope(url) as session:
        _, key = apikeys.create_key(session, f"ab-{os.getpid()}", Role.REVIEWER)
    api, headers = create_app(settings).test_client(), {"X-API-Key": key}
    statements = {"n": 0}
    event.listen(Engine, "before_cursor_execute", lambda *_: statements.__setitem__(
        "n", statements["n"] + 1))  # fmt: skip
    out: dict[str, list[float]] = {"next": [], "next_cpu": [], "decision": [], "statements": []}
    for rep in range(reps + 1):
        before, t, cpu = statements["n"], time.perf_counter(), time.process_time()
        answer = api.get("/api/v1/review/next", headers=headers)
        assert answer.status_code == 200 and answer.json, answer.get_data()[:300]
        if rep:
            out["next"].append((time.perf_counter() - t) * 1000)
            out["next_cpu"].append((time.process_time() - cpu) * 1000)
            out["statements"].append(statements["n"] - before)
        t = time.perf_counter()
        decided = api.post(
            f"/api/v1/review/items/{answer.json['item']['id']}/decision",
            headers=headers, json={"decision": "label", "label": "Species_03"},
        )  # fmt: skip
        assert decided.status_code == 201, decided.get_data()[:300]
        if rep:
            out["decision"].append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, help="root of the old tree (its PYTHONPATH)")
    parser.add_argument("--new", type=Path, help="root of the new tree")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument(
        "--database", help="a database scale.fill made already (kept); default: a new one"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/review_ab.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a database URL: run cycles
    args = parser.parse_args()
    if args.child:
        print(json.dumps(cycles(args.child, args.reps)))
        return
    from service.migrate import upgrade

    name = f"herpscore_review_ab_{os.getpid()}"
    url = args.database or f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    if not args.database:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    pooled: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    loads = []
    try:
        upgrade(url)  # the new tree's schema (a superset of the old one's here)
        if not args.database:
            fill(url, args.size)
        for round_ in range(args.rounds):
            order = ["old", "new"] if round_ % 2 == 0 else ["new", "old"]
            for tree in order:
                root = args.old if tree == "old" else args.new
                env = {**os.environ, "PYTHONPATH": str(root)}
                child = subprocess.run(
                    [sys.executable, __file__, "--child", url, "--reps", str(args.reps)],
                    env=env, cwd=root, capture_output=True, text=True, check=True,
                )  # fmt: skip
                for k, v in json.loads(child.stdout.splitlines()[-1]).items():
                    pooled[tree].setdefault(k, []).extend(v)
            loads.append([round(x, 1) for x in os.getloadavg()])
            print(f"round {round_ + 1}: load {loads[-1]}", flush=True)
    finally:
        from service.db import dispose_engines

        dispose_engines()
        if not args.database:
            with psycopg.connect(ADMIN, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    result = {
        tree: {k: percentiles(v) for k, v in samples.items()} for tree, samples in pooled.items()
    }
    result["load_average_per_round"] = loads  # type: ignore[assignment]
    result["setup"] = {"size": args.size, "rounds": args.rounds, "reps": args.reps}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
