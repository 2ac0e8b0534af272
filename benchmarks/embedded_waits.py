"""Three waits of the embedded stack: message delivery, an idle stack's CPU, SQLite's lock waits.

    .venv/bin/python benchmarks/embedded_waits.py [--poll-seconds 10] [--out F.json] [--idle-only]

1. Start the embedded workers (`herpscore up`'s layout) on an empty data dir, let them
   settle, then read their CPU time from /proc over `--poll-seconds` with nothing queued:
   what the filesystem broker's polling costs all day (compare polling intervals by
   editing `polling_interval` in service/tasks_client.py).
2. Hold SQLite's write lock (BEGIN IMMEDIATE, WAL) for 5-100 ms in one connection while
   another waits on it, and report how long after the release the waiter got the lock:
   with SQLite's own busy handler, which sleeps in growing steps (1 ms up to 100 ms), and
   through herpscore's engine (`service.db.begin_writing`: tries in steps of at most 2 ms).
3. Publish messages at random moments while a consumer waits for them, and report how long
   each took to be delivered: with the broker folder's inotify watch (service/fs_broker.py)
   and with kombu's polling every `polling_interval` (the product's 0.1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def idle_worker_cpu(seconds: float) -> float:
    """Percent of one core that an idle embedded stack's worker processes use."""
    from benchmarks.job_path import cpu_seconds
    from service.embedded import embedded_worker
    from service.migrate import upgrade
    from service.settings import Settings

    with tempfile.TemporaryDirectory() as data:
        settings = Settings(data_dir=Path(data), worker_concurrency=2)
        settings.ensure_dirs()
        upgrade(settings.db_url)
        with embedded_worker(settings) as procs:
            time.sleep(8)  # imports, forks, model preload (none here)
            pids = {p.pid for p in procs}
            for proc in procs:
                out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True)
                pids |= {int(pid) for pid in out.stdout.split()}
            before, began = cpu_seconds(), time.monotonic()
            time.sleep(seconds)
            after, elapsed = cpu_seconds(), time.monotonic() - began
    used = sum(after[p][1] - before[p][1] for p in pids if p in after and p in before)
    return 100 * used / elapsed


def busy_wait_overshoot(
    holds_ms: tuple[int, ...] = (5, 20, 50, 100), repeats: int = 5, herpscore: bool = False
) -> dict[int, float]:
    """ms from the lock's release to the waiting writer holding it, median per hold time.

    The waiter is a plain sqlite3 connection with a busy timeout, or with `herpscore` a
    write transaction of service.db's engine."""
    from sqlalchemy import text

    from service.db import dispose_engines, get_engine

    def connect(path: str) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=60000")
        return conn

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "locks.db")
        holder, waiter = connect(path), connect(path)
        holder.execute("CREATE TABLE t (x)")
        engine = get_engine(f"sqlite:///{path}")
        for hold in holds_ms:
            late = []
            for _ in range(repeats):
                holder.execute("BEGIN IMMEDIATE")
                released = [0.0]

                def release(hold: int = hold, released: list[float] = released) -> None:
                    time.sleep(hold / 1e3)
                    released[0] = time.perf_counter()
                    holder.execute("COMMIT")

                thread = threading.Thread(target=release)
                thread.start()
                time.sleep(0.001)
                if herpscore:
                    with engine.begin() as conn:
                        got = time.perf_counter()
                        conn.execute(text("SELECT 1"))
                else:
                    waiter.execute("BEGIN IMMEDIATE")
                    got = time.perf_counter()
                    waiter.execute("COMMIT")
                thread.join()
                late.append((got - released[0]) * 1e3)
            out[hold] = round(statistics.median(late), 1)
        dispose_engines()
    return out


def delivery_latency(watch: bool, messages: int = 30) -> dict[str, float]:
    """ms from a publish to its delivery to a waiting consumer: median, p90 and max."""
    import random

    from kombu import Connection, Consumer, Exchange, Queue

    from service import fs_broker

    class Polling(fs_broker.Transport):
        def _folder_watch(self) -> None:  # as without inotify: kombu's sleep between looks
            return None

    transport = fs_broker.Transport if watch else Polling
    with tempfile.TemporaryDirectory() as tmp:
        options = {
            "data_folder_in": tmp, "data_folder_out": tmp, "processed_folder": tmp + "/done",
            "control_folder": tmp + "/control", "polling_interval": 0.1,
        }  # fmt: skip
        name = f"latency-{'watch' if watch else 'poll'}"  # kombu keeps bindings per process
        queue = Queue(name, Exchange(name), routing_key=name)
        late: list[float] = []
        with (
            Connection("filesystem://", transport=transport, transport_options=options) as rx,
            Connection("filesystem://", transport=transport, transport_options=options) as tx,
            Consumer(
                rx, [queue], accept=["json"],
                callbacks=[lambda body, _: late.append(time.perf_counter() - body["sent"])],
            ),
        ):  # fmt: skip
            producer = tx.Producer()
            producer.publish({"sent": time.perf_counter()}, exchange=name, routing_key=name,
                             declare=[queue])  # fmt: skip
            rx.drain_events(timeout=5)
            late.clear()
            rng = random.Random(0)
            for _ in range(messages):
                sender = threading.Timer(
                    rng.uniform(0.05, 0.3),
                    lambda: producer.publish(
                        {"sent": time.perf_counter()}, exchange=name, routing_key=name
                    ),
                )
                sender.start()
                rx.drain_events(timeout=5)
                sender.join()
    ms = sorted(1e3 * x for x in late)
    return {
        "median": round(statistics.median(ms), 2),
        "p90": round(ms[int(0.9 * (len(ms) - 1))], 2),
        "max": round(ms[-1], 2),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    parser.add_argument(
        "--idle-only", action="store_true", help="measure only the idle stack's CPU"
    )
    args = parser.parse_args()
    if args.poll_seconds <= 0:
        parser.error("--poll-seconds must be positive")
    result: dict[str, object] = {"load_average": os.getloadavg()}
    if not args.idle_only:
        result |= {
            "delivery_ms": {
                "inotify_watch": delivery_latency(watch=True),
                "poll_every_0.1s": delivery_latency(watch=False),
            },
            "sqlite": sqlite3.sqlite_version,
            "waiter_late_ms_by_hold_ms": {
                "sqlite_busy_handler": busy_wait_overshoot(),
                "herpscore_begin_writing": busy_wait_overshoot(herpscore=True),
            },
        }
    result["idle_workers_percent_of_a_core"] = round(idle_worker_cpu(args.poll_seconds), 2)
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
