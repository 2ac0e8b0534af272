"""The embedded stack's Celery workers, run as child processes of a command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from service.processes import die_with_parent
from service.settings import Settings

# The embedded stack's Celery workers: (name, queues, processes; 0 = one per core).
# Scoring gets every core to itself; scanning (walking, hashing, EXIF), exports, training
# and maintenance run in a second, mostly idle worker, so a scan never holds a slot that
# would be scoring (benchmarks/results/scoring.md, "worker layout").
WorkerPools = tuple[tuple[str, tuple[str, ...], int], ...]
EMBEDDED_WORKERS: WorkerPools = (
    ("inference", ("inference",), 0),
    ("tasks", ("scan", "maintenance", "export", "training"), 2),
)


@contextmanager
def embedded_worker(
    settings: Settings, beat: bool = False, pools: WorkerPools = EMBEDDED_WORKERS
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run Celery workers (by default EMBEDDED_WORKERS) as child processes for a block."""
    settings.ensure_dirs()
    env = dict(os.environ)
    env.update(settings_env(settings))
    # A personal, single-user stack commonly runs as whoever is logged in, root included.
    env.setdefault("PYTHONWARNINGS", "ignore:You're running the worker with superuser")
    procs: list[subprocess.Popen[bytes]] = []
    # SIGTERM (`kill`, `timeout`, a service manager) must stop the workers too: by default
    # it ends this process without running the `finally` below, orphaning them.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for name, queues, processes in pools:
            processes = processes or settings.worker_processes
            cmd = [
                sys.executable, "-m", "celery", "--quiet", "-A", "workers", "worker",
                "-Q", ",".join(queues), "--hostname", f"{name}@%h",
                "--concurrency", str(processes), "--loglevel", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ]  # fmt: skip
            if beat and name == pools[-1][0]:  # the scheduler rides with the light worker
                cmd += ["--beat", "--schedule", str(settings.data_path / "celerybeat-schedule")]
            # The workers' own output ("worker: Warm shutdown", warnings) goes to stderr (fd 2):
            # stdout belongs to the command, and `score --json` prints one JSON object there.
            # die_with_parent: a kill -9 of this process must not orphan the workers; their
            # output goes to stderr, so stdout holds only the command's result.
            # The worker's processes learn how many they are (workers.tasks.decode_threads).
            pool_env = {**env, "HERPSCORE_WORKER_CONCURRENCY": str(processes)}
            procs.append(
                subprocess.Popen(
                    cmd, env=pool_env, start_new_session=True, stdout=2, preexec_fn=die_with_parent
                )
            )
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()  # warm shutdown: the worker stops its own pool
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def settings_env(settings: Settings) -> dict[str, str]:
    """The HERPSCORE_* variables that give a child process these same settings."""
    env = {}
    for name, value in settings.model_dump(exclude_defaults=False).items():
        if value is None:
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        env[f"HERPSCORE_{name.upper()}"] = str(value)
    return env
