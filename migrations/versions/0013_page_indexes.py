"""page indexes: label-filtered and deep pages of a big job's results

At 1M stored predictions, a 600k-image job's results filtered by a label walked the job in
path order and probed each row's prediction (2 s when the label's photos sort late), and a
page at `offset=480000` fetched 480k heap rows. Predictions get an index on (model version,
label, image) that the filtered page starts from; it replaces the model-version index (its
first column). The job's path index carries the image id, so the walk is index-only.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_predictions_version_label", ["model_version_id", "label", "image_id"]
        )
        batch_op.drop_index("ix_predictions_model_version_id")
    with op.batch_alter_table("job_images", schema=None) as batch_op:
        batch_op.drop_index("ix_job_images_job_path")
        batch_op.create_index("ix_job_images_job_path", ["job_id", "rel_path", "id", "image_id"])


def downgrade() -> None:
    with op.batch_alter_table("job_images", schema=None) as batch_op:
        batch_op.drop_index("ix_job_images_job_path")
        batch_op.create_index("ix_job_images_job_path", ["job_id", "rel_path", "id"])
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index("ix_predictions_model_version_id", ["model_version_id"])
        batch_op.drop_index("ix_predictions_version_label")
