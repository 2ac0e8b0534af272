"""Starting and stopping real worker processes, each in a process group of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from service.embedded import settings_env
from service.settings import Settings


def start_worker(
    settings: Settings, log: Path, queues: str, beat: Path | None = None
) -> subprocess.Popen[bytes]:
    """A real Celery worker of `queues` (two pool processes) with these settings; with
    `beat` (a schedule file), the scheduler rides with it."""
    env = dict(os.environ)
    env.update(settings_env(settings))
    cmd = [
        sys.executable, "-m", "celery", "--quiet", "-A", "workers", "worker", "-Q", queues,
        "--hostname", f"{queues.split(',')[0]}@%h", "--concurrency", "2",
        "--loglevel", "INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    if beat is not None:
        cmd += ["--beat", "--schedule", str(beat)]
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (a warm shutdown), SIGKILL it after a minute."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
