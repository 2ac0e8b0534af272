"""`herpscore up` under kill -9: its workers and scheduler die with it; one scheduler per
data dir."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.processes import SchedulerRunning, hold_scheduler_lock
from tests.support.models import make_model_folder


def alive(pid: int) -> bool:
    """Running, not a zombie (a container's PID 1 may never reap an orphan)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = (int(v) for v in line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_up_takes_its_workers_and_scheduler_with_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERPSCORE_")}
    env.update(HERPSCORE_DATA_DIR=str(tmp_path / "data"))
    cli = [sys.executable, "-m", "service.cli"]
    subprocess.run([*cli, "init"], env=env, check=True, capture_output=True)
    model = make_model_folder(tmp_path / "model", labels=["red", "green"])
    subprocess.run([*cli, "models", "add", str(model), "--activate"], env=env, check=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "up.log"
    with log.open("w") as err:
        up = subprocess.Popen(
            [*cli, "up", "--port", str(port)], env=env, stderr=err, stdout=subprocess.DEVNULL
        )
    family: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not re.search("worker pids", log.read_text()):
            time.sleep(0.2)
        # The workers' pools and the scheduler (a child of the light worker) are up once
        # the scheduler holds its lock.
        lock = tmp_path / "data" / "celerybeat-schedule.lock"
        while time.monotonic() < deadline:
            try:
                os.close(hold_scheduler_lock(lock, wait=False))
            except SchedulerRunning:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the scheduler never started:\n" + log.read_text()[-3000:])
        family = descendants(up.pid)
        assert len(family) >= 4, family  # two workers, their pools, the scheduler
        up.kill()
        up.wait()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and any(alive(pid) for pid in family):
            time.sleep(0.2)
        assert not [pid for pid in family if alive(pid)], "orphans outlived `herpscore up`"
        # The scheduler's lock went with it: a restart can run its own.
        os.close(hold_scheduler_lock(lock, wait=False))
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in family:  # only the processes this test started
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_only_one_scheduler_holds_a_data_dir(tmp_path: Path) -> None:
    lock = tmp_path / "data" / "celerybeat-schedule.lock"
    first = hold_scheduler_lock(lock, wait=False)
    with pytest.raises(SchedulerRunning, match=f"pid {os.getpid()}"):
        hold_scheduler_lock(lock, wait=False)
    os.close(first)  # as the kernel does when the holder dies, kill -9 included
    os.close(hold_scheduler_lock(lock, wait=False))
