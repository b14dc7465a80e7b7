"""Pages of jobs sorted by any parameter or result, fast on a million jobs.

- ``state_sort``: the state in the order a page sorted by a key shows it (numbers by value,
  then text, then job id), so the first page reads about a page of index entries instead of
  sorting every job.
- PostgreSQL only: statistics on ``(key, value, type)`` together. Without them the planner
  multiplies the frequency of a key by the frequency of a value over all keys, guesses a
  ``--where model=cnn`` that picks 100,000 jobs picks 22, and reads every match before
  sorting instead of walking ``state_sort`` (measured: 860 ms against 3 ms for a page).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-16
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("state_sort", "state",
                    ["key", "num", sa.text("substr(txt, 1, 200)"), "job_id"])
    bind = op.get_bind()
    # Statistics on expressions came with PostgreSQL 14.
    if bind.dialect.name == "postgresql" and bind.dialect.server_version_info >= (14,):
        op.execute("CREATE STATISTICS IF NOT EXISTS state_key_value (mcv) "
                   "ON key, (substr(txt, 1, 200)), vtype FROM state")
        op.execute("ANALYZE state")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP STATISTICS IF EXISTS state_key_value")
    op.drop_index("state_sort", "state")
