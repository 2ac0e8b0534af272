"""Crash drills: each fault on its own Redis and PostgreSQL database, with real workers.

Every drill scores a folder of generated photos through real Celery workers (scan,
inference and maintenance queues, the scheduler embedded), injects one fault, and counts
exactly one prediction per valid image. It reports how long the job took after the fault
ended. Writes benchmarks/results/crash_drill.md (and .json).

    PYTHONPATH=. python benchmarks/crash_drill.py [--photos 600] [--outage 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from service.cli import settings_env  # noqa: E402
from service.db import dispose_engines, session_scope  # noqa: E402
from service.jobs import create_job, get_job  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.models import JobStatus, Prediction  # noqa: E402
from service.registry import add_model  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.tasks_client import SCAN_TASK, enqueue  # noqa: E402
from tests.support.brokers import PrivateRedis  # noqa: E402
from tests.support.models import make_model_folder  # noqa: E402
from tests.support.photos import make_photo_folder  # noqa: E402
from tests.support.workers import stop  # noqa: E402

WORK = ROOT / "benchmarks" / "_work" / "crash_drill"
RESULTS = ROOT / "benchmarks" / "results"
PG_ADMIN = os.environ.get("HERPSCORE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass
class Drill:
    name: str
    photos: int
    scored: int
    failed: int
    one_prediction_each: bool
    recovery_seconds: float | None  # from the end of the fault to the job done
    total_seconds: float
    workers_alive: bool
    note: str = ""


@contextmanager
def database() -> Iterator[str]:
    name = f"herpscore_drill_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{url}/{name}"
    finally:
        dispose_engines()
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_worker(settings: Settings, log: Path, queues: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "celery", "--quiet", "-A", "workers", "worker", "-Q", queues,
        "--hostname", f"{queues.split(',')[0]}@%h", "--concurrency", "2", "--loglevel",
        "INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    if "maintenance" in queues:
        cmd += ["--beat", "--schedule", str(log.with_suffix(".beat"))]
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def pool_children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def run_drill(name: str, photos: int, outage: float, work: Path) -> Drill:
    """One drill: a fresh database, a fresh Redis, two workers, one fault."""
    shutil.rmtree(work, ignore_errors=True)  # a previous run's logs and photos
    work.mkdir(parents=True, exist_ok=True)
    broker = PrivateRedis(work / "redis")
    broker.start()
    try:
        with database() as db_url:
            upgrade(db_url)
            photos_root = work / "photos"
            make_photo_folder(photos_root / "survey", count=photos, size=(480, 360))
            settings = Settings(
                data_dir=work / "data", database_url=db_url, broker_url=broker.url,
                allowed_roots=[photos_root], chunk_size=32, stalled_check_seconds=10,
            )  # fmt: skip
            with session_scope(db_url) as session:
                model = make_model_folder(work / "model", labels=["red", "green", "blue"])
                add_model(session, settings, model, activate=True)
            return _fault(name, settings, broker, photos, outage, work)
    finally:
        broker.kill()


def _fault(
    name: str, settings: Settings, broker: PrivateRedis, photos: int, outage: float, work: Path
) -> Drill:
    log = work / "workers.log"
    light = start_worker(settings, log, "scan,maintenance")
    scorer = start_worker(settings, log, "inference")

    def state() -> tuple[JobStatus, int, int, int]:
        with session_scope(settings.db_url) as session:
            job = get_job(session, job_id)
            return job.status, job.total, job.scored, job.failed

    began = time.monotonic()
    with session_scope(settings.db_url) as session:
        job_id = create_job(session, settings, "survey").id
    enqueue(settings, SCAN_TASK, [job_id])
    note = ""
    if name.startswith("redis down"):
        phase = JobStatus.SCANNING if "scan" in name else JobStatus.SCORING
        wait(lambda: state()[0] == phase and (phase == JobStatus.SCANNING or state()[2] > 0), 120)
        broker.kill()
        time.sleep(outage)
        broker.start()  # on the same port, empty
        note = f"Redis killed for {outage:.0f} s and restarted empty during the {phase.value}"
    elif name == "kill -9 of a scoring process":
        wait(lambda: state()[2] > 0, 120)
        children = pool_children(scorer.pid)
        os.kill(children[0], signal.SIGKILL)
        note = f"pool process {children[0]} killed mid-job"
    fault_end = time.monotonic()
    done = wait(lambda: state()[0] == JobStatus.DONE, 900)
    finished = time.monotonic()
    alive = light.poll() is None and scorer.poll() is None
    stop(light)
    stop(scorer)
    _, _, scored, failed = state()
    with session_scope(settings.db_url) as session:
        per_image = session.execute(
            select(func.count()).select_from(Prediction).group_by(Prediction.image_id)
        ).all()
    one_each = len(per_image) == photos and all(n == 1 for (n,) in per_image)
    if "Unrecoverable error" in log.read_text(errors="replace"):
        note += "; a worker logged an unrecoverable error"
    return Drill(
        name=name, photos=photos, scored=scored, failed=failed, one_prediction_each=one_each,
        recovery_seconds=round(finished - fault_end, 1) if done else None,
        total_seconds=round(finished - began, 1), workers_alive=alive, note=note,
    )  # fmt: skip


def drill_up_kill(work: Path) -> Drill:
    """kill -9 of `herpscore up` (embedded mode): do its workers and scheduler die too?"""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERPSCORE_")}
    env.update(HERPSCORE_DATA_DIR=str(work / "data"), PYTHONPATH=str(ROOT))
    cli = [sys.executable, "-m", "service.cli"]
    subprocess.run([*cli, "init"], env=env, check=True, capture_output=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = work / "up.log"
    work.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with log.open("w") as err:
        up = subprocess.Popen(
            [*cli, "up", "--port", str(port)], env=env, stderr=err, stdout=subprocess.DEVNULL
        )
    wait(lambda: (work / "data" / "celerybeat-schedule.lock").exists(), 90)
    time.sleep(3)
    ps = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    tree: dict[int, list[int]] = {}
    for line in ps.splitlines():
        pid, ppid = (int(v) for v in line.split())
        tree.setdefault(ppid, []).append(pid)
    family, todo = [], [up.pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            family.append(child)
            todo.append(child)
    up.kill()
    up.wait()
    killed = time.monotonic()

    def alive(pid: int) -> bool:
        try:
            return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return False

    gone = wait(lambda: not any(alive(p) for p in family), 60)
    orphans = [p for p in family if alive(p)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    return Drill(
        name="kill -9 of herpscore up", photos=0, scored=0, failed=0, one_prediction_each=True,
        recovery_seconds=round(time.monotonic() - killed, 1) if gone else None,
        total_seconds=round(time.monotonic() - began, 1), workers_alive=False,
        note=f"{len(family)} child processes, {len(orphans)} outlived `up` by 60 s",
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=600)
    parser.add_argument("--outage", type=float, default=20.0, help="seconds Redis is down")
    args = parser.parse_args()
    drills = [
        "redis down during the scan",
        "redis down during scoring",
        "kill -9 of a scoring process",
    ]
    results = []
    for i, name in enumerate(drills):
        print(f"== {name}", file=sys.stderr, flush=True)
        results.append(run_drill(name, args.photos, args.outage, WORK / f"drill-{i}"))
        print(results[-1], file=sys.stderr, flush=True)
    print("== kill -9 of herpscore up", file=sys.stderr, flush=True)
    results.append(drill_up_kill(WORK / "up"))
    write(results, args)


def write(results: list[Drill], args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "args": vars(args)}
    (RESULTS / "crash_drill.json").write_text(
        json.dumps({"meta": meta, "drills": [asdict(r) for r in results]}, indent=2) + "\n"
    )
    lines = [
        "# Crash drills",
        "",
        f"`benchmarks/crash_drill.py --photos {args.photos} --outage {args.outage:g}` on "
        f"{meta['cpus']} shared cores (other work ran on the machine). Recovery: from the "
        "end of the fault to the job done (the job's remaining work included).",
        "",
        "| Drill | Photos | Scored | Failed | One prediction each | Recovery s | Total s "
        "| Workers alive | Note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.photos} | {r.scored} | {r.failed} | {r.one_prediction_each} "
            f"| {r.recovery_seconds} | {r.total_seconds} | {r.workers_alive} | {r.note} |"
        )
    (RESULTS / "crash_drill.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
