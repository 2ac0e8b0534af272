"""A hard memory ceiling for a pool process, enforced while its task runs.

Celery's `worker_max_memory_per_child` replaces a process only after its task ends, so a
decode that runs away (a codec using more than `max_decoded_megabytes` predicts) would run
until the kernel's OOM killer picks a victim, perhaps PostgreSQL. This guard watches the
process's own resident size from a thread and kills the process (SIGKILL) the moment it
passes the ceiling: the broker redelivers the chunk, the chunk is split on the next claim,
and the file that did it ends up alone and fails as `killed_worker` (service/scoring.py).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_STATM = "/proc/self/statm"


def resident_bytes() -> int | None:
    """This process's resident set size (Linux); None where /proc is missing."""
    try:
        with open(_STATM, "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


_ARMED = threading.Event()  # set while a scoring task runs in this process


@contextmanager
def armed() -> Iterator[None]:
    """The ceiling applies inside this block (a chunk's scoring), not to other tasks a
    worker of every queue may run, such as a training run that needs more."""
    _ARMED.set()
    try:
        yield
    finally:
        _ARMED.clear()


def _watch(limit: int, interval: float) -> None:
    while True:
        # Between tasks the thread sleeps on the event: an idle worker never wakes for it.
        _ARMED.wait()
        rss = resident_bytes()
        if rss is None:
            return  # not Linux: nothing to watch
        if rss > limit and _ARMED.is_set():
            # Straight to stderr: the logging machinery may itself need memory or a lock.
            sys.stderr.write(
                f"herpscore memory guard: pool process {os.getpid()} reached "
                f"{rss / 2**20:.0f} MB, over the hard ceiling of {limit / 2**20:.0f} MB "
                "(HERPSCORE_WORKER_KILL_MEMORY_MEGABYTES): killed\n"
            )
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(interval)


def start(limit_megabytes: int, interval: float = 0.02) -> threading.Thread | None:
    """Watch this process (call it in each pool process after the fork) while `armed`;
    0 = no ceiling."""
    if limit_megabytes <= 0 or resident_bytes() is None:
        return None
    thread = threading.Thread(
        target=_watch,
        args=(limit_megabytes * 2**20, interval),
        name="herpscore-memory-guard",
        daemon=True,
    )
    thread.start()
    log.info("memory guard: this process is killed past %d MB resident", limit_megabytes)
    return thread
