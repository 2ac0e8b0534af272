"""Running a job's scan and scoring in the test process, without a broker or a worker."""

from __future__ import annotations

from service.scanning import run_scan
from service.scoring import Scorer, score_chunk
from service.settings import Settings


def scan_and_score(settings: Settings, job_id: int, model: Scorer | None = None) -> None:
    """Scan the job, then score each chunk it queued, as a worker would, in order
    (with the worker's ONNX runner unless a test gives its own)."""
    from workers.tasks import run_model

    chunks: list[int] = []
    run_scan(settings, job_id, chunks.extend)
    for chunk_id in chunks:
        score_chunk(settings, chunk_id, model or run_model)
