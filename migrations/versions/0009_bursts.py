"""bursts: a perceptual hash per image, and annotations made together by one burst decision

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("phash", sa.String(length=16), nullable=True))
    with op.batch_alter_table("annotations") as batch:
        batch.add_column(sa.Column("burst_lead_id", sa.Integer(), nullable=True))
        batch.create_index("ix_annotations_burst_lead_id", ["burst_lead_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("annotations") as batch:
        batch.drop_index("ix_annotations_burst_lead_id")
        batch.drop_column("burst_lead_id")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("phash")
