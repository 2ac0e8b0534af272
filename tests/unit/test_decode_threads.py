"""How many decode threads a scoring process runs (workers.tasks.decode_threads)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from service.settings import Settings
from workers.engine import CPU, CUDA, InferenceEngine
from workers.pipeline import DECODE_THREADS
from workers.tasks import decode_threads


def _engine(*providers: str) -> InferenceEngine:
    return cast(InferenceEngine, SimpleNamespace(providers=list(providers)))


@pytest.fixture
def four_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workers.tasks.os.cpu_count", lambda: 4)


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(data_dir=tmp_path, **values)


@pytest.mark.usefixtures("four_cores")
@pytest.mark.parametrize(
    ("concurrency", "providers", "expected"),
    [
        (0, (CPU,), 0),  # a process per core, on the CPU: decode in turn with inference
        (4, (CPU,), 0),
        (6, (CPU,), 0),
        (2, (CPU,), DECODE_THREADS),  # fewer processes than cores: threads use the rest
        (0, (CUDA, CPU), DECODE_THREADS),  # a GPU: threads keep it fed
        (4, (CUDA, CPU), DECODE_THREADS),
    ],
)
def test_default_follows_device_and_processes(
    tmp_path: Path, concurrency: int, providers: tuple[str, ...], expected: int
) -> None:
    settings = _settings(tmp_path, worker_concurrency=concurrency)
    assert decode_threads(settings, _engine(*providers)) == expected


@pytest.mark.usefixtures("four_cores")
@pytest.mark.parametrize("asked", [0, 1, 3])
def test_the_setting_wins(tmp_path: Path, asked: int) -> None:
    settings = _settings(tmp_path, decode_threads=asked)
    assert decode_threads(settings, _engine(CPU)) == asked
    assert decode_threads(settings, _engine(CUDA, CPU)) == asked


def test_the_setting_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERPSCORE_DECODE_THREADS", "0")
    assert _settings(tmp_path).decode_threads == 0
    monkeypatch.setenv("HERPSCORE_DECODE_THREADS", "-1")
    with pytest.raises(ValueError, match="decode_threads"):
        _settings(tmp_path)
