"""The job lifecycle: retries, time limits, provenance, log tails.

- ``jobs``: ``retries``, ``retried``, ``retry_on``, ``retry_delay`` (retries of failed
  attempts by failure class), ``timeout`` and ``stall_after`` (limits of one attempt),
  ``submission_id`` and ``run_info`` (provenance).
- ``submissions``: one row per enqueue: user, host, command line, the code's git version.
- ``job_logs``: the tail of each attempt's stdout and stderr.

Only nullable columns or columns with a constant default are added to ``jobs``: on
PostgreSQL 11 and later that changes the catalog only, however many jobs the table holds.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-15
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbdict_worker.db.schema import db_now

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)
Double = sa.Float(precision=53).with_variant(sa.Double(), "postgresql")

def _columns() -> list[sa.Column]:
    return [
        sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("retried", sa.Integer, nullable=False, server_default="0"),
        sa.Column("retry_on", sa.Text),
        sa.Column("retry_delay", Double),
        sa.Column("timeout", Double),
        sa.Column("stall_after", Double),
        sa.Column("submission_id", BigId),
        sa.Column("run_info", sa.Text),
    ]


def upgrade() -> None:
    for column in _columns():
        op.add_column("jobs", column)
    op.create_table(
        "submissions",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("created_at", Time, nullable=False, server_default=db_now()),
        sa.Column("user", sa.Text),
        sa.Column("host", sa.Text),
        sa.Column("command", sa.Text),
        sa.Column("cwd", sa.Text),
        sa.Column("git_repo", sa.Text),
        sa.Column("git_commit", sa.Text),
        sa.Column("git_dirty", sa.Boolean),
        sa.Column("git_diff_hash", sa.Text),
    )
    op.create_table(
        "job_logs",
        sa.Column("job_id", BigId, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("stream", sa.Text, primary_key=True),
        sa.Column("tail", sa.Text, nullable=False, server_default=""),
        sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("updated_at", Time, nullable=False, server_default=db_now()),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Each running job's tails are rewritten every few heartbeats: leave room in each
        # page for HOT updates, and vacuum often.
        op.execute("ALTER TABLE job_logs SET (fillfactor = 70, "
                   "autovacuum_vacuum_scale_factor = 0.02)")


def downgrade() -> None:
    op.drop_table("job_logs")
    op.drop_table("submissions")
    with op.batch_alter_table("jobs") as batch:
        for column in reversed(_columns()):
            batch.drop_column(column.name)
