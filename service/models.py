"""SQLAlchemy 2.0 typed models: the database schema of herpscore."""

from __future__ import annotations

import enum
import posixpath
from datetime import UTC, datetime
from typing import Annotated, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    column,
    desc,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


intpk = Annotated[int, mapped_column(Integer, primary_key=True)]
created = Annotated[datetime, mapped_column(UTCDateTime, default=utcnow, nullable=False)]
when = Annotated[datetime | None, mapped_column(UTCDateTime, nullable=True)]
label_str = Annotated[str, mapped_column(String(200), nullable=False)]


def str_enum(enum_cls: type[enum.Enum]) -> Enum:
    """Store enums as their string values (portable, readable, easy to migrate)."""
    return Enum(
        enum_cls,
        native_enum=False,
        length=20,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    SCANNING = "scanning"
    SCORING = "scoring"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ChunkStatus(enum.StrEnum):
    QUEUED = "queued"
    DONE = "done"
    CANCELLED = "cancelled"


class JobImageStatus(enum.StrEnum):
    PENDING = "pending"
    SCORED = "scored"
    FAILED = "failed"


class ModelStatus(enum.StrEnum):
    CANDIDATE = "candidate"
    ACTIVE = "active"
    RETIRED = "retired"


class ReviewStatus(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"


class Role(enum.StrEnum):
    ADMIN = "admin"
    REVIEWER = "reviewer"
    VIEWER = "viewer"

    def allows(self, needed: Role) -> bool:
        """admin > reviewer > viewer: a role may do what every lower role may."""
        order = [Role.VIEWER, Role.REVIEWER, Role.ADMIN]
        return order.index(self) >= order.index(needed)


class ModelVersion(Base):
    """One immutable model folder in the registry; promotion only moves `status`."""

    __tablename__ = "model_versions"
    __table_args__ = (
        # At most one active version, enforced by the database on both backends.
        Index(
            "uq_model_versions_one_active",
            "status",
            unique=True,
            sqlite_where=text("status = 'active'"),
            postgresql_where=text("status = 'active'"),
        ),
    )

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    path: Mapped[str] = mapped_column(String(1024), nullable=False, unique=True)
    status: Mapped[ModelStatus] = mapped_column(
        str_enum(ModelStatus), default=ModelStatus.CANDIDATE, nullable=False
    )
    num_classes: Mapped[int] = mapped_column(Integer, nullable=False)
    class_map: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata_json", JSON, nullable=False)
    files_sha256: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    source: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    created_at: Mapped[created]
    activated_at: Mapped[when]

    @property
    def labels(self) -> list[str]:
        return [self.class_map[str(i)] for i in range(self.num_classes)]


class ScanJob(Base):
    """A request to score every image under a folder with one pinned model version."""

    __tablename__ = "scan_jobs"

    id: Mapped[intpk]
    folder: Mapped[str] = mapped_column(String(4096), nullable=False)
    recursive: Mapped[bool] = mapped_column(default=True, nullable=False)
    extensions: Mapped[list[Any]] = mapped_column(JSON, nullable=False)
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    threshold: Mapped[float] = mapped_column(Float, nullable=False)
    status: Mapped[JobStatus] = mapped_column(
        str_enum(JobStatus), default=JobStatus.QUEUED, nullable=False, index=True
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    scored: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    failed: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    routed: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    scan_complete: Mapped[bool] = mapped_column(default=False, nullable=False)
    # The scheduler's view of the scan: when it was last sent or made progress, and which
    # run of it owns the job (a re-sent scan supersedes a stalled one; see run_scan).
    heartbeat_at: Mapped[when]
    scan_attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    created_by: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    created_at: Mapped[created]
    started_at: Mapped[when]
    scoring_started_at: Mapped[when]
    finished_at: Mapped[when]

    model_version: Mapped[ModelVersion] = relationship(lazy="joined")


class IdempotencyKey(Base):
    """A client's `Idempotency-Key` for creating a job: a retry with the same key and body
    gets the job the first request made (service/idempotency.py); kept for a day."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("principal", "key"),)

    id: Mapped[intpk]
    principal: Mapped[str] = mapped_column(String(200), nullable=False)
    key: Mapped[str] = mapped_column(String(255), nullable=False)
    # sha256 of the request's parsed body: the same key with another body is refused.
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    # Set in the transaction that reserved the key; a deleted job frees its key.
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("scan_jobs.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, nullable=False, index=True
    )


class Chunk(Base):
    """A slice of a job's images, scored by one `score_chunk` task."""

    __tablename__ = "chunks"
    __table_args__ = (UniqueConstraint("job_id", "seq"),)

    id: Mapped[intpk]
    # No index of its own: the unique (job_id, seq) index serves lookups by job.
    job_id: Mapped[int] = mapped_column(
        ForeignKey("scan_jobs.id", ondelete="CASCADE"), nullable=False
    )
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[ChunkStatus] = mapped_column(
        str_enum(ChunkStatus), default=ChunkStatus.QUEUED, nullable=False
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    enqueued_at: Mapped[when]
    finished_at: Mapped[when]


class Image(Base):
    """A photo: one row per (resolved path, content); a file whose bytes change is a new row."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("path", "sha256"),
        # A burst's candidates: the photos taken around one moment, not a job site's all.
        Index("ix_images_captured_local", "captured_local"),
    )

    id: Mapped[intpk]
    # Looked up by the unique (path, sha256) index, whose first column it is.
    path: Mapped[str] = mapped_column(String(4096), nullable=False)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mtime: Mapped[float | None] = mapped_column(Float, nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    format: Mapped[str | None] = mapped_column(String(20), nullable=True)
    # The UTC instant, only when the file gave an offset; camera-local time is captured_local.
    captured_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    captured_local: Mapped[datetime | None] = mapped_column(DateTime(timezone=False), nullable=True)
    captured_offset_minutes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exif_datetime_raw: Mapped[str | None] = mapped_column(String(64), nullable=True)
    gps_lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    gps_lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    phash: Mapped[str | None] = mapped_column(String(16), nullable=True)  # see service/bursts.py
    created_at: Mapped[created]
    updated_at: Mapped[when]


def folder_of(rel_path: str) -> str:
    """The folder part of a job image's path ("" at the job's folder itself)."""
    return posixpath.dirname(rel_path)


def _folder_default(context: Any) -> str:
    return folder_of(context.get_current_parameters()["rel_path"])


class JobImage(Base):
    """An image as one job saw it: its place in the folder, its chunk, its outcome."""

    __tablename__ = "job_images"
    __table_args__ = (
        UniqueConstraint("job_id", "image_id"),
        Index("ix_job_images_job_status", "job_id", "status"),
        Index("ix_job_images_job_site", "job_id", "site"),
        # A page of results in path order, and the keyset cursor after a row; image_id makes
        # the walk index-only, so a deep `offset` skips index entries, not heap rows.
        Index("ix_job_images_job_path", "job_id", "rel_path", "id", "image_id"),
        # The review page's neighbour photos: the same folder, in path order.
        Index("ix_job_images_job_folder", "job_id", "folder", "rel_path"),
    )

    id: Mapped[intpk]
    job_id: Mapped[int] = mapped_column(
        ForeignKey("scan_jobs.id", ondelete="CASCADE"), nullable=False
    )
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), nullable=False, index=True
    )
    chunk_id: Mapped[int | None] = mapped_column(
        ForeignKey("chunks.id", ondelete="SET NULL"), nullable=True, index=True
    )
    rel_path: Mapped[str] = mapped_column(String(4096), nullable=False)
    folder: Mapped[str] = mapped_column(
        String(4096), nullable=False, default=_folder_default, server_default=""
    )
    site: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[JobImageStatus] = mapped_column(
        str_enum(JobImageStatus), default=JobImageStatus.PENDING, nullable=False
    )
    failure_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    failure_detail: Mapped[str | None] = mapped_column(Text, nullable=True)

    image: Mapped[Image] = relationship(lazy="joined")


class Prediction(Base):
    """What one model version said about one image: upserted on (image, model version)."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("image_id", "model_version_id"),
        # A job's results filtered by label start from that label's predictions (index-only)
        # rather than walk the job in path order looking for them; it also serves lookups
        # by model version (its first column), which had an index of their own.
        Index("ix_predictions_version_label", "model_version_id", "label", "image_id"),
    )

    id: Mapped[intpk]
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), nullable=False
    )
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="RESTRICT"), nullable=False
    )
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("scan_jobs.id", ondelete="SET NULL"), nullable=True, index=True
    )
    label: Mapped[label_str] = mapped_column(index=True)
    label_index: Mapped[int] = mapped_column(Integer, nullable=False)
    confidence: Mapped[float] = mapped_column(Float, nullable=False)
    topk: Mapped[list[Any]] = mapped_column(JSON, nullable=False)  # [[label, p], ...] best first
    # The genus when no species reached its threshold but the genus's summed top-k did.
    rolled_up_label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[created]


PENDING_ONLY = text("status = 'pending'")


class ReviewItem(Base):
    """A prediction that a human should look at, and why."""

    __tablename__ = "review_items"
    __table_args__ = (
        # The claim's order over pending items only: the next item is the index's first.
        Index(
            "ix_review_items_claim_order",
            desc(column("priority")),
            "id",
            sqlite_where=PENDING_ONLY,
            postgresql_where=PENDING_ONLY,
        ),
        Index(
            "ix_review_items_job_claim_order",
            "job_id",
            desc(column("priority")),
            "id",
            sqlite_where=PENDING_ONLY,
            postgresql_where=PENDING_ONLY,
        ),
        # Items under a lease (few): the "claimed" count without reading the pending ones.
        Index(
            "ix_review_items_leased",
            "job_id",
            "lease_expires_at",
            sqlite_where=text("status = 'pending' AND claimed_by IS NOT NULL"),
            postgresql_where=text("status = 'pending' AND claimed_by IS NOT NULL"),
        ),
        # Per-job counts by status from the index alone.
        Index("ix_review_items_job_status", "job_id", "status"),
    )

    id: Mapped[intpk]
    prediction_id: Mapped[int] = mapped_column(
        ForeignKey("predictions.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # Indexed by (job_id, status) above.
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("scan_jobs.id", ondelete="SET NULL"), nullable=True
    )
    reason: Mapped[str] = mapped_column(String(200), nullable=False)
    reasons: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    venom_risk: Mapped[bool] = mapped_column(default=False, server_default=false(), nullable=False)
    status: Mapped[ReviewStatus] = mapped_column(
        str_enum(ReviewStatus), default=ReviewStatus.PENDING, nullable=False, index=True
    )
    priority: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    claimed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[when]
    created_at: Mapped[created]
    decided_at: Mapped[when]


class ReviewCounter(Base):
    """How many review items of one job are pending and done (job_id 0: items of no job).

    Kept by database triggers on review_items (migration 0010), so every write that moves
    an item (routing, decisions, undo, bulk confirm, cascading deletes) updates it in its
    own transaction; the queue counts read a row instead of counting items.
    """

    __tablename__ = "review_counters"

    job_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    pending: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    done: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")


class ApiKey(Base):
    """An API key: only its sha256 is stored; the prefix finds the row."""

    __tablename__ = "api_keys"

    id: Mapped[intpk]
    name: Mapped[str] = mapped_column(String(200), nullable=False, unique=True)
    prefix: Mapped[str] = mapped_column(String(16), nullable=False, unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    role: Mapped[Role] = mapped_column(str_enum(Role), nullable=False)
    # The person the key acts for, if any: disabling that user stops the key at once.
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_at: Mapped[created]
    last_used_at: Mapped[when]
    revoked_at: Mapped[when]


# ---------------------------------------------------------------- review, export, retraining


class Decision(enum.StrEnum):
    """What a reviewer said about an image."""

    LABEL = "label"  # a species label (confirmed or corrected)
    UNKNOWN = "unknown"  # a usable photo whose species the reviewer cannot tell
    UNUSABLE = "unusable"  # not a usable photo (blur, no animal, ...)
    SKIP = "skip"  # looked at, no decision; the item goes back to the queue


class User(Base):
    """A person who logs into the admin UI; only a password hash is stored."""

    __tablename__ = "users"

    id: Mapped[intpk]
    username: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(String(300), nullable=False)
    role: Mapped[Role] = mapped_column(str_enum(Role), nullable=False)
    disabled: Mapped[bool] = mapped_column(default=False, nullable=False)
    # Part of every session's login id: bumping it (logout, new password, disable) ends
    # every session this user has, copied cookies included.
    session_version: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", nullable=False
    )
    created_at: Mapped[created]
    last_login_at: Mapped[when]


class Annotation(Base):
    """One human decision about an image, with what the machine had said; never updated.

    An image's current human label is its latest annotation that was not undone.
    """

    __tablename__ = "annotations"
    __table_args__ = (
        Index("ix_annotations_image_created", "image_id", "created_at"),
        # A reviewer's own decisions, newest first: undo, recent, the 24-hour count.
        Index("ix_annotations_reviewer_created", "reviewer", "created_at"),
    )

    id: Mapped[intpk]
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), nullable=False
    )
    review_item_id: Mapped[int | None] = mapped_column(
        ForeignKey("review_items.id", ondelete="SET NULL"), nullable=True, index=True
    )
    reviewer: Mapped[str] = mapped_column(String(200), nullable=False)
    decision: Mapped[Decision] = mapped_column(str_enum(Decision), nullable=False)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    machine_label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    machine_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[created]
    undone_at: Mapped[when]
    burst_lead_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


class ModelActivation(Base):
    """Every move of the active pointer, so a rollback knows where to go back to."""

    __tablename__ = "model_activations"

    id: Mapped[intpk]
    model_version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), nullable=False, index=True
    )
    previous_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL"), nullable=True
    )
    reason: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    actor: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    created_at: Mapped[created]


class AuditEntry(Base):
    """One admin action (activation, rollback, promotion, user or key change) and its actor.

    `actor` is a principal (a username, `key:<id>`, `cli` or `system`); never updated.
    """

    __tablename__ = "audit_log"

    id: Mapped[intpk]
    actor: Mapped[str] = mapped_column(String(200), nullable=False)
    action: Mapped[str] = mapped_column(String(50), nullable=False, index=True)
    target: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[created]


# Field knowledge (sites, species) and exports and training runs live in modules of their
# own; imported so Base knows their tables (and old imports from here keep working).
import service.field_models  # noqa: E402, F401  # a module import: safe inside the cycle
from service.run_models import DatasetExport as DatasetExport  # noqa: E402
from service.run_models import ExportStatus as ExportStatus  # noqa: E402
from service.run_models import RunStatus as RunStatus  # noqa: E402
from service.run_models import SuspectLabel as SuspectLabel  # noqa: E402
from service.run_models import TrainingRun as TrainingRun  # noqa: E402
