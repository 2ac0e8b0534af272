"""scale: job images know their folder; indexes for the claim, the queue counts and pages

The review page's neighbour photos filtered every image of a job through substr(); each
job image now stores its folder, indexed with its path. The claim sorted every pending
item: partial indexes over pending items hold the claim's order (overall and per job), and
the few items under a lease have their own. A job's results pages walk an index in path
order. Review items' job index becomes (job_id, status), which serves per-job counts, and
a reviewer's annotations are indexed by time (undo, recent decisions, the 24-hour count).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")
LEASED = sa.text("status = 'pending' AND claimed_by IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("job_images", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("folder", sa.String(length=4096), server_default="", nullable=False)
        )
    # posixpath.dirname in SQL (both databases): rtrim drops every trailing character that
    # is not a "/", leaving the path up to its last "/", which is then cut off.
    op.execute(
        "UPDATE job_images SET folder = CASE "
        "WHEN rtrim(rel_path, replace(rel_path, '/', '')) = '' THEN '' "
        "ELSE substr(rtrim(rel_path, replace(rel_path, '/', '')), 1, "
        "length(rtrim(rel_path, replace(rel_path, '/', ''))) - 1) END"
    )
    with op.batch_alter_table("job_images", schema=None) as batch_op:
        batch_op.create_index("ix_job_images_job_path", ["job_id", "rel_path", "id"])
        batch_op.create_index("ix_job_images_job_folder", ["job_id", "folder", "rel_path"])
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_index("ix_review_items_job_id")
        batch_op.create_index("ix_review_items_job_status", ["job_id", "status"])
        batch_op.create_index(
            "ix_review_items_claim_order",
            [sa.desc(sa.column("priority")), "id"],
            sqlite_where=PENDING,
            postgresql_where=PENDING,
        )
        batch_op.create_index(
            "ix_review_items_job_claim_order",
            ["job_id", sa.desc(sa.column("priority")), "id"],
            sqlite_where=PENDING,
            postgresql_where=PENDING,
        )
        batch_op.create_index(
            "ix_review_items_leased",
            ["job_id", "lease_expires_at"],
            sqlite_where=LEASED,
            postgresql_where=LEASED,
        )
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.create_index("ix_annotations_reviewer_created", ["reviewer", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("annotations", schema=None) as batch_op:
        batch_op.drop_index("ix_annotations_reviewer_created")
    with op.batch_alter_table("review_items", schema=None) as batch_op:
        batch_op.drop_index("ix_review_items_leased")
        batch_op.drop_index("ix_review_items_job_claim_order")
        batch_op.drop_index("ix_review_items_claim_order")
        batch_op.drop_index("ix_review_items_job_status")
        batch_op.create_index("ix_review_items_job_id", ["job_id"])
    with op.batch_alter_table("job_images", schema=None) as batch_op:
        batch_op.drop_index("ix_job_images_job_folder")
        batch_op.drop_index("ix_job_images_job_path")
        batch_op.drop_column("folder")
