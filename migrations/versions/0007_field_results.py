"""field results: final labels, capture time with offset, sites, species, venom routing

Images keep the camera-local capture time (captured_local), its UTC offset when the file
gave one and the raw EXIF text; captured_at becomes the UTC instant, known only with an
offset. Existing captured_at values were camera-local times mislabelled UTC: they move to
captured_local and captured_at is cleared. Job images get their site (the first folder
level, as the default setting); sites and species are new tables; predictions keep a
genus rollup and review items every routing reason and a venom-risk flag.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06

"""

from collections.abc import Sequence
from pathlib import PurePath

import sqlalchemy as sa
from alembic import op

from service.models import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("utc_offset_minutes", sa.Integer(), nullable=True),
        sa.Column("clock_correction_seconds", sa.Integer(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sites")),
        sa.UniqueConstraint("name", name=op.f("uq_sites_name")),
    )
    op.create_table(
        "species",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("scientific_name", sa.String(length=200), nullable=False),
        sa.Column("genus", sa.String(length=100), nullable=False),
        sa.Column("family", sa.String(length=100), nullable=False),
        sa.Column("common_name", sa.String(length=200), nullable=False),
        sa.Column("medically_significant", sa.Boolean(), nullable=False),
        sa.Column("lookalike_group", sa.String(length=100), nullable=True),
        sa.Column("review_threshold", sa.Float(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_species")),
        sa.UniqueConstraint("label", name=op.f("uq_species_label")),
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("captured_local", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("captured_offset_minutes", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("exif_datetime_raw", sa.String(length=64), nullable=True))
    with op.batch_alter_table("job_images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("site", sa.String(length=200), nullable=True))
        batch_op.create_index("ix_job_images_job_site", ["job_id", "site"], unique=False)
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rolled_up_label", sa.String(length=200), nullable=True))
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reasons", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("venom_risk", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    _move_capture_times()
    _fill_sites()


def _move_capture_times() -> None:
    """captured_at held camera-local times labelled UTC: keep them as local, unlabelled."""
    bind = op.get_bind()
    images = sa.table(
        "images",
        sa.column("id", sa.Integer()),
        sa.column("captured_at", UTCDateTime()),
        sa.column("captured_local", sa.DateTime()),
    )
    rows = bind.execute(
        sa.select(images.c.id, images.c.captured_at).where(images.c.captured_at.is_not(None))
    ).all()
    for start in range(0, len(rows), BATCH):
        bind.execute(
            images.update()
            .where(images.c.id == sa.bindparam("b_id"))
            .values(captured_local=sa.bindparam("b_local"), captured_at=None),
            [
                {"b_id": image_id, "b_local": at.replace(tzinfo=None)}
                for image_id, at in rows[start : start + BATCH]
            ],
        )


def _fill_sites() -> None:
    """Each job image's site: its first folder, else the job folder's own name."""
    bind = op.get_bind()
    job_images = sa.table(
        "job_images",
        sa.column("id", sa.Integer()),
        sa.column("job_id", sa.Integer()),
        sa.column("rel_path", sa.String()),
        sa.column("site", sa.String()),
    )
    jobs = sa.table("scan_jobs", sa.column("id", sa.Integer()), sa.column("folder", sa.String()))
    rows = bind.execute(
        sa.select(job_images.c.id, job_images.c.rel_path, jobs.c.folder).join(
            jobs, jobs.c.id == job_images.c.job_id
        )
    ).all()
    for start in range(0, len(rows), BATCH):
        updates = []
        for ji_id, rel_path, folder in rows[start : start + BATCH]:
            parts = PurePath(rel_path).parts
            site = parts[0] if len(parts) > 1 else PurePath(folder).name
            updates.append({"b_id": ji_id, "b_site": site[:200]})
        bind.execute(
            job_images.update()
            .where(job_images.c.id == sa.bindparam("b_id"))
            .values(site=sa.bindparam("b_site")),
            updates,
        )


def downgrade() -> None:
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_column("venom_risk")
        batch_op.drop_column("reasons")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_column("rolled_up_label")
    with op.batch_alter_table("job_images", schema=None) as batch_op:
        batch_op.drop_index("ix_job_images_job_site")
        batch_op.drop_column("site")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("exif_datetime_raw")
        batch_op.drop_column("captured_offset_minutes")
        batch_op.drop_column("captured_local")
    op.drop_table("species")
    op.drop_table("sites")
