"""suspect labels: verified labels a training run's out-of-sample predictions question

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.models import UTCDateTime

# revision identifiers, used by Alembic.
revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "suspect_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("annotation_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("given_label", sa.String(length=200), nullable=False),
        sa.Column("given_probability", sa.Float(), nullable=False),
        sa.Column("predicted_label", sa.String(length=200), nullable=False),
        sa.Column("predicted_probability", sa.Float(), nullable=False),
        sa.Column("split", sa.String(length=10), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["training_runs.id"],
            name=op.f("fk_suspect_labels_run_id_training_runs"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"],
            name=op.f("fk_suspect_labels_image_id_images"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["annotation_id"], ["annotations.id"],
            name=op.f("fk_suspect_labels_annotation_id_annotations"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suspect_labels")),
        sa.UniqueConstraint("run_id", "image_id", name=op.f("uq_suspect_labels_run_id_image_id")),
    )  # fmt: skip
    op.create_index("ix_suspect_labels_run_rank", "suspect_labels", ["run_id", "rank"])
    op.create_index("ix_suspect_labels_image_id", "suspect_labels", ["image_id"])
    op.create_index("ix_suspect_labels_annotation_id", "suspect_labels", ["annotation_id"])


def downgrade() -> None:
    op.drop_table("suspect_labels")
