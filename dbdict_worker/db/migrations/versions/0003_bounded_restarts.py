"""Bounded restarts: jobs.not_before, jobs.restarts, jobs.max_restarts.

A job that returns INCOMPLETE without saving progress comes back after a growing delay
(``not_before``; NULL means ready now) and, after ``max_restarts`` such returns in a row, ends
ERR_RUN. Adding a nullable column, or one with a constant default, only changes the catalog on
PostgreSQL 11 and later: the table is not rewritten, however many jobs it holds.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = ("not_before", "restarts", "max_restarts")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("not_before", sa.DateTime(timezone=True)))
    op.add_column("jobs", sa.Column("restarts", sa.Integer, nullable=False,
                                    server_default="0"))
    op.add_column("jobs", sa.Column("max_restarts", sa.Integer, nullable=False,
                                    server_default="20"))


def downgrade() -> None:
    # SQLite drops a column by copying the table (batch mode); PostgreSQL drops it in place.
    with op.batch_alter_table("jobs") as batch:
        for column in reversed(_COLUMNS):
            batch.drop_column(column)
