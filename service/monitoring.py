"""Prometheus metrics and readiness checks: worker counters, scrape-time gauges from the
database and the broker, and the /metrics exposition (multiprocess-aware).

Counters and the batch histogram live in the processes that do the work (Celery's prefork
children): with PROMETHEUS_MULTIPROC_DIR set, each writes its own file there and the web
process adds them up at scrape time. Totals that the database already knows (jobs,
backlog, decisions, training runs) are read from it at scrape time, so every web process
answers the same numbers. See docs/observability.md.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from service.db import read_scope
from service.models import Annotation, ScanJob, TrainingRun
from service.review.counters import queue_counts
from service.settings import Settings
from service.tasks_client import QUEUES, celery_client

log = logging.getLogger(__name__)

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Files are named by process id; containers sharing the folder reuse pids, so the host
    # name goes in too. Set before the metrics below are created.
    import prometheus_client.values

    prometheus_client.values.ValueClass = prometheus_client.values.MultiProcessValue(
        lambda: f"{socket.gethostname()}-{os.getpid()}"
    )

IMAGES_SCORED = Counter("herpscore_images_scored", "Images the workers scored.")
IMAGES_FAILED = Counter(
    "herpscore_images_failed", "Images the workers could not score, by reason.", ["reason"]
)
BATCH_SECONDS = Histogram(
    "herpscore_batch_seconds",
    "Wall time of one inference batch (ONNX Runtime run).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BROKER_TIMEOUT_SECONDS = 2.0


def count_outcomes(reasons: list[str | None]) -> None:
    """Count a chunk's results: None is a scored image, a string a failure's reason."""
    failed = [r for r in reasons if r is not None]
    IMAGES_SCORED.inc(len(reasons) - len(failed))
    for reason in failed:
        IMAGES_FAILED.labels(reason=reason).inc()


class DatabaseCollector(Collector):
    """Gauges read at scrape time: jobs by status, review backlog, decisions, training runs,
    and the broker's queue depths."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("herpscore_jobs", "Scan jobs by status.", labels=["status"])
        backlog = GaugeMetricFamily("herpscore_review_backlog", "Review items pending.")
        decisions = GaugeMetricFamily(
            "herpscore_decisions", "Live review decisions by kind.", labels=["decision"]
        )
        runs = GaugeMetricFamily(
            "herpscore_training_runs", "Training runs by status.", labels=["status"]
        )
        with read_scope(self.settings.db_url) as session:
            for status, n in session.execute(
                select(ScanJob.status, func.count()).group_by(ScanJob.status)
            ):
                jobs.add_metric([str(status)], n)
            backlog.add_metric([], queue_counts(session)[0])  # a stored counter
            for decision, n in session.execute(
                select(Annotation.decision, func.count())
                .where(Annotation.undone_at.is_(None))
                .group_by(Annotation.decision)
            ):
                decisions.add_metric([str(decision)], n)
            for run_status, n in session.execute(
                select(TrainingRun.status, func.count()).group_by(TrainingRun.status)
            ):
                runs.add_metric([str(run_status)], n)
        yield from (jobs, backlog, decisions, runs)
        depth = GaugeMetricFamily(
            "herpscore_queue_depth", "Messages waiting in each broker queue.", labels=["queue"]
        )
        for queue, n in queue_depths(self.settings).items():
            depth.add_metric([queue], n)
        yield depth


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting per queue (a queue nobody declared yet counts as empty)."""
    depths: dict[str, int] = {}
    app = celery_client(settings)
    with app.connection_for_read(connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
        channel = conn.default_channel
        for queue in QUEUES:
            try:
                depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except Exception:  # noqa: BLE001 - kombu's "no such queue" differs per transport
                depths[queue] = 0
    return depths


def render_metrics(settings: Settings) -> tuple[bytes, str]:
    """The Prometheus text exposition: worker metrics (all processes) plus scrape gauges."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:  # one process: this process's own counters
        for collector in (IMAGES_SCORED, IMAGES_FAILED, BATCH_SECONDS):
            registry.register(collector)
    registry.register(DatabaseCollector(settings))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def check_database(settings: Settings) -> str | None:
    """None if the database answers a query, else why not."""
    try:
        with read_scope(settings.db_url) as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return type(exc).__name__
    return None


def check_broker(settings: Settings) -> str | None:
    """None if the broker accepts a connection, else why not."""
    try:
        app = celery_client(settings)
        with app.connection_for_read(connect_timeout=BROKER_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        return type(exc).__name__
    return None
