"""review counters: pending and done review items per job, kept by triggers; capture index

The queue counts (review stats, the review page, the dashboard's backlog, /metrics) counted
review items by status on every request: 100k pending and 100k done items at a million
stored predictions took 30 ms a count. `review_counters` holds the two numbers per job
(job_id 0: items whose job was deleted or that never had one), and triggers on
review_items keep them in the same transaction as the write that moved an item: routing's
inserts, decisions, undo, bulk confirm, and cascading deletes (PostgreSQL and SQLite both
fire triggers for foreign-key actions). An update that changes neither status nor job
(claims, leases, skips) does not touch them.

Concurrent writers on PostgreSQL serialise on a job's counter row from their item update
to their commit (row lock; READ COMMITTED re-reads the committed value), so the numbers
stay exact; SQLite serialises writers anyway.

A burst's candidates (service/bursts.py) were read through the job's site index, every
photo of the site (12,000 rows for a 600k-image job of 50 sites); images are now indexed
by camera-local capture time, so the lookup reads the photos taken around that moment.

Note for later migrations: on SQLite, `batch_alter_table("review_items")` copies the table
and drops its triggers; such a migration must create them again (tests compare the
counters with a recount at head on both databases).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TRIGGERS = ("review_counters_insert", "review_counters_update", "review_counters_delete")

# PostgreSQL: statement-level triggers over the statement's transition tables, one upsert
# of each job's net change per statement. (A row-level trigger updates a job's counter row
# once per item: a statement that moves 100k items then makes 100k versions of that row
# in one transaction, each update walking the chain of the ones before, quadratic.) Rows
# are upserted in job order, so two statements that move items of several jobs lock the
# counter rows in the same order; an update that moves nothing (a claim, a lease, a skip)
# writes nothing.
PG_FUNCTION = """
CREATE FUNCTION review_counters_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO review_counters (job_id, pending, done)
        SELECT coalesce(job_id, 0), count(*) FILTER (WHERE status = 'pending'),
               count(*) FILTER (WHERE status = 'done')
        FROM new_rows GROUP BY 1 ORDER BY 1
        ON CONFLICT (job_id) DO UPDATE
        SET pending = review_counters.pending + excluded.pending,
            done = review_counters.done + excluded.done;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE review_counters c
        SET pending = c.pending - gone.pending, done = c.done - gone.done
        FROM (SELECT coalesce(job_id, 0) AS job_id,
                     count(*) FILTER (WHERE status = 'pending') AS pending,
                     count(*) FILTER (WHERE status = 'done') AS done
              FROM old_rows GROUP BY 1) gone
        WHERE c.job_id = gone.job_id;
    ELSE
        INSERT INTO review_counters (job_id, pending, done)
        SELECT job_id, sum(pending), sum(done)
        FROM (SELECT coalesce(job_id, 0) AS job_id, (status = 'pending')::int AS pending,
                     (status = 'done')::int AS done
              FROM new_rows
              UNION ALL
              SELECT coalesce(job_id, 0), -(status = 'pending')::int, -(status = 'done')::int
              FROM old_rows) moves
        GROUP BY job_id HAVING sum(pending) <> 0 OR sum(done) <> 0 ORDER BY job_id
        ON CONFLICT (job_id) DO UPDATE
        SET pending = review_counters.pending + excluded.pending,
            done = review_counters.done + excluded.done;
    END IF;
    RETURN NULL;
END
$$
"""
PG_TRIGGERS = (
    "CREATE TRIGGER review_counters_insert AFTER INSERT ON review_items "
    "REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION review_counters_track()",
    "CREATE TRIGGER review_counters_update AFTER UPDATE ON review_items "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION review_counters_track()",
    "CREATE TRIGGER review_counters_delete AFTER DELETE ON review_items "
    "REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION review_counters_track()",
)

# SQLite: row-level triggers (it has no others; it updates a row in place, so many updates
# of one counter row in a transaction stay cheap). The row is made with INSERT ... WHERE
# NOT EXISTS, not INSERT OR IGNORE (an outer statement's conflict clause would override a
# trigger's). Updates that change neither status nor job do not fire.
_SQLITE_ADD = """
    INSERT INTO review_counters (job_id, pending, done)
    SELECT coalesce(NEW.job_id, 0), 0, 0
    WHERE NOT EXISTS (SELECT 1 FROM review_counters WHERE job_id = coalesce(NEW.job_id, 0));
    UPDATE review_counters
    SET pending = pending + (NEW.status = 'pending'), done = done + (NEW.status = 'done')
    WHERE job_id = coalesce(NEW.job_id, 0);
"""
_SQLITE_REMOVE = """
    UPDATE review_counters
    SET pending = pending - (OLD.status = 'pending'), done = done - (OLD.status = 'done')
    WHERE job_id = coalesce(OLD.job_id, 0);
"""
SQLITE_TRIGGERS = (
    f"CREATE TRIGGER review_counters_insert AFTER INSERT ON review_items BEGIN {_SQLITE_ADD} END",
    f"CREATE TRIGGER review_counters_update AFTER UPDATE OF status, job_id ON review_items "
    f"WHEN OLD.status IS NOT NEW.status OR OLD.job_id IS NOT NEW.job_id "
    f"BEGIN {_SQLITE_REMOVE} {_SQLITE_ADD} END",
    f"CREATE TRIGGER review_counters_delete AFTER DELETE ON review_items "
    f"BEGIN {_SQLITE_REMOVE} END",
)

BACKFILL = (
    "INSERT INTO review_counters (job_id, pending, done) "
    "SELECT coalesce(job_id, 0), "
    "sum(CASE WHEN status = 'pending' THEN 1 ELSE 0 END), "
    "sum(CASE WHEN status = 'done' THEN 1 ELSE 0 END) "
    "FROM review_items GROUP BY coalesce(job_id, 0)"
)


def upgrade() -> None:
    op.create_table(
        "review_counters",
        sa.Column("job_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("pending", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("done", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_review_counters")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # No item may move between the count and the triggers taking over.
        op.execute("LOCK TABLE review_items IN SHARE ROW EXCLUSIVE MODE")
        op.execute(PG_FUNCTION)
        for statement in PG_TRIGGERS:
            op.execute(statement)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)
    op.execute(BACKFILL)
    with op.batch_alter_table("images") as batch:
        batch.create_index("ix_images_captured_local", ["captured_local"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_index("ix_images_captured_local")
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON review_items" if postgresql else ""))
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS review_counters_track()")
    op.drop_table("review_counters")
