"""Crash drills: each fault on its own Redis and PostgreSQL database, with real workers.

Every drill runs the stack as docker-compose.yml runs it (a scan/maintenance worker, an
inference worker and beat, each a process of its own; gunicorn where the drill needs the
web), scores folders of generated photos, injects one fault, and counts exactly one
prediction per valid image. It reports how long the work took after the fault ended.
Writes benchmarks/results/crash_drill.md (and .json).

    PYTHONPATH=. python benchmarks/crash_drill.py [--photos 400] [--outage 20] [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from benchmarks.job_path import fresh_pg_database  # noqa: E402
from service import apikeys  # noqa: E402
from service.cli import settings_env  # noqa: E402
from service.db import dispose_engines, session_scope  # noqa: E402
from service.jobs import create_job  # noqa: E402
from service.migrate import upgrade  # noqa: E402
from service.models import JobImage, JobStatus, Prediction, Role, ScanJob  # noqa: E402
from service.registry import add_model  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.tasks_client import SCAN_TASK, enqueue  # noqa: E402
from tests.support.brokers import PrivateRedis, free_port  # noqa: E402
from tests.support.hostile import write_big_png  # noqa: E402
from tests.support.models import make_model_folder  # noqa: E402
from tests.support.photos import write_photo  # noqa: E402
from tests.support.postgres import PrivatePostgres  # noqa: E402
from tests.support.workers import stop  # noqa: E402

WORK = ROOT / "benchmarks" / "_work" / "crash_drill"
RESULTS = ROOT / "benchmarks" / "results"
PG_ADMIN = os.environ.get("HERPSCORE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
COLOURS = ("red", "green", "blue")
# The poison drill: a hard ceiling that a 94 MP RGBA PNG (376 MB decoded, inside every
# decode limit, about 850 MB peak) passes and a 480 x 360 photo never nears.
POISON_CEILING_MB = 600

REDIS_SCAN = "redis down during the scan"
REDIS_SCORING = "redis down during scoring"
KILL_SCORER = "kill -9 of a scoring process"
KILL_GUNICORN = "kill -9 of gunicorn"
POSTGRES_RESTART = "PostgreSQL restarted mid-job"
POISON = "a poison file"
UP_KILL = "kill -9 of herpscore up"
DRILLS = (REDIS_SCAN, REDIS_SCORING, KILL_SCORER, KILL_GUNICORN, POSTGRES_RESTART, POISON)


@dataclass
class Drill:
    name: str
    photos: int  # valid photos (a poison file is not one)
    scored: int
    failed: int
    one_prediction_each: bool
    recovery_seconds: float | None  # from the end of the fault to the work done
    total_seconds: float
    workers_alive: bool
    note: str = ""
    failures: dict[str, int] = field(default_factory=dict)  # failure reason -> files


@contextmanager
def database(own_cluster: PrivatePostgres | None) -> Iterator[str]:
    """A fresh database: on the drill's own cluster, or on the shared server (dropped)."""
    name = f"herpscore_drill_{uuid.uuid4().hex[:8]}"
    if own_cluster is not None:
        yield own_cluster.create_database(name)
        dispose_engines()
        return
    with fresh_pg_database("herpscore_drill", PG_ADMIN) as url:
        yield url


class Stack:
    """The compose services as local processes, each in its own process group."""

    def __init__(self, settings: Settings, work: Path) -> None:
        self.settings = settings
        self.log = work / "stack.log"
        self.metrics = work / "metrics"
        self.metrics.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(ROOT)}
        self.env.update(
            HERPSCORE_SECRET_KEY=secrets.token_urlsafe(48), HERPSCORE_COOKIE_SECURE="false"
        )
        self.beat_schedule = work / "celerybeat-schedule"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.web_port = free_port()

    def _spawn(self, name: str, cmd: list[str], **extra: str) -> None:
        with self.log.open("ab") as out:
            self.procs[name] = subprocess.Popen(
                cmd, env={**self.env, **extra}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def start_workers(self) -> None:
        celery = [sys.executable, "-m", "celery", "--quiet", "-A", "workers"]
        common = ["--concurrency", "2", "--loglevel", "INFO", "--without-gossip",
                  "--without-mingle"]  # fmt: skip
        self._spawn("worker-scan", [*celery, "worker", "-Q", "scan,maintenance",
                                    "--hostname", "scan@%h", *common])  # fmt: skip
        self._spawn(
            "worker-inference",
            [*celery, "worker", "-Q", "inference", "--hostname", "inference@%h", *common],
            HERPSCORE_WORKER_THREADS="1", OMP_NUM_THREADS="1",
            PROMETHEUS_MULTIPROC_DIR=str(self.metrics),
        )  # fmt: skip
        self._spawn("beat", [*celery, "beat", "--schedule", str(self.beat_schedule),
                             "--loglevel", "INFO"])  # fmt: skip

    def start_web(self) -> None:
        """gunicorn with compose's options (3 gthread workers of 4 threads, 60 s timeout)."""
        self._spawn(
            "web",
            [sys.executable, "-m", "gunicorn", f"--bind=127.0.0.1:{self.web_port}",
             "--workers=3", "--worker-class=gthread", "--threads=4", "--timeout=60",
             "--graceful-timeout=30", "--access-logfile=-",
             f"--control-socket={self.log.parent / 'gunicorn.ctl'}", "service.web:create_app()"],
            PROMETHEUS_MULTIPROC_DIR=str(self.metrics),
        )  # fmt: skip

    def web_up(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.web_port}/api/v1/health"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.procs.values())

    def stop(self) -> None:
        for proc in self.procs.values():
            stop(proc)


def wait(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def is_alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def make_photos(folder: Path, count: int, first_seed: int = 0) -> None:
    """Photos with bytes of their own (a byte twin would reuse another's prediction)."""
    for i in range(count):
        colour = COLOURS[i % 3]
        name = folder / f"site{i % 2}" / f"{colour}_{first_seed + i:04d}.jpg"
        write_photo(name, colour, (480, 360), seed=first_seed + i)


def run_drill(name: str, photos: int, outage: float, work: Path) -> Drill:
    """One drill: a fresh database, a fresh Redis, the stack, one fault."""
    shutil.rmtree(work, ignore_errors=True)  # a previous run's logs and photos
    work.mkdir(parents=True, exist_ok=True)
    broker = PrivateRedis(work / "redis")
    broker.start()
    cluster = PrivatePostgres() if name == POSTGRES_RESTART else None
    try:
        if cluster is not None:
            cluster.start()
        with database(cluster) as db_url:
            upgrade(db_url)
            photos_root = work / "photos"
            folders = 4 if name == KILL_GUNICORN else 1
            for i in range(folders):
                make_photos(photos_root / f"survey{i}", photos // folders, i * photos)
            if name == POISON:
                write_big_png(photos_root / "survey0" / "site0" / "poison.png", 9700, 9700)
            settings = Settings(
                data_dir=work / "data", database_url=db_url, broker_url=broker.url,
                allowed_roots=[photos_root], chunk_size=32, stalled_check_seconds=10,
                worker_kill_memory_megabytes=POISON_CEILING_MB if name == POISON else 4096,
            )  # fmt: skip
            with session_scope(db_url) as session:
                model = make_model_folder(work / "model", labels=list(COLOURS))
                add_model(session, settings, model, activate=True)
            stack = Stack(settings, work)
            try:
                return _fault(name, stack, broker, cluster, photos, outage)
            finally:
                stack.stop()
    finally:
        broker.kill()
        if cluster is not None:
            cluster.destroy()


def _counts(settings: Settings) -> tuple[list[JobStatus], int, int, dict[str, int], list[int]]:
    """Job statuses, images scored and failed over all jobs, failures by reason, and the
    number of predictions of each image that has one."""
    with session_scope(settings.db_url) as session:
        jobs = session.execute(select(ScanJob.status, ScanJob.scored, ScanJob.failed)).all()
        reasons = session.execute(
            select(JobImage.failure_reason, func.count())
            .where(JobImage.failure_reason.is_not(None))
            .group_by(JobImage.failure_reason)
        ).all()
        per_image = session.scalars(
            select(func.count()).select_from(Prediction).group_by(Prediction.image_id)
        ).all()
    return (
        [j[0] for j in jobs],
        sum(j[1] for j in jobs),
        sum(j[2] for j in jobs),
        {str(r): int(n) for r, n in reasons},
        list(per_image),
    )


def _fault(
    name: str,
    stack: Stack,
    broker: PrivateRedis,
    cluster: PrivatePostgres | None,
    photos: int,
    outage: float,
) -> Drill:
    settings = stack.settings
    stack.start_workers()

    def scored() -> int:
        try:
            return _counts(settings)[1]
        except Exception:  # noqa: BLE001 - the database may be the fault
            return 0

    def status() -> JobStatus | None:
        try:
            statuses = _counts(settings)[0]
        except Exception:  # noqa: BLE001
            return None
        return statuses[0] if statuses else None

    began = time.monotonic()
    note = ""
    poster: JobPoster | None = None
    if name == KILL_GUNICORN:
        stack.start_web()
        wait(stack.web_up, 120)
        poster = JobPoster(stack, [f"survey{i}" for i in range(4)], interval=2.0)
        poster.start()
    else:
        with session_scope(settings.db_url) as session:
            create_job(session, settings, "survey0")
        with session_scope(settings.db_url) as session:
            job_id = session.scalar(select(ScanJob.id))
        assert job_id is not None
        enqueue(settings, SCAN_TASK, [job_id])
    fault_end = began
    if name in (REDIS_SCAN, REDIS_SCORING):
        phase = JobStatus.SCANNING if name == REDIS_SCAN else JobStatus.SCORING
        wait(lambda: status() == phase and (phase == JobStatus.SCANNING or scored() > 0), 120)
        broker.kill()
        time.sleep(outage)
        broker.start()  # on the same port, empty
        note = f"Redis killed for {outage:.0f} s and restarted empty during the {phase.value}"
        fault_end = time.monotonic()
    elif name == KILL_SCORER:
        wait(lambda: scored() > 0, 120)
        victim = children(stack.procs["worker-inference"].pid)[0]
        os.kill(victim, signal.SIGKILL)
        note = f"pool process {victim} killed mid-job"
        fault_end = time.monotonic()
    elif name == POSTGRES_RESTART:
        assert cluster is not None
        wait(lambda: scored() > 0, 120)
        at = scored()
        cluster.stop("immediate")  # like a crash: no shutdown checkpoint, recovery on start
        time.sleep(outage)
        cluster.start()
        note = (
            f"the drill's own cluster stopped (-m immediate) at {at} scored, "
            f"down {outage:.0f} s, restarted"
        )
        fault_end = time.monotonic()
    elif name == KILL_GUNICORN:
        assert poster is not None
        fault_end, note = _kill_gunicorn(stack, poster, scored)
    elif name == POISON:
        note = (
            f"a 94 MP RGBA PNG ({_mb(stack, 'poison.png')}, 376 MB decoded: inside every "
            f"decode limit) among the photos; hard memory ceiling {POISON_CEILING_MB} MB"
        )
    jobs_expected = 4 if name == KILL_GUNICORN else 1

    def all_done() -> bool:
        try:
            statuses = _counts(settings)[0]
        except Exception:  # noqa: BLE001
            return False
        if poster is not None and not poster.finished:
            return False
        return len(statuses) >= jobs_expected and all(s == JobStatus.DONE for s in statuses)

    done = wait(all_done, 900)
    finished = time.monotonic()
    alive = stack.alive()
    if poster is not None:
        poster.stop.set()
        (stack.log.parent / "client.log").write_text("\n".join(poster.events) + "\n")
        with session_scope(settings.db_url) as session:
            per_folder = session.execute(
                select(ScanJob.folder, func.count()).group_by(ScanJob.folder)
            ).all()
        twice = sorted(Path(f).name for f, n in per_folder if n > 1)
        note += (
            f"; {poster.refused} POSTs failed while it was down, each retried; "
            f"{sum(n for _, n in per_folder)} jobs for {len(per_folder)} folders"
        )
        if twice:
            note += f" ({', '.join(twice)} twice: a POST the client gave up on was served later)"
    _, total_scored, total_failed, failures, per_image = _counts(settings)
    stack.stop()
    log = stack.log.read_text(errors="replace")
    if "Unrecoverable error" in log:
        note += "; a worker logged an unrecoverable error"
    if name == POISON:
        kills = log.count("herpscore memory guard:")
        note += f"; the guard killed {kills} pool processes, each chunk with it was split"
    one_each = len(per_image) == photos and all(n == 1 for n in per_image)
    return Drill(
        name=name, photos=photos, scored=total_scored, failed=total_failed,
        one_prediction_each=one_each,
        recovery_seconds=round(finished - fault_end, 1) if done else None,
        total_seconds=round(finished - began, 1), workers_alive=alive, note=note,
        failures=failures,
    )  # fmt: skip


def _mb(stack: Stack, name: str) -> str:
    found = next(stack.settings.allowed_roots[0].rglob(name))
    return f"{found.stat().st_size / 1024:.0f} KB"


class JobPoster(threading.Thread):
    """A client creating one job per folder through the API (`POST /api/v1/jobs`), one
    every `interval` seconds, retrying a refused or broken request until it answers."""

    def __init__(self, stack: Stack, folders: list[str], interval: float) -> None:
        super().__init__(daemon=True)
        with session_scope(stack.settings.db_url) as session:
            _, self.key = apikeys.create_key(session, "drill", Role.REVIEWER)
        self.url = f"http://127.0.0.1:{stack.web_port}/api/v1/jobs"
        self.folders, self.interval = folders, interval
        self.created: list[int] = []
        self.refused = 0
        self.events: list[str] = []  # what the client saw, for the drill's log
        self.finished = False
        self.stop = threading.Event()

    def run(self) -> None:
        for folder in self.folders:
            while not self.stop.is_set():
                request = urllib.request.Request(
                    self.url, data=json.dumps({"folder": folder}).encode(), method="POST",
                    headers={"X-API-Key": self.key, "Content-Type": "application/json"},
                )  # fmt: skip
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        self.created.append(int(json.loads(response.read())["id"]))
                        self.events.append(f"{time.time():.1f} {folder}: {response.status}")
                        break
                except (OSError, urllib.error.URLError) as exc:
                    self.refused += 1
                    self.events.append(f"{time.time():.1f} {folder}: {exc}")
                    time.sleep(0.5)
            self.stop.wait(self.interval)
        self.finished = True


def _kill_gunicorn(stack: Stack, poster: JobPoster, scored: Callable[[], int]) -> tuple[float, str]:
    """kill -9 of the gunicorn master once the first job scores and the second exists;
    its workers must follow it, and a restart on the same port must serve again."""
    wait(lambda: scored() > 0 and len(poster.created) >= 2, 180)
    master = stack.procs["web"]
    workers = children(master.pid)
    os.kill(master.pid, signal.SIGKILL)
    master.wait()
    killed = time.monotonic()
    gone = wait(lambda: not any(is_alive(p) for p in workers), 60)
    workers_gone_s = round(time.monotonic() - killed, 1)
    for pid in workers:
        if is_alive(pid):
            os.kill(pid, signal.SIGKILL)
    stack.start_web()  # as compose's restart policy would
    wait(stack.web_up, 120)
    serving_s = round(time.monotonic() - killed, 1)
    note = (
        f"master killed with job {len(poster.created)} of 4 created and scoring; "
        f"its {len(workers)} workers "
        + (f"exited in {workers_gone_s} s" if gone else "outlived it by 60 s")
        + f"; restarted, serving again {serving_s} s after the kill"
    )
    return time.monotonic(), note


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
    gone = wait(lambda: not any(is_alive(p) for p in family), 60)
    orphans = [p for p in family if is_alive(p)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    return Drill(
        name=UP_KILL, photos=0, scored=0, failed=0, one_prediction_each=True,
        recovery_seconds=round(time.monotonic() - killed, 1) if gone else None,
        total_seconds=round(time.monotonic() - began, 1), workers_alive=False,
        note=f"{len(family)} child processes, {len(orphans)} outlived `up` by 60 s",
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--outage", type=float, default=20.0, help="seconds Redis is down")
    parser.add_argument("--pg-outage", type=float, default=10.0, help="seconds PostgreSQL is down")
    parser.add_argument("--only", nargs="*", help="drill names to run (default: all)")
    args = parser.parse_args()
    results = []
    for i, name in enumerate((*DRILLS, UP_KILL)):
        if args.only and name not in args.only:
            continue
        print(f"== {name}", file=sys.stderr, flush=True)
        if name == UP_KILL:
            results.append(drill_up_kill(WORK / "up"))
        else:
            outage = args.pg_outage if name == POSTGRES_RESTART else args.outage
            results.append(run_drill(name, args.photos, outage, WORK / f"drill-{i}"))
        print(results[-1], file=sys.stderr, flush=True)
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
        f"`benchmarks/crash_drill.py --photos {args.photos} --outage {args.outage:g} "
        f"--pg-outage {args.pg_outage:g}` on {meta['cpus']} shared cores (other work ran on "
        "the machine), one run each. Each drill: its own Redis, its own PostgreSQL database "
        "(the PostgreSQL drill: a cluster of its own), the compose services as processes "
        "(scan/maintenance worker, inference worker, beat; gunicorn for the web drill). "
        "Recovery: from the end of the fault to all work done (the remaining work "
        "included). Photos: valid photos; one prediction each: every one of them has "
        "exactly one prediction, and nothing else has one.",
        "",
        "| Drill | Photos | Scored | Failed | One prediction each | Recovery s | Total s "
        "| Workers alive | Note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        failed = f"{r.failed}" + (
            " (" + ", ".join(f"{n} {k}" for k, n in r.failures.items()) + ")" if r.failures else ""
        )
        lines.append(
            f"| {r.name} | {r.photos} | {r.scored} | {failed} | {r.one_prediction_each} "
            f"| {r.recovery_seconds} | {r.total_seconds} | {r.workers_alive} | {r.note} |"
        )
    (RESULTS / "crash_drill.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
