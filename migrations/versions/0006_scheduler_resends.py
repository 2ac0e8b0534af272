"""the scheduler re-sends every kind of queued or stalled work

scan_jobs.heartbeat_at (the scan's last sign of life) and scan_jobs.scan_attempts (which
run of the scan owns the job), and an enqueued_at on exports and training runs, so that
the scheduler re-sends a lost message once per lease instead of on every check.

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-06

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("scan_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("scan_attempts", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("dataset_exports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_runs", schema=None) as batch_op:
        batch_op.drop_column("enqueued_at")
    with op.batch_alter_table("dataset_exports", schema=None) as batch_op:
        batch_op.drop_column("enqueued_at")
    with op.batch_alter_table("scan_jobs", schema=None) as batch_op:
        batch_op.drop_column("scan_attempts")
        batch_op.drop_column("heartbeat_at")
