"""What the scheduler re-sends: every kind of queued or stalled work whose message was lost.

A message can be lost between a committed row and the broker (the broker was down when a
view or a task sent it; Redis restarted without its data; kill -9 between BRPOP and the
unacked record). Every task is idempotent, so the scheduler re-sends from the database:

- after a *lease* (`chunk_lease_seconds`) of silence: queued chunks, queued and stalled
  scanning jobs (the scan's heartbeat is older than the lease), queued exports and queued
  training runs, each once per lease (its clock restarts when it is sent);
- at once, everything queued (but a scan that is still scanning), when the broker was
  *reset* (see `service.broker_watch`): that is how recovery from a broker outage takes
  seconds instead of a lease.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select, update
from sqlalchemy.orm import Session

from service.models import (
    Chunk,
    ChunkStatus,
    DatasetExport,
    ExportStatus,
    JobStatus,
    RunStatus,
    ScanJob,
    TrainingRun,
    utcnow,
)
from service.settings import Settings


@dataclass
class Resend:
    """Ids to send again, by task."""

    chunks: list[int] = field(default_factory=list)
    scans: list[int] = field(default_factory=list)
    exports: list[int] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "chunks": len(self.chunks),
            "scans": len(self.scans),
            "exports": len(self.exports),
            "runs": len(self.runs),
        }


def requeue_stalled(session: Session, settings: Settings, broker_reset: bool = False) -> Resend:
    """Work to send again: silent for a lease, or everything queued after a broker reset.

    Sent items' clocks restart, so they are not re-sent on every check. The caller commits,
    then sends. Duplicates are harmless: every task checks the state it is about to change.
    """
    now = utcnow()
    lease_cutoff = stale_before(settings, now)
    cutoff = now + timedelta(seconds=1) if broker_reset else lease_cutoff

    def older(column: Any) -> ColumnElement[bool]:
        return column < cutoff

    def restamp(query: Select[Any], model: Any, clock: str) -> list[int]:
        """The ids the query finds, in order, with their send clock restarted."""
        ids = list(session.scalars(query.order_by(model.id)))
        if ids:
            session.execute(update(model).where(model.id.in_(ids)).values({clock: now}))
        return ids

    resend = Resend()
    resend.chunks = restamp(
        select(Chunk.id)
        .join(ScanJob, ScanJob.id == Chunk.job_id)
        .where(
            Chunk.status == ChunkStatus.QUEUED,
            older(Chunk.enqueued_at),
            ScanJob.status.in_([JobStatus.SCANNING, JobStatus.SCORING]),
        ),
        Chunk,
        "enqueued_at",
    )
    # A scan's heartbeat is written when it is sent and by every batch it records; a scan
    # that is silent past the lease died (a broker or database error outlasted its
    # retries): sent again, it resumes and supersedes the stalled one (see run_scan). Not
    # sooner, even after a broker reset: a live scan rides out an outage by itself, and a
    # superseding one would hash every file again to find where the first one was.
    last_sign = func.coalesce(ScanJob.heartbeat_at, ScanJob.started_at, ScanJob.created_at)
    resend.scans = restamp(
        select(ScanJob.id).where(
            or_(
                and_(ScanJob.status == JobStatus.QUEUED, older(last_sign)),
                and_(ScanJob.status == JobStatus.SCANNING, last_sign < lease_cutoff),
            )
        ),
        ScanJob,
        "heartbeat_at",
    )
    # A training run's export is built by the run's own task, never sent on its own.
    run_exports = select(TrainingRun.export_id).where(TrainingRun.export_id.is_not(None))
    resend.exports = restamp(
        select(DatasetExport.id).where(
            DatasetExport.status == ExportStatus.QUEUED,
            older(func.coalesce(DatasetExport.enqueued_at, DatasetExport.created_at)),
            DatasetExport.id.not_in(run_exports),
        ),
        DatasetExport,
        "enqueued_at",
    )
    resend.runs = restamp(
        select(TrainingRun.id).where(
            TrainingRun.status == RunStatus.QUEUED,
            older(func.coalesce(TrainingRun.enqueued_at, TrainingRun.created_at)),
        ),
        TrainingRun,
        "enqueued_at",
    )
    return resend


def stale_before(settings: Settings, now: datetime) -> datetime:
    """Work last sent (or last alive) before this is taken as lost."""
    return now - timedelta(seconds=settings.chunk_lease_seconds)
