"""Child processes tied to their parent, and the one-scheduler-per-schedule-file lock."""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """For `Popen(preexec_fn=...)`: the child gets SIGTERM (a warm shutdown for a Celery
    worker) when the process that started it dies, even by kill -9. Linux only; elsewhere
    the parent's own shutdown is all there is."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not fatal: the child merely outlives a killed parent, as before
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


class SchedulerRunning(Exception):
    """Another scheduler holds this schedule file's lock."""


def hold_scheduler_lock(lock_path: Path, wait: bool) -> int:
    """Take a scheduler lock for the life of this process; returns its fd.

    flock is released by the kernel when the holder dies (kill -9 included), so a stale
    lock cannot outlive its scheduler. With `wait`, block until the holder stops.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if not wait:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SchedulerRunning(f"a scheduler (pid {holder}) holds {lock_path}") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
