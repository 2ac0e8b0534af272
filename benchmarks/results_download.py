"""results.csv of one big job through gunicorn: time to first byte, total time, peak RSS.

A throwaway PostgreSQL database gets one job of --rows images (generated with SQL, as in
benchmarks/scale.py); gunicorn serves the app as docker-compose.yml runs it (gthread, 60 s
timeout, one worker so its memory is the download's), and the file is read over HTTP.
The worker's peak resident memory is its VmHWM from /proc.

    PYTHONPATH=$PWD nice -n 10 python benchmarks/results_download.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text

from benchmarks.scale import ADMIN, fill

SECRET = "results-download-benchmark-secret-0123456789"


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _worker(master: int, timeout: float = 60) -> int:
    """The gunicorn worker's pid (the master's only child) once it is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.2)
    raise TimeoutError("gunicorn started no worker")


def _wait_ready(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("gunicorn did not answer")


def download(url: str, key: str) -> dict[str, Any]:
    """Read the file in 64 KiB pieces: seconds to the first byte and to the last, size."""
    request = urllib.request.Request(url, headers={"X-API-Key": key})
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=600) as response:
        first = response.read(1)
        ttfb = time.perf_counter() - start
        size, lines = len(first), first.count(b"\n")
        while chunk := response.read(65536):
            size += len(chunk)
            lines += chunk.count(b"\n")
    return {
        "status": response.status,
        "first_byte_ms": round(ttfb * 1000, 1),
        "total_seconds": round(time.perf_counter() - start, 2),
        "bytes": size,
        "data_rows": lines - 1,  # the header line
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument(
        "--formats", nargs="+", default=["csv"],
        choices=["csv", "json", "megadetector", "camtrap-dp"],
        help="downloaded one after the other; the peak RSS is read after each",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/results_download.json")
    )
    args = parser.parse_args()
    from service import apikeys
    from service.db import dispose_engines, session_scope
    from service.migrate import upgrade
    from service.models import Role

    name = f"bench_download_{os.getpid()}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    server = None
    try:
        upgrade(db_url)
        t = time.monotonic()
        facts = fill(db_url, args.rows, big_share=1.0)
        generated = round(time.monotonic() - t)
        with session_scope(db_url) as session:
            _, key = apikeys.create_key(session, "download", Role.VIEWER)
            # Camtrap DP needs every site's coordinates and UTC offset (made-up ones here).
            session.execute(text(
                "INSERT INTO sites (name, latitude, longitude, utc_offset_minutes, "
                "clock_correction_seconds, notes, created_at, updated_at) "
                "SELECT DISTINCT site, 14.6, 121.0, 480, 0, '', now(), now() "
                "FROM job_images WHERE site IS NOT NULL"
            ))  # fmt: skip
            # ... and a capture time per photo: Camtrap DP leaves out media without one.
            session.execute(text(
                "UPDATE images SET captured_local = timestamp '2026-05-01 06:00' "
                "+ (id % 86400) * interval '1 second', captured_offset_minutes = 480"
            ))  # fmt: skip
        dispose_engines()
        work = Path(tempfile.mkdtemp(prefix="download-bench-"))
        env = {**os.environ, "HERPSCORE_DATABASE_URL": db_url, "HERPSCORE_DATA_DIR": str(work),
               "HERPSCORE_ALLOWED_ROOTS": str(work),
               "HERPSCORE_BROKER_URL": "memory://", "HERPSCORE_SECRET_KEY": SECRET}  # fmt: skip
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", f"--bind=127.0.0.1:{args.port}", "--workers=1",
             "--worker-class=gthread", "--threads=4", "--timeout=60",
             "service.web:create_app()"],
            env=env, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{args.port}"
        _wait_ready(base)
        worker = _worker(server.pid)
        idle_kib = _kib(worker, "VmRSS")
        url = f"{base}/api/v1/jobs/{facts['big_job']}/results.csv"
        result: dict[str, Any] = {}
        for fmt in args.formats:
            # data_rows counts lines: a data row for CSV, not for the JSON or zip formats.
            result[fmt] = download(f"{url}?format={fmt}", key) | {
                "worker_peak_rss_mib_so_far": round(_kib(worker, "VmHWM") / 1024, 1)
            }
        result |= {
            "rows": args.rows,
            "generate_seconds": generated,
            "worker_rss_before_mib": round(idle_kib / 1024, 1),
            "worker_peak_rss_mib": round(_kib(worker, "VmHWM") / 1024, 1),
            "load_average": [round(x, 1) for x in os.getloadavg()],
        }
        print(json.dumps(result))
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
