"""The hard memory ceiling kills its own process mid-work, and only past the ceiling."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from service.settings import Settings
from service.tasks_client import celery_config
from workers import memory_guard
from workers.memory_guard import resident_bytes

GROW = """
import contextlib, sys, time
from workers import memory_guard
assert memory_guard.start(int(sys.argv[1])) is not None
held = []
with memory_guard.armed() if sys.argv[3] == "armed" else contextlib.nullcontext():
    for _ in range(int(sys.argv[2])):
        held.append(bytearray(16 * 2**20))  # zero-filled: resident at once
        time.sleep(0.01)
    time.sleep(0.2)  # a few of the guard's looks
print("survived", flush=True)
"""

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/statm").exists(), reason="reads Linux's /proc/self/statm"
)


def _grow(
    limit_mb: int, chunks_of_16mb: int, armed: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", GROW, str(limit_mb), str(chunks_of_16mb),
         "armed" if armed else "idle"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_process_past_its_hard_ceiling_is_killed_mid_work() -> None:
    done = _grow(200, 40)  # 640 MB wanted, 200 allowed
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert "survived" not in done.stdout
    assert "over the hard ceiling of 200 MB" in done.stderr


def test_a_process_under_its_ceiling_runs_on() -> None:
    done = _grow(400, 8)  # 128 MB over a ~30 MB interpreter
    assert done.returncode == 0, done.stderr
    assert "survived" in done.stdout


def test_the_ceiling_applies_only_while_a_chunk_scores() -> None:
    done = _grow(200, 20, armed=False)  # 320 MB outside a scoring task: a training run
    assert done.returncode == 0, done.stderr
    assert "survived" in done.stdout


def test_resident_bytes_reads_this_process() -> None:
    rss = resident_bytes()
    assert rss is not None and 10 * 2**20 < rss < 8 * 2**30


@pytest.mark.parametrize(("megabytes", "kilobytes"), [(1536, 1536 * 1024), (0, None)])
def test_pool_processes_past_the_soft_ceiling_are_replaced_after_their_task(
    make_settings: Callable[..., Settings], megabytes: int, kilobytes: int | None
) -> None:
    settings = make_settings("sqlite://", worker_max_memory_megabytes=megabytes)
    # Celery counts this ceiling in kilobytes; None leaves pool processes running forever.
    assert celery_config(settings)["worker_max_memory_per_child"] == kilobytes


def test_the_guard_looks_only_while_a_task_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle worker's guard sleeps: no look at /proc between tasks, 50 a second during one."""
    looks: list[float] = []

    def counted() -> int:
        looks.append(time.monotonic())
        return 1

    monkeypatch.setattr(memory_guard, "resident_bytes", counted)
    # A ceiling no process reaches: the thread outlives the test, in this process.
    assert memory_guard.start(10**9) is not None
    time.sleep(0.3)
    idle = len(looks)
    with memory_guard.armed():
        time.sleep(0.3)
    armed = len(looks) - idle
    time.sleep(0.3)
    after = len(looks) - idle - armed
    assert idle <= 1 and after <= 1  # start()'s own check, then the look in flight at disarm
    assert armed >= 3
