"""sessions that can be ended, key owners and unique key names, the audit log

users.session_version is part of every session's login id (bumped on logout, password
change and disable); api_keys.user_id ties a key to the person it acts for; api_keys.name
becomes unique (existing duplicates get " #<id>" appended); audit_log records admin actions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_action"), ["action"], unique=False)

    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_version", sa.Integer(), server_default="0", nullable=False)
        )

    # Names were not unique: keep the oldest key's name, suffix the others with their id.
    keys = sa.table("api_keys", sa.column("id", sa.Integer), sa.column("name", sa.String))
    conn = op.get_bind()
    seen: set[str] = set()
    for key_id, name in conn.execute(sa.select(keys.c.id, keys.c.name).order_by(keys.c.id)):
        if name in seen:
            conn.execute(
                keys.update().where(keys.c.id == key_id).values(name=f"{name[:190]} #{key_id}")
            )
        seen.add(name)
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_api_keys_user_id"), ["user_id"], unique=False)
        batch_op.create_unique_constraint(batch_op.f("uq_api_keys_name"), ["name"])
        batch_op.create_foreign_key(
            batch_op.f("fk_api_keys_user_id_users"),
            "users",
            ["user_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_api_keys_user_id_users"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("uq_api_keys_name"), type_="unique")
        batch_op.drop_index(batch_op.f("ix_api_keys_user_id"))
        batch_op.drop_column("user_id")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("session_version")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_log_action"))
    op.drop_table("audit_log")
