"""Search on the queue: intermediate metrics, searches, pruning.

- ``metrics``: what ``channel.report(step, **metrics)`` sends, one row per job, attempt,
  step and key (the worker writes them in batches).
- ``searches``: one row per ``dbdict search``: its experiment, space, objective, sampler,
  pruner and budget. Its trials are ordinary jobs, with ``jobs.search_id`` and
  ``jobs.trial`` (the trial's number in the search).
- ``jobs.prune_requested``: a search's pruner asked this job to stop early; its worker tells
  the experiment (``channel.switch()`` returns ``'prune'``) and the job ends PRUNED.

Only nullable columns or columns with a constant default are added to ``jobs`` (catalog-only
on PostgreSQL 11 and later).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-17
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from dbdict_worker.db.schema import db_now

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)
Double = sa.Float(precision=53).with_variant(sa.Double(), "postgresql")
ByteText = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("search_id", BigId))
    op.add_column("jobs", sa.Column("trial", sa.Integer))
    op.add_column("jobs", sa.Column("prune_requested", sa.Boolean, nullable=False,
                                    server_default=sa.false()))
    op.create_index("jobs_search", "jobs", ["search_id", "trial"],
                    postgresql_where=sa.text("search_id IS NOT NULL"),
                    sqlite_where=sa.text("search_id IS NOT NULL"))
    op.create_table(
        "metrics",
        sa.Column("job_id", BigId, primary_key=True),
        sa.Column("attempt", sa.Integer, primary_key=True),
        sa.Column("step", sa.BigInteger, primary_key=True),
        sa.Column("key", ByteText, primary_key=True),
        sa.Column("value", Double),
        sa.Column("at", Time, nullable=False, server_default=db_now()),
    )
    op.create_table(
        "searches",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("table_id", sa.Integer, nullable=False),
        sa.Column("experiment", sa.Text, nullable=False),
        sa.Column("space", sa.Text, nullable=False),
        sa.Column("objective", sa.Text, nullable=False),
        sa.Column("direction", sa.Text, nullable=False),
        sa.Column("sampler", sa.Text, nullable=False),
        sa.Column("pruner", sa.Text, nullable=False, server_default="none"),
        sa.Column("budget", sa.Integer, nullable=False),
        sa.Column("max_pending", sa.Integer, nullable=False),
        sa.Column("seed", sa.BigInteger),
        sa.Column("options", sa.Text),
        sa.Column("created_at", Time, nullable=False, server_default=db_now()),
        sa.Column("finished_at", Time),
    )


def downgrade() -> None:
    op.drop_table("searches")
    op.drop_table("metrics")
    op.drop_index("jobs_search", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("prune_requested")
        batch.drop_column("trial")
        batch.drop_column("search_id")
