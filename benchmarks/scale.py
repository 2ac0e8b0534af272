"""Reviewer and results latency at 10k / 100k / 1M stored predictions (PostgreSQL).

Each size gets a throwaway PostgreSQL database of its own, migrated, then filled with SQL
(generate_series): one big job holding 60 % of the predictions and jobs of 1,000 images for
the rest; a tenth of the predictions pending review and a tenth decided (with annotations).
The Flask test client then times p50/p95 of: review next (claim) and decision, review
stats, a page of predictions (first, deep offset, keyset `after`), the UI job page, and
results.csv (first byte and full download). Before the big job's pages, small jobs' pages
are read (the plan flip: prepared statements switch to a generic plan). The slowest
statement of each endpoint is EXPLAINed. Last, `rank_job_queue` (the review order a job
gets when it finishes) is timed on the big job with 100,000 pending items.

    PYTHONPATH=$PWD python benchmarks/scale.py --sizes 10000,100000 --label after
    PYTHONPATH=/work/main python benchmarks/scale.py --sizes 10000,100000 --label before
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger("scale")
ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
LABELS = [f"Species_{i:02d}" for i in range(10)]
SMALL_JOB = 1000
RARE_LABEL, RARE_EVERY = "Species_rare", 9973
RANK_PENDING = 100_000
# The app's statements are cancelled after this long (an endpoint is then "timed out"): one
# plan of the old code compared every image of the big job with every human decision.
STATEMENT_TIMEOUT_S = 60


def fill(url: str, n: int, big_share: float = 0.6) -> dict[str, Any]:
    """n images, job images and predictions; n/10 pending review items, n/10 decided.

    Job 1 holds `big_share` of them; the rest are in jobs of SMALL_JOB images."""
    big = int(n * big_share)
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        has_folder = conn.execute(
            "SELECT 1 FROM information_schema.columns "
            "WHERE table_name = 'job_images' AND column_name = 'folder'"
        ).fetchone()
        class_map = json.dumps({str(i): label for i, label in enumerate(LABELS)})
        conn.execute(
            "INSERT INTO model_versions (name, path, status, num_classes, class_map, "
            "metadata_json, files_sha256, source, created_at) VALUES ('bench', '/m', 'active', "
            "%s, %s, '{}', '{}', '', now())",
            (len(LABELS), class_map),
        )
        jobs = 1 + (n - big + SMALL_JOB - 1) // SMALL_JOB
        conn.execute(
            "INSERT INTO scan_jobs (id, folder, recursive, extensions, model_version_id, "
            "threshold, status, total, scored, failed, routed, chunks_total, scan_complete, "
            "scan_attempts, created_by, created_at) "
            "SELECT j, '/data/job' || j, true, '[\"jpg\"]', 1, 0.9, 'done', 0, 0, 0, 0, 0, "
            f"true, 1, 'bench', now() FROM generate_series(1, {jobs}) j",
        )
        # Image i belongs to job 1 if i <= big, else to job 2 + (i - big - 1) / SMALL_JOB;
        # 50 sites of 20 camera folders each.
        job_of = f"CASE WHEN i <= {big} THEN 1 ELSE 2 + (i - {big} - 1) / {SMALL_JOB} END"
        conn.execute(
            "INSERT INTO images (id, path, sha256, size_bytes, width, height, format, "
            "created_at) SELECT i, '/data/img/' || i || '.jpg', md5(i::text) || md5(i::text), "
            f"1000000, 4000, 3000, 'JPEG', now() FROM generate_series(1, {n}) i",
        )
        folder_col = ", folder" if has_folder else ""
        folder_val = ", 'site' || (i % 50) || '/cam' || (i % 20)" if has_folder else ""
        conn.execute(
            f"INSERT INTO job_images (job_id, image_id, rel_path, site, status{folder_col}) "
            f"SELECT {job_of}, i, 'site' || (i % 50) || '/cam' || (i % 20) || '/IMG_' "
            f"|| lpad(i::text, 8, '0') || '.jpg', 'site' || (i % 50), 'scored'{folder_val} "
            f"FROM generate_series(1, {n}) i",
        )
        # One image in RARE_EVERY gets a rare label (the label filter's worst case).
        conn.execute(
            "INSERT INTO predictions (id, image_id, model_version_id, job_id, label, "
            "label_index, confidence, topk, created_at) SELECT i, i, 1, "
            f"{job_of}, CASE WHEN i % {RARE_EVERY} = 0 THEN '{RARE_LABEL}' "
            "ELSE 'Species_' || lpad((i % 10)::text, 2, '0') END, i % 10, "
            "0.3 + (i % 700) / 1000.0, json_build_array(json_build_array('Species_' || "
            "lpad((i % 10)::text, 2, '0'), 0.3 + (i % 700) / 1000.0)), now() "
            f"FROM generate_series(1, {n}) i",
        )
        # Every 10th image pending, every 10th (offset 5) done with an annotation.
        conn.execute(
            "INSERT INTO review_items (prediction_id, image_id, job_id, reason, status, "
            "priority, venom_risk, created_at, decided_at) SELECT i, i, "
            f"{job_of}, 'low_confidence', CASE WHEN i % 10 = 0 THEN 'pending' ELSE 'done' END, "
            "1.0 - (0.3 + (i % 700) / 1000.0), false, now(), "
            "CASE WHEN i % 10 = 0 THEN NULL ELSE now() END "
            f"FROM generate_series(1, {n}) i WHERE i % 10 IN (0, 5)",
        )
        conn.execute(
            "INSERT INTO annotations (image_id, review_item_id, reviewer, decision, label, "
            "machine_label, created_at) SELECT r.image_id, r.id, 'someone', 'label', "
            "'Species_01', 'Species_01', now() - interval '2 days' FROM review_items r "
            "WHERE r.status = 'done'"
        )
        conn.execute(
            "UPDATE scan_jobs j SET total = c.n, scored = c.n FROM (SELECT job_id, count(*) n "
            "FROM job_images GROUP BY job_id) c WHERE c.job_id = j.id"
        )
        for table in ("images", "scan_jobs", "predictions", "review_items", "annotations"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        conn.execute("VACUUM ANALYZE")
    return {"big_job": 1, "big_job_images": big, "jobs": jobs}


class Statements:
    """Every statement the app runs, with its time, to find and EXPLAIN the slowest."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str, Any]] = []
        self.on = False

    def install(self, engine: Any) -> None:
        from sqlalchemy import event

        @event.listens_for(engine, "before_cursor_execute")
        def before(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            conn.info["t0"] = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def after(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if self.on:
                self.log.append((time.perf_counter() - conn.info["t0"], statement, params))

    @contextmanager
    def recording(self) -> Iterator[list[tuple[float, str, Any]]]:
        self.log, self.on = [], True
        try:
            yield self.log
        finally:
            self.on = False


def percentiles(times: list[float]) -> dict[str, float]:
    """n, p50 and p95 of these times in ms."""
    ordered = sorted(times)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
    }


def timed(fn: Callable[[], Any], reps: int) -> dict[str, float]:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return percentiles(times)


def explain(dsn: str, statement: str, params: Any) -> str:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, params).fetchall()
        conn.rollback()
    return "\n".join(r[0] for r in rows)


def measure(
    url: str,
    facts: dict[str, Any],
    reps: int,
    full_download: bool = True,
    review_only: bool = False,
) -> dict[str, Any]:
    from service import apikeys, users
    from service.db import session_scope
    from service.models import Role
    from service.settings import Settings
    from service.web import create_app

    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    settings = Settings(
        data_dir=work, database_url=url, allowed_roots=[work], broker_url="memory://",
        secret_key="scale-benchmark-secret-key-0123456789",
    )  # fmt: skip
    with session_scope(url) as session:
        _, key = apikeys.create_key(session, "bench", Role.REVIEWER)
        user_id = users.create_user(session, "bencher", "bench-password-1", Role.REVIEWER).id
    app = create_app(settings)
    app.config["WTF_CSRF_ENABLED"] = False  # the review page's posts; CSRF has its own tests
    api = app.test_client()
    ui = app.test_client()
    with ui.session_transaction() as s:
        s["_user_id"], s["_fresh"] = f"{user_id}:0", True
    headers = {"X-API-Key": key}
    statements = Statements()
    api.get("/api/v1/review/stats", headers=headers)  # creates the app's engines
    import service.db as db

    for engine in list(db._engines.values()):  # the benchmark's probe
        statements.install(engine)
    big, depth = facts["big_job"], int(facts["big_job_images"] * 0.8)
    out: dict[str, Any] = {}
    slowest: dict[str, tuple[float, str, Any]] = {}

    def run(name: str, fn: Callable[[], Any], n: int = reps) -> None:
        fn()  # warm
        with statements.recording() as seen:
            out[name] = timed(fn, n)
        if seen:
            slowest[name] = max(seen, key=lambda s: s[0])
        log.info("%s %s", name, out[name])

    def ok(response: Any) -> Any:
        assert response.status_code < 300, (response.status_code, response.get_data()[:300])
        return response

    def next_and_decide() -> None:
        # Wall time, and this process's CPU time (the app's Python, not PostgreSQL's): the
        # CPU time moves far less than the wall time with the load of a shared machine.
        t, cpu = time.perf_counter(), time.process_time()
        item = ok(api.get("/api/v1/review/next", headers=headers)).json["item"]
        next_ms.append((time.perf_counter() - t) * 1000)
        next_cpu.append((time.process_time() - cpu) * 1000)
        t, cpu = time.perf_counter(), time.process_time()
        ok(api.post(f"/api/v1/review/items/{item['id']}/decision", headers=headers,
                    json={"decision": "label", "label": "Species_03"}))  # fmt: skip
        decide_ms.append((time.perf_counter() - t) * 1000)
        decide_cpu.append((time.process_time() - cpu) * 1000)

    next_ms: list[float] = []
    decide_ms: list[float] = []
    next_cpu: list[float] = []
    decide_cpu: list[float] = []
    run("review next + decision", next_and_decide)
    out["review next"], out["decision"] = percentiles(next_ms[1:]), percentiles(decide_ms[1:])
    out["review next, app CPU"] = percentiles(next_cpu[1:])
    out["decision, app CPU"] = percentiles(decide_cpu[1:])
    run("review stats", lambda: ok(api.get("/api/v1/review/stats", headers=headers)))
    run("review stats (job)",
        lambda: ok(api.get(f"/api/v1/review/stats?job_id={big}", headers=headers)))  # fmt: skip

    def page_next_and_decide() -> None:
        # The review page: its answer holds the item, two held ahead, counts, recent ones.
        t = time.perf_counter()
        item = ok(ui.post("/review/next.json", json={})).json["item"]
        page_next_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        ok(ui.post(f"/review/items/{item['id']}/decision.json",
                   json={"decision": "label", "label": "Species_03"}))  # fmt: skip
        page_decide_ms.append((time.perf_counter() - t) * 1000)

    page_next_ms: list[float] = []
    page_decide_ms: list[float] = []
    run("review page next + decision", page_next_and_decide, max(10, reps // 2))
    out["review page next.json"] = percentiles(page_next_ms[1:])
    out["review page decision.json (+ next)"] = percentiles(page_decide_ms[1:])
    if review_only:
        return _finish(url, out, slowest)
    # The plan flip: a worker that served small jobs first (psycopg prepares a statement on
    # its 5th run; PostgreSQL may then keep a generic plan).
    for job in range(2, min(facts["jobs"], 12) + 1):
        ok(api.get(f"/api/v1/jobs/{job}/predictions?limit=100", headers=headers))
    base = f"/api/v1/jobs/{big}/predictions?limit=100"
    run("predictions first page", lambda: ok(api.get(base, headers=headers)))
    run("predictions offset 80%", lambda: ok(api.get(f"{base}&offset={depth}", headers=headers)))
    probe = api.get(f"{base}&after=1", headers=headers)
    if probe.status_code == 200:  # the keyset cursor exists (not in the old code)
        page = api.get(f"{base}&offset={depth}&limit=1", headers=headers).json
        assert page is not None
        row = page["items"][0]
        after = row["image_id"]
        run("predictions keyset at 80%",
            lambda: ok(api.get(f"{base}&after={after}", headers=headers)))  # fmt: skip
    run("predictions filtered (label)",
        lambda: ok(api.get(f"{base}&label=Species_03", headers=headers)))  # fmt: skip
    # Every other filter of the page, fewer repetitions (some read the whole job).
    filters = {
        "rare label": f"label={RARE_LABEL}", "absent label": "label=Nobody",
        "label, offset 5000": "label=Species_03&offset=5000",
        "min_confidence 0.95": "min_confidence=0.95",
        "confidence 0.5-0.6": "min_confidence=0.5&max_confidence=0.6",
        "site": "site=site13", "failed": "failed=true", "needs_review": "needs_review=true",
        "reviewed": "reviewed=true", "final_label": "final_label=Species_03",
    }  # fmt: skip
    few = max(5, reps // 4)
    for name, args in filters.items():
        if api.get(f"{base}&{args}", headers=headers).status_code >= 500:  # over the timeout
            over = f"> {STATEMENT_TIMEOUT_S} s"
            out[f"predictions filtered ({name})"] = {"n": 0, "p50_ms": "timed out", "p95_ms": over}
            log.info("predictions filtered (%s) timed out", name)
            continue
        url = f"{base}&{args}"
        run(f"predictions filtered ({name})",
            lambda url=url: ok(api.get(url, headers=headers)), few)  # type: ignore[misc]  # fmt: skip
    run("job page (UI)", lambda: ok(ui.get(f"/jobs/{big}")))
    run("job page (UI, label)", lambda: ok(ui.get(f"/jobs/{big}?label=Species_03")), few)

    def first_byte() -> None:
        response = api.get(f"/api/v1/jobs/{big}/results.csv", headers=headers, buffered=False)
        next(iter(response.response))
        response.close()

    run("results.csv first byte", first_byte, max(3, reps // 5))
    rows = {"n": 0}

    def full() -> None:
        response = api.get(f"/api/v1/jobs/{big}/results.csv", headers=headers, buffered=False)
        size = sum(len(chunk) for chunk in response.response)
        response.close()
        rows["n"] = size

    if not full_download:  # benchmarks/results_download.py times it through gunicorn
        return _finish(url, out, slowest)
    t = time.perf_counter()
    full()
    out["results.csv full"] = {
        "n": 1, "seconds": round(time.perf_counter() - t, 2), "bytes": rows["n"],
        "rows": facts["big_job_images"],
    }  # fmt: skip
    log.info("results.csv full %s", out["results.csv full"])
    return _finish(url, out, slowest)


ALWAYS_EXPLAINED = ("predictions filtered (label)", "predictions offset 80%")


def _finish(url: str, out: dict[str, Any], slowest: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN the slowest statement of the four slowest endpoints (and of the label filter and
    the deep offset); drop the connections."""
    from service.db import dispose_engines

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    plans = {}
    ranked = [name for name, _ in sorted(slowest.items(), key=lambda kv: -kv[1][0])]
    shown = ranked[:4] + [name for name in ALWAYS_EXPLAINED if name in ranked[4:]]
    for name in shown:
        seconds, statement, params = slowest[name]
        try:
            plans[name] = {"ms": round(seconds * 1000, 1), "sql": statement,
                           "plan": explain(dsn, statement, params)}  # fmt: skip
        except Exception as exc:  # noqa: BLE001  # a plan we cannot show is reported, not fatal
            plans[name] = {"ms": round(seconds * 1000, 1), "sql": statement, "plan": str(exc)}
    out["plans"] = plans
    dispose_engines()
    return out


def rank_timing(url: str, facts: dict[str, Any], pending: int = RANK_PENDING) -> dict[str, Any]:
    """rank_job_queue on the big job with `pending` pending items, each order once (rolled
    back), and the Python memory it peaked at (tracemalloc, a second run of each order).

    The big job's pending items are topped up to `pending`; their predictions get five
    top-k entries and labels over 200 species, few of them common (a survey's skew)."""
    import tracemalloc

    from service.db import session_factory
    from service.review.order import rank_job_queue
    from service.routing import QUEUE_ORDERS

    big = facts["big_job"]
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO review_items (prediction_id, image_id, job_id, reason, status, "
            "priority, venom_risk, created_at) SELECT p.id, p.image_id, %(job)s, "
            "'low_confidence', 'pending', 1.0 - p.confidence, p.id %% 50 = 0, now() "
            "FROM predictions p WHERE p.job_id = %(job)s AND NOT EXISTS (SELECT 1 FROM "
            "review_items r WHERE r.prediction_id = p.id) ORDER BY p.id LIMIT GREATEST(0, "
            "%(pending)s - (SELECT count(*) FROM review_items WHERE job_id = %(job)s "
            "AND status = 'pending'))",
            {"job": big, "pending": pending},
        )
        conn.execute("SELECT setseed(0.42)")
        conn.execute(
            "UPDATE predictions p SET label = 'Rank_' || lpad(s.k::text, 3, '0'), "
            "topk = json_build_array(json_build_array('Rank_' || lpad(s.k::text, 3, '0'), "
            "s.p), json_build_array('Other_1', s.p * 0.5), json_build_array('Other_2', "
            "s.p * 0.2), json_build_array('Other_3', 0.02), json_build_array('Other_4', 0.01)) "
            "FROM (SELECT r.prediction_id, floor(200 * power(random(), 3))::int AS k, "
            "0.3 + 0.6 * random() AS p FROM review_items r WHERE r.job_id = %s "
            "AND r.status = 'pending') s WHERE p.id = s.prediction_id",
            (big,),
        )
        conn.execute("VACUUM ANALYZE review_items")
        conn.execute("VACUUM ANALYZE predictions")
    out: dict[str, Any] = {"pending": pending}
    factory = session_factory(url)
    for order in [o for o in QUEUE_ORDERS if o != "confidence"]:
        row: dict[str, Any] = {}
        for traced in (False, True):
            session = factory()
            try:
                if traced:
                    tracemalloc.start()
                t = time.perf_counter()
                row["ranked"] = rank_job_queue(session, big, order)
                seconds = time.perf_counter() - t
                if traced:
                    row["python_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
                    tracemalloc.stop()
                else:
                    row["seconds"] = round(seconds, 2)
            finally:
                session.rollback()
                session.close()
        out[order] = row
        log.info("rank_job_queue %s %s", order, row)
    return out


def report(path: Path) -> str:
    """benchmarks/results/scale.md from scale.json: p50/p95 per size, before and after."""
    data = json.loads(path.read_text())
    labels = list(data)
    sizes = sorted({n for runs in data.values() for n in runs}, key=int)
    lines = ["# Scale benchmark (`benchmarks/scale.py`, PostgreSQL, Flask test client)", ""]
    lines += ["p50 / p95 in ms (results.csv full: seconds for the big job's rows).", ""]
    for n in sizes:
        runs = {label: data[label][n] for label in labels if n in data[label]}
        first = next(iter(runs.values()))
        lines += [f"## {int(n):,} predictions (big job: {first['big_job_images']:,} images)", ""]
        loads = [f"{label} {run['load_average']}" for label, run in runs.items()
                 if "load_average" in run]  # fmt: skip
        if loads:
            lines += ["Load average (1, 5, 15 min) at the end: " + "; ".join(loads) + ".", ""]
        lines += ["| endpoint | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
        names = [k for k in first if isinstance(first[k], dict) and "n" in first[k]]
        for other in runs.values():
            names += [k for k in other if k not in names and isinstance(other[k], dict)
                      and "n" in other[k]]  # fmt: skip
        for name in names:
            cells = []
            for run in runs.values():
                m = run.get(name)
                if m is None:
                    cells.append("-")
                elif "seconds" in m:
                    cells.append(f"{m['seconds']} s")
                else:
                    cells.append(f"{m['p50_ms']} / {m['p95_ms']}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        ranks = {label: run["rank_job_queue"] for label, run in runs.items()
                 if "rank_job_queue" in run}  # fmt: skip
        if ranks:
            pending = next(iter(ranks.values()))["pending"]
            lines += [f"rank_job_queue, big job with {pending:,} pending items: seconds "
                      "(Python peak MB, tracemalloc)", "", "| order | " + " | ".join(ranks)
                      + " |", "|---|" + "---|" * len(ranks)]  # fmt: skip
            orders = [o for o in next(iter(ranks.values())) if o != "pending"]
            for order in orders:
                cells = [f"{r[order]['seconds']} s ({r[order]['python_peak_mb']} MB)"
                         if order in r else "-" for r in ranks.values()]  # fmt: skip
                lines.append(f"| {order} | " + " | ".join(cells) + " |")
            lines.append("")
        for label, run in runs.items():
            for name, plan in run.get("plans", {}).items():
                lines += [f"<details><summary>{label}: {name}, slowest statement "
                          f"({plan['ms']} ms)</summary>", "", "```", plan["sql"][:1500], "",
                          plan["plan"][:4000], "```", "</details>", ""]  # fmt: skip
    return "\n".join(lines) + "\n"


def timeout(database: str, value: str) -> None:
    """The statement_timeout of every new connection to this database (the app's own
    connection options would override one given in PGOPTIONS)."""
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {database} SET statement_timeout = '{value}'")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--label", default="after")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    parser.add_argument("--report", action="store_true", help="only write scale.md")
    parser.add_argument(
        "--review-only", action="store_true", help="the review endpoints only, no job pages"
    )
    parser.add_argument(
        "--skip-full-download",
        action="store_true",
        help="time results.csv's first byte only (results_download.py times the whole file)",
    )
    parser.add_argument(
        "--skip-rank",
        action="store_true",
        help=f"skip timing rank_job_queue on the big job with {RANK_PENDING:,} pending items",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.report:
        args.out.with_suffix(".md").write_text(report(args.out))
        return
    from service.migrate import upgrade

    results: dict[str, Any] = {}
    for n in [int(x) for x in args.sizes.split(",")]:
        name = f"herpscore_scale_{os.getpid()}_{n}"
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        try:
            upgrade(url)
            t = time.monotonic()
            facts = fill(url, n)
            log.info("%d predictions generated in %.0f s", n, time.monotonic() - t)
            generated = round(time.monotonic() - t)
            timeout(name, f"{STATEMENT_TIMEOUT_S}s")  # for every connection from here on
            measured = measure(url, facts, args.reps, not args.skip_full_download,
                               args.review_only)  # fmt: skip
            timeout(name, "0")
            if not args.skip_rank:
                measured["rank_job_queue"] = rank_timing(url, facts)
            results[str(n)] = {"generate_seconds": generated, **facts, **measured,
                               "load_average": [round(x, 1) for x in os.getloadavg()]}  # fmt: skip
        finally:
            from service.db import dispose_engines

            dispose_engines()
            with psycopg.connect(ADMIN, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing.setdefault(args.label, {}).update(results)  # sizes run separately add up
    args.out.write_text(json.dumps(existing, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(report(args.out))
    print(json.dumps({n: {k: v for k, v in r.items() if k != "plans"} for n, r in results.items()}))


if __name__ == "__main__":
    main()
