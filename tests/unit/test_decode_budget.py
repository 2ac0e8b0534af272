"""Big decodes in one process take turns; small ones run side by side."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from service import decode_memory, imaging
from service.decode_memory import DecodeBudget
from service.imaging import InputSpec, load_rgb


def _overlap(sizes: tuple[int, int], limit: int) -> bool:
    """Do two holders of these sizes ever hold at once?"""
    budget = DecodeBudget()
    inside = threading.Semaphore(0)
    both = threading.Event()
    active = [0]
    lock = threading.Lock()

    def decode(size: int) -> None:
        with budget.hold(size, limit):
            with lock:
                active[0] += 1
                if active[0] == 2:
                    both.set()
            inside.release()
            time.sleep(0.3)
            with lock:
                active[0] -= 1

    threads = [threading.Thread(target=decode, args=(size,)) for size in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert budget.in_flight == 0
    return both.is_set()


def test_two_big_decodes_take_turns() -> None:
    assert not _overlap((300, 200), limit=384)


def test_small_decodes_run_together() -> None:
    assert _overlap((100, 200), limit=384)


def test_a_decode_over_the_whole_budget_still_runs_alone() -> None:
    budget = DecodeBudget()
    with budget.hold(1000, limit=384):
        assert budget.in_flight == 1000
    assert budget.in_flight == 0


def test_a_failed_decode_gives_its_bytes_back(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    Image.new("RGB", (300, 200), (1, 2, 3)).save(path)
    path.write_bytes(path.read_bytes()[:-200])  # truncated pixel data
    with pytest.raises(imaging.ImageError) as caught:
        load_rgb(path, InputSpec(size=32), 10**9, 10**9)
    assert caught.value.reason == "corrupt"
    assert decode_memory.DECODES.in_flight == 0
